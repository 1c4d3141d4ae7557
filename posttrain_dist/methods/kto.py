"""KTO (Kahneman-Tversky optimization): learn from answers marked good or bad, one at a time.

The feedback users actually collect is a thumb up or down on one answer, not a pair. KTO reads that
(prompt, completion, label) and pushes the desirable answers up and the undesirable ones down against a
frozen reference, each judged against a batch-level KL baseline. Preference pairs are read too: each
becomes two rows (chosen: desirable, rejected: undesirable; trl's `unpair_preference_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import trl

from .. import formats
from ..config import RecipeArgs, RunDefaults
from ..errors import ConfigError, DataError
from .base import Method, count_rows
from .dpo import drop_identical_pairs


def _label_problem(value, column: str) -> str | None:
    if isinstance(value, bool) or value in (0, 1):
        return None
    return f"`{column}` must be true (a desirable answer) or false (an undesirable one); got {value!r:.60}"


UNPAIRED = formats.Layout(
    "unpaired", ("prompt", "completion", "label"), "trl-lib/kto-mix-14k, thumbs up/down feedback",
    "strings -> user/assistant turns; `label` true marks a desirable answer, false an undesirable one",
    formats._check_columns(("prompt", formats._text_or_conversation_problem),
                           ("completion", formats._text_or_conversation_problem), ("label", _label_problem)),
    lambda b: {"prompt": [formats.as_turn(p, formats.user) for p in b["prompt"]],
               "completion": [formats.as_turn(c, formats.assistant) for c in b["completion"]],
               "label": [bool(x) for x in b["label"]]})


def after_convert(dataset, source: str):
    """Pairs become two unpaired rows; either way both kinds of answer must be there (KTO weighs one against the
    other's KL baseline)."""
    if "chosen" in dataset.column_names:
        dataset = trl.data_utils.unpair_preference_dataset(drop_identical_pairs(dataset, source))
    kinds = set(dataset["label"])
    if len(kinds) < 2:
        only = "desirable" if True in kinds else "undesirable"
        raise DataError(f"{source}: every answer is marked {only}; KTO learns from both kinds (some rows with label "
                        "true, some with false).")
    return dataset


@dataclass
class KTORecipeArgs(RecipeArgs):
    """posttrain-dist's fields."""


@dataclass
class KTOArgs(RunDefaults, trl.KTOConfig):
    """trl's KTOConfig (all of it)."""

    def __post_init__(self):
        super().__post_init__()
        if self.per_device_train_batch_size < 2 and self.loss_type != "apo_zero_unpaired":
            raise ConfigError("KTO estimates its KL baseline from the other answers of a batch: "
                              "`per_device_train_batch_size` must be at least 2.")


PANELS = [
    ("loss", "KTO loss", [("loss", "train"), ("eval_loss", "eval")]),
    ("implicit rewards", "beta * log-ratio to the reference", [("rewards/chosen", "desirable"),
                                                                ("rewards/rejected", "undesirable")]),
    ("reward margin", "desirable - undesirable", [("rewards/margins", "margin")]),
    ("KL baseline", "batch KL to the reference", [("kl", "kl")]),
    ("learning rate", "lr", [("learning_rate", "lr")]),
]


def plan_rows(args) -> tuple:
    return count_rows(args, METHOD, "answers after mixing, splitting, conversion and unpairing")


def tokens(args) -> tuple[int, str]:
    rows, length = args.training.per_device_train_batch_size, args.training.max_length or 1024
    return 2 * rows * length, f"{rows} answers and their KL pairing x {length} tokens"


def reference(args) -> bool:
    return not args.model.use_peft and not getattr(args.training, "precompute_ref_log_probs", False)


METHOD = Method(
    "kto", "Kahneman-Tversky optimization: learn from answers marked good or bad", KTORecipeArgs, KTOArgs,
    layouts=[UNPAIRED, *formats.PREFERENCE], after_convert=after_convert, panels=PANELS, unit="answers",
    plan_rows=plan_rows, tokens=tokens, reference=reference)
