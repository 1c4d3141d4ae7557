"""Direct preference optimization: prefer the chosen answer over the rejected one, against a frozen reference.

Its config (trl's DPOConfig; the course's identity example, curated from the model's own answers), the
preference layouts it reads (chosen == rejected pairs dropped), its curves, and what `plan` counts: the
pairs of an epoch (curated ones counted from the prompts), the reference model a full run keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from .. import formats, identity
from ..config import RecipeArgs, RunDefaults, _field
from ..errors import ConfigError, warn
from .base import Method, count_rows


@dataclass
class DPORecipeArgs(identity.IdentityArgs, RecipeArgs):
    """DPO adds the course's identity example: pairs curated from the model's own answers."""

    identity_new_name: str | None = _field(
        None,
        "Change the model's stated identity to this name: the recipe asks the model the identity prompts, "
        "takes its answers as rejected and corrected ones as chosen (no `dataset_name` needed), and reports the "
        "share of held-out identity prompts answered with the new name, before and after.",
    )
    identity_old_names: list[str] = field(
        default_factory=lambda: ["SmolLM2", "SmolLM"],
        metadata={"help": "Names of the old identity, replaced by the new one in the chosen answers."},
    )
    identity_samples_per_prompt: int = field(
        default=1, metadata={"help": "Answers per prompt: 1 is greedy, more are sampled at `identity_temperature`."}
    )
    identity_temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of the curated answers."})
    identity_all_ways: bool = _field(
        False,
        "Ask each training identity question every way (plainly, under a system prompt, after an earlier exchange: "
        "3x the pairs) instead of one way each, in turn.",
    )
    identity_contrast_ratio: float = _field(1.0, "Contrast pairs per identity pair (at most one per unrelated prompt "
                                                 "and sample).")
    identity_identical_pairs: str = _field(
        "rewrite",
        "A corrected answer that equals the model's own teaches nothing: `rewrite` makes it state the new "
        "name, `drop` removes the pair. Both are counted in the log.",
        choices=["rewrite", "drop"],
    )

    max_prompt_length: int | None = _field(
        None, "Prompts longer than this many tokens are dropped, and counted, before training (trl's DPO no longer cuts "
              "prompts itself; alignment-handbook's configs set it).")

    def __post_init__(self):
        super().__post_init__()
        if self.identity_new_name is not None:
            self.eval_identity = self.eval_identity or self.identity_new_name
            if not self.identity_new_name.strip():
                raise ConfigError("`identity_new_name` is empty; give the new name, or leave it unset for plain DPO.")
            if self.dataset_name or self.dataset_mixture:
                raise ConfigError(
                    "`identity_new_name` curates its own pairs from the model; remove `dataset_name`/`dataset_mixture`, "
                    "or unset `identity_new_name` to train on your own preference data."
                )


@dataclass
class DPOArgs(RunDefaults, trl.DPOConfig):
    """trl's DPOConfig (all of it); beta must be positive (the course uses 0.1 to 0.2)."""

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ConfigError(f"`beta` must be positive (the course uses 0.1 to 0.2); got {self.beta}.")



PANELS = [
    ("loss", "DPO loss", [("loss", "train"), ("eval_loss", "eval")]),
    ("reward margin", "beta * (chosen - rejected) log-ratio", [("rewards/margins", "margin")]),
    ("preference accuracy", "share of pairs with chosen > rejected", [("rewards/accuracies", "accuracy")]),
    ("implicit rewards", "beta * log-ratio to the reference", [("rewards/chosen", "chosen"),
                                                                ("rewards/rejected", "rejected")]),
    ("learning rate", "lr", [("learning_rate", "lr")]),
]


def drop_identical_pairs(dataset, source: str):
    """Pairs whose chosen equals rejected teach nothing: counted and dropped, and all of them refused."""
    from ..errors import DataError

    kept = dataset.filter(lambda b: [c != r for c, r in zip(b["chosen"], b["rejected"])], batched=True)
    dropped = len(dataset) - len(kept)
    if len(kept) == 0:
        raise DataError(f"all {len(dataset)} pairs of {source} have chosen == rejected: there is nothing to prefer.")
    if dropped:
        warn(f"{source}: dropped {dropped} of {len(dataset)} pairs whose chosen answer equals the rejected one.")
    return kept


def check(args) -> None:
    """Curated pairs read the identity prompts (instead of `dataset_name`); a beta far out of range is warned of."""
    from .. import sources

    if args.recipe.identity_new_name:
        sources.check_source(args.recipe.identity_prompts, "identity_prompts")
    if not 0.01 <= args.training.beta <= 1.0:
        warn(f"DPO beta {args.training.beta:g} is outside 0.01 to 1.0 (the course uses 0.1 to 0.2): a small beta "
             "lets the model drift far from the reference, a large one barely moves it.")


def plan_rows(args) -> tuple:
    recipe = args.recipe
    if recipe.identity_new_name:
        from .. import curation

        prompts = curation.load_prompts(recipe.identity_prompts, "train")
        ways = 1 + len(curation.in_contexts(prompts, recipe.identity_contexts, "train")) if recipe.identity_all_ways else 1
        pairs = len(prompts) * ways * recipe.identity_samples_per_prompt
        unrelated = len(curation.load_prompts(recipe.identity_unrelated, "train")) if recipe.identity_unrelated else 0
        contrast = min(unrelated, round(recipe.identity_contrast_ratio * pairs))
        return pairs + contrast, (f"{pairs} identity pairs (questions x ways x samples) + {contrast} contrast pairs, "
                                  "before dropping"), []
    return count_rows(args, METHOD, "pairs after mixing, splitting and conversion")


def tokens(args) -> tuple[int, str]:
    rows, length = args.training.per_device_train_batch_size, args.training.max_length or 1024
    return 2 * rows * length, f"{rows} pairs x 2 (chosen, rejected) x {length} tokens"


def reference(args) -> bool:
    """A frozen copy of the model: full training without precomputed reference log-probabilities (LoRA's reference is
    the base with the adapter switched off)."""
    return not args.model.use_peft and not getattr(args.training, "precompute_ref_log_probs", False)


def data_source(args) -> tuple:
    recipe = args.recipe
    if recipe.identity_new_name:
        return recipe.identity_prompts, " (pairs curated from the model's own answers: identity_pairs.jsonl)"
    return recipe.dataset_name or recipe.dataset_mixture, ""


METHOD = Method(
    "dpo", "direct preference optimization: prefer chosen over rejected answers", DPORecipeArgs, DPOArgs,
    layouts=formats.PREFERENCE, after_convert=drop_identical_pairs, panels=PANELS, unit="pairs", plan_rows=plan_rows,
    tokens=tokens, reference=reference, checks=(check, identity.check), evaluators=identity.EVALUATORS,
    data_source=data_source, makes_its_data=lambda args: bool(args.recipe.identity_new_name))
