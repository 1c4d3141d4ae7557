"""Group relative policy optimization: sample several answers per prompt, learn from their group-relative rewards.

The shared machinery of online RL (rewards, prompts, checks, plan terms, held-out rewards) is in `online`;
here are GRPO's config and curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import trl

from .. import formats
from ..config import RunDefaults
from . import online
from .base import Method


@dataclass
class GRPORecipeArgs(online.OnlineArgs):
    """posttrain-dist's fields and online RL's (rewards, prompt length, held-out rewards)."""


@dataclass
class GRPOArgs(online.GroupedBatches, RunDefaults, trl.GRPOConfig):
    """trl's GRPOConfig (all of it), with the batch arithmetic explained."""


PANELS = [
    ("mean reward", "reward per completion", [("reward", "total (weighted)"), (r"re:rewards/(.+)/mean$", "{}")]),
    ("reward spread", "standard deviation", [("reward_std", "within groups"), (r"re:rewards/(.+)/std$", "{}")]),
    ("completion length", "tokens", [("completions/mean_length", "mean"), ("completions/min_length", "min"),
                                     ("completions/max_length", "max")]),
    ("tool use", "per rollout", [("tools/calls_per_rollout", "tool calls"), ("tools/turns_per_rollout", "turns"),
                                 ("tools/malformed_share", "malformed share of calls"), ("tools/correct", "right")]),
    ("loss", "GRPO loss", [("loss", "train")]),
    ("learning rate", "lr", [("learning_rate", "lr")]),
]

METHOD = Method(
    "grpo", "group relative policy optimization: learn from the rewards of sampled answers", GRPORecipeArgs, GRPOArgs,
    layouts=formats.PROMPT, panels=PANELS, unit="prompts", examples_per_step=online.examples_per_step,
    plan_rows=online.plan_rows, tokens=online.tokens, reference=online.reference, generation=online.generation_cache,
    frozen_models=online.reward_models_of,
    checks=(online.check,), evaluators=(online.HeldOutRewards,))
