"""RLOO (REINFORCE leave-one-out): several answers per prompt, each answer's baseline the mean reward of the others.

The shared machinery of online RL (rewards, prompts, checks, plan terms, held-out rewards) is in `online`;
here are RLOO's config (trl's RLOOConfig: a KL penalty `beta` against a reference, 2 answers a prompt by
default) and curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import trl

from .. import formats
from ..config import RunDefaults
from . import online
from .base import Method


@dataclass
class RLOORecipeArgs(online.OnlineArgs):
    """posttrain-dist's fields and online RL's (rewards, prompt length, held-out rewards)."""


@dataclass
class RLOOArgs(online.GroupedBatches, RunDefaults, trl.RLOOConfig):
    """trl's RLOOConfig (all of it), with the batch arithmetic explained."""


PANELS = [
    ("mean reward", "reward per completion", [("reward", "total (weighted)"), (r"re:rewards/(.+)/mean$", "{}")]),
    ("reward spread", "standard deviation", [("reward_std", "within groups"), (r"re:rewards/(.+)/std$", "{}")]),
    ("KL to the reference", "per token", [("kl", "kl")]),
    ("completion length", "tokens", [("completions/mean_length", "mean"), ("completions/min_length", "min"),
                                     ("completions/max_length", "max")]),
    ("loss", "RLOO loss", [("loss", "train")]),
]

METHOD = Method(
    "rloo", "REINFORCE leave-one-out: learn from rewards, each answer against the others' mean", RLOORecipeArgs,
    RLOOArgs, layouts=formats.PROMPT, panels=PANELS, unit="prompts", examples_per_step=online.examples_per_step,
    plan_rows=online.plan_rows, tokens=online.tokens, reference=online.reference, generation=online.generation_cache,
    frozen_models=online.reward_models_of,
    checks=(online.check,), evaluators=(online.HeldOutRewards,))
