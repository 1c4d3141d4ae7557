"""Reward modelling: a model that scores an answer, trained to agree with human (or curated) preferences.

The course's second source of reward for online RL: the network of a language model with one scoring head,
trained on preference pairs (the layouts DPO reads: ultrafeedback, hh-rlhf, prompt/chosen/rejected) to score
the chosen answer above the rejected one (trl's RewardTrainer, Bradley-Terry loss). Full, LoRA (the head
trained whole) and QLoRA. Before and after training it reports the held-out preference accuracy: the share of
held-out pairs it orders right (a new head scores at about chance). The output loads with
`AutoModelForSequenceClassification` and keeps the tokenizer and chat template it was trained with; GRPO and
RLOO take it as a reward (`reward_funcs: [model:FOLDER]`).
"""

from __future__ import annotations

from dataclasses import dataclass

import trl

from .. import evaluation, formats
from ..config import RecipeArgs, RunDefaults, _field
from .base import Method, count_rows
from .dpo import drop_identical_pairs


@dataclass
class RewardRecipeArgs(RecipeArgs):
    """posttrain-dist's fields, and how many held-out pairs the preference accuracy is measured on."""

    preference_eval_size: int = _field(200, "Held-out pairs (the evaluation data) whose order the model is asked "
                                            "before and after training: its preference accuracy.")


@dataclass
class RewardArgs(RunDefaults, trl.RewardConfig):
    """trl's RewardConfig (all of it)."""


PANELS = [
    ("loss", "Bradley-Terry loss", [("loss", "train"), ("eval_loss", "eval")]),
    ("preference accuracy", "share of pairs scored chosen > rejected", [("accuracy", "train"),
                                                                         ("eval_accuracy", "eval")]),
    ("margin", "score(chosen) - score(rejected)", [("margin", "train"), ("eval_margin", "eval")]),
    ("scores", "reward", [("mean_reward", "mean"), ("min_reward", "min"), ("max_reward", "max")]),
    ("learning rate", "lr", [("learning_rate", "lr")]),
]


def check(args) -> None:
    """LoRA adapts a scoring model: peft's sequence-classification task (it trains the new head whole)."""
    if args.model.use_peft and args.model.lora_task_type == "CAUSAL_LM":
        args.model.lora_task_type = "SEQ_CLS"
        args.sources["lora_task_type"] = "SEQ_CLS: a reward model scores sequences"


def plan_rows(args) -> tuple:
    return count_rows(args, METHOD, "pairs after mixing, splitting and conversion")


def tokens(args) -> tuple[int, str]:
    rows, length = args.training.per_device_train_batch_size, args.training.max_length or 1024
    return 2 * rows * length, f"{rows} pairs x 2 (chosen, rejected) x {length} tokens"


class PreferenceAccuracy(evaluation.Evaluator):
    """The share of held-out pairs the model scores chosen above rejected, and the mean margin, before (the base
    with a new head: about chance) and after training. The pairs are the run's evaluation data, tokenized by the
    trainer as in training."""

    name = "preference_accuracy"
    model_kind = "sequence-classifier"

    @staticmethod
    def applies(args) -> bool:
        return args.recipe.preference_eval_size > 0

    def __init__(self, args, trainer=None):
        super().__init__(args)
        held = getattr(trainer, "eval_dataset", None)
        if held is None or "chosen_ids" not in getattr(held, "column_names", []):
            raise evaluation.NothingToMeasure("no evaluation data (a test split, or `eval_split_size`)")
        self.pairs = held.select(range(min(args.recipe.preference_eval_size, len(held))))

    def measure(self, model, tokenizer) -> dict:
        import torch

        def scores(rows):
            with torch.no_grad():
                return [model(input_ids=torch.tensor([ids], device=model.device)).logits[0, 0].item() for ids in rows]

        chosen, rejected = scores(self.pairs["chosen_ids"]), scores(self.pairs["rejected_ids"])
        right = [c > r for c, r in zip(chosen, rejected)]
        return {"accuracy": sum(right) / len(right), "margin": sum(c - r for c, r in zip(chosen, rejected)) / len(right),
                "pairs": len(right)}

    def summary(self, before, after):
        return {"preference_accuracy_before": before["accuracy"], "preference_accuracy_after": after["accuracy"],
                "margin_before": before["margin"], "margin_after": after["margin"], "preference_pairs": after["pairs"]}

    def section(self, before, after, summary):
        line = (f"Held-out pairs scored chosen above rejected (preference accuracy), of {after['pairs']}: "
                f"{before['accuracy']:.0%} before (a new scoring head), {after['accuracy']:.0%} after; mean margin "
                f"{before['margin']:+.3f} -> {after['margin']:+.3f}")
        return line, ["## Preference accuracy", "", line, ""]


METHOD = Method(
    "reward", "reward modelling: score answers as preference pairs order them", RewardRecipeArgs, RewardArgs,
    layouts=formats.PREFERENCE, after_convert=drop_identical_pairs, panels=PANELS, unit="pairs", plan_rows=plan_rows,
    tokens=tokens, checks=(check,), evaluators=(PreferenceAccuracy,), model_kind="sequence-classifier",
    shared_evaluators=False)
