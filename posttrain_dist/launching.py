"""Launch environments: which distributed setup a run is under, and (for clusters) how to launch it.

`distributed_setup()` reads what `accelerate launch` put in the environment, or an accelerate config
file, so that combinations that cannot work are refused before a model loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

from .errors import ConfigError


@dataclass
class Setup:
    """The distributed setup of a run: `kind` is none, ddp, deepspeed or fsdp."""

    kind: str = "none"
    zero_stage: int | None = None
    num_processes: int = 1

    def describe(self) -> str:
        if self.kind == "deepspeed":
            return f"DeepSpeed ZeRO-{self.zero_stage}"
        return {"none": "one process", "ddp": "DDP", "fsdp": "FSDP"}[self.kind]


def _truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def distributed_setup(accelerate_config: str | None = None) -> Setup:
    """The setup described by an accelerate config file, or else by the environment of this process."""
    if accelerate_config is not None:
        if not os.path.isfile(accelerate_config):
            raise ConfigError(f"accelerate config {accelerate_config!r} does not exist; see accelerate_configs/.")
        with open(accelerate_config) as f:
            conf = yaml.safe_load(f) or {}
        kind = {"DEEPSPEED": "deepspeed", "FSDP": "fsdp", "MULTI_GPU": "ddp", "MULTI_CPU": "ddp"}.get(
            str(conf.get("distributed_type", "NO")), "none")
        stage = (conf.get("deepspeed_config") or {}).get("zero_stage") if kind == "deepspeed" else None
        return Setup(kind, int(stage) if stage is not None else None, int(conf.get("num_processes", 1)))
    env = os.environ
    processes = int(env.get("WORLD_SIZE", "1"))
    if _truthy(env.get("ACCELERATE_USE_DEEPSPEED", "")):
        return Setup("deepspeed", int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")), processes)
    if _truthy(env.get("ACCELERATE_USE_FSDP", "")):
        return Setup("fsdp", None, processes)
    return Setup("ddp" if processes > 1 else "none", None, processes)
