"""Where a run runs: the device, the number of processes and the distributed kind, probed once.

A recipe probes its own process (`probe()`: what `accelerate launch` put in the environment, and
whether torch sees a GPU). `posttrain-dist plan` and `launch` describe the run they prepare from an
accelerate config file instead (`from_accelerate_file()`), which may be meant for GPUs that this
machine lacks. Everything else receives the result; nothing else reads these variables.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import yaml

from .errors import ConfigError

KINDS = {"DEEPSPEED": "deepspeed", "FSDP": "fsdp", "MULTI_GPU": "ddp", "MULTI_CPU": "ddp"}


@dataclass(frozen=True)
class Environment:
    """The machine and the process layout of one run."""

    kind: str = "none"  # none, ddp, deepspeed or fsdp
    zero_stage: int | None = None
    world_size: int = 1  # processes in the run, over all nodes
    has_accelerator: bool = False  # this machine has a GPU (or another accelerator torch sees)
    for_gpus: bool = False  # the run is meant for GPUs (planned from a machine without them, possibly)
    planned: bool = False  # describes a run being prepared (plan, launch), not this process
    accelerate: dict = field(default_factory=dict, compare=False)  # the accelerate config's values, when read
    attempt: str | None = None  # which attempt of a Slurm job this is ("JOB.RESTARTS"), for the preemption mark
    fsdp_activation_checkpointing: bool = False  # FSDP checkpoints activations itself (the accelerate config says so)

    @property
    def device(self) -> str:
        """Where this process puts a model it loads by itself (evaluation, curation)."""
        return "cuda" if self.has_accelerator else "cpu"

    @property
    def sharded(self) -> bool:
        """Weights split across processes: ZeRO-3 or FSDP."""
        return (self.kind == "deepspeed" and self.zero_stage == 3) or self.kind == "fsdp"

    @property
    def zero3(self) -> bool:
        return self.kind == "deepspeed" and self.zero_stage == 3

    def describe(self) -> str:
        if self.kind == "deepspeed":
            return f"DeepSpeed ZeRO-{self.zero_stage}"
        return {"none": "one process", "ddp": "DDP", "fsdp": "FSDP"}[self.kind]


def has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available()


def _truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=1)
def probe() -> Environment:
    """This process's environment, as `accelerate launch` set it up (one plain process without it)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    gpu = has_accelerator()
    attempt = slurm_attempt(env)
    if _truthy(env.get("ACCELERATE_USE_DEEPSPEED", "")):
        stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
        return Environment("deepspeed", stage, world, gpu, gpu, attempt=attempt)
    if _truthy(env.get("ACCELERATE_USE_FSDP", "")):
        return Environment("fsdp", None, world, gpu, gpu, attempt=attempt,
                           fsdp_activation_checkpointing=_truthy(env.get("FSDP_ACTIVATION_CHECKPOINTING", "")))
    return Environment("ddp" if world > 1 else "none", None, world, gpu, gpu, attempt=attempt)


def slurm_attempt(env) -> str | None:
    """"JOB.RESTARTS" inside a Slurm job (a requeued job keeps its id and counts its restarts), else None."""
    job = env.get("SLURM_JOB_ID")
    return f"{job}.{env.get('SLURM_RESTART_COUNT') or 0}" if job else None


def read_accelerate_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"accelerate config {path!r} does not exist; see accelerate_configs/.")
    with open(path) as f:
        return yaml.safe_load(f) or {}


def from_accelerate_file(path: str, nodes: int = 1, processes_per_node: int | None = None,
                         for_gpus: bool | None = None) -> Environment:
    """The run an accelerate config file describes, on `nodes` nodes of `processes_per_node` processes (default:
    the file's num_processes on one node). It is meant for GPUs unless the file says `use_cpu`, or it sets no
    GPU precision (bf16/fp16) and this machine has no GPU: so `plan --accelerate zero3` on a login node plans GPUs."""
    values = read_accelerate_file(path)
    kind = KINDS.get(str(values.get("distributed_type", "NO")), "none")
    stage = (values.get("deepspeed_config") or {}).get("zero_stage") if kind == "deepspeed" else None
    per_node = processes_per_node or (int(values.get("num_processes", 1)) if nodes == 1 else 1)
    gpu = has_accelerator()
    if for_gpus is None:
        for_gpus = not values.get("use_cpu", False) and (gpu or str(values.get("mixed_precision")) in ("bf16", "fp16"))
    fsdp_checkpointing = kind == "fsdp" and _truthy((values.get("fsdp_config") or {}).get("fsdp_activation_checkpointing"))
    return Environment(kind, int(stage) if stage is not None else None, nodes * per_node, gpu, bool(for_gpus), True,
                       values, slurm_attempt(os.environ), fsdp_checkpointing)


def distributed_state():
    """accelerate's process state for work outside a trainer (data preparation, curation): on a machine without a
    GPU it must be told so (`cpu=True`), or each process of a CPU launch believes it is alone."""
    from accelerate import PartialState

    return PartialState(cpu=not has_accelerator())
