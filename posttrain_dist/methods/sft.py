"""Supervised fine-tuning: imitate prompt/response pairs, the loss on the responses only.

Its config (trl's SFTConfig, and the identity evaluation for identity changes made by SFT), the layouts it
reads (conversations and their single-turn forms, or plain text), its curves, and what `plan` counts: the
rows of an epoch and, tokenized as the recipe tokenizes them (`sequences`), the tokens of an epoch and what
preparing them costs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import trl

from .. import formats, identity
from ..config import RecipeArgs, RunDefaults
from ..errors import DataError
from .base import Method, on_the_hub


@dataclass
class SFTRecipeArgs(identity.IdentityArgs, RecipeArgs):
    """posttrain-dist's fields, and the identity an SFT run may change (context distillation)."""


@dataclass
class SFTArgs(RunDefaults, trl.SFTConfig):
    """trl's SFTConfig (all of it)."""


PANELS = [
    ("loss", "cross-entropy on response tokens", [("loss", "train"), ("eval_loss", "eval")]),
    ("learning rate", "lr", [("learning_rate", "lr")]),
    ("token accuracy", "share of response tokens predicted", [("mean_token_accuracy", "train"),
                                                              ("eval_mean_token_accuracy", "eval")]),
    ("gradient norm", "norm before clipping", [("grad_norm", "grad norm")]),
]

SAMPLE = 2000  # rows `plan` tokenizes to count the tokens of an epoch and time the preparation


def plan_rows(args) -> tuple:
    """Rows of an epoch (every row checked, as the recipe does), and the tokens: all of them up to SAMPLE rows,
    else a sample's mean times the rows, with the preparation's cost measured on it."""
    from .. import data, modeling, sequences

    hub = on_the_hub(args)
    if hub:
        return hub
    train, _ = data.load_for(METHOD, args.recipe, seed=args.training.seed)
    try:
        tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    except (OSError, ValueError):
        return len(train), "rows after mixing, splitting and conversion", ["  tokens per epoch: ? (the tokenizer is "
                                                                          "not here)"]
    sample = train.select(range(min(SAMPLE, len(train))))
    label = args.recipe.dataset_name or "the mixture"
    start = time.perf_counter()
    try:
        tokenized = sequences.tokenize(sample, tokenizer, args.training, args.recipe.multi_turn,
                                       label if len(sample) == len(train) else f"{label} (the first {len(sample)} rows)")
    except DataError:
        if len(sample) == len(train):
            raise  # every row read: the run would stop here too
        return len(train), "rows after mixing, splitting and conversion", [
            f"  tokens per epoch: ? (none of the first {len(sample)} rows has a trained token within max_length)"]
    seconds = time.perf_counter() - start
    scale = len(train) / len(sample)
    tokens = sum(len(ids) for ids in tokenized["input_ids"]) * scale
    trained = sum(sum(x != -100 for x in labels) for labels in tokenized["labels"]) * scale
    measured = "all rows" if scale == 1 else f"measured on {len(sample)} of {len(train)} rows"
    lines = [f"  tokens per epoch: {tokens:,.0f} ({trained:,.0f} in the loss; {measured})",
             f"  data preparation: about {seconds * scale:.0f} s on one process ({len(sample) / max(seconds, 1e-9):,.0f} "
             "rows/s here; `dataset_num_proc` divides it), once: later ranks and attempts read it from output_dir/prepared"]
    return len(train), "rows after mixing, splitting and conversion", lines


def tokens(args) -> tuple[int, str]:
    t, rows = args.training, args.training.per_device_train_batch_size
    length = t.max_length or 1024
    return rows * length, f"{rows} rows x {length} tokens" + (" (packed)" if t.packing else " (at most)")


METHOD = Method(
    "sft", "supervised fine-tuning: imitate prompt/response pairs", SFTRecipeArgs, SFTArgs,
    layouts=formats.CONVERSATION, panels=PANELS, plan_rows=plan_rows, tokens=tokens,
    checks=(identity.check,), evaluators=identity.EVALUATORS)
