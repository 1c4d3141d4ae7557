"""What stops a run before it writes something wrong: a non-finite loss, a full disk, counters lost on resume.

- `NonFinite`: every micro-batch's loss is checked (on the device, read once per optimizer step) and so
  is the logged gradient norm; the first non-finite one stops training at that step with a hint, on
  every rank at once. Nothing is saved as the result; the last complete checkpoint stays. (Under fp16 a
  loss scaler skips overflowing steps by design: there only the loss is checked.)
- `DiskSpace`: before each checkpoint, the free space is compared with the size of the last complete
  checkpoint (or, before the first, with the weights and optimizer state); a checkpoint that cannot fit
  is not started. `final_save_space` does the same for the final model.
- `Counters`: what the trainer counts outside its saved state (trl's `num_tokens`) is written into each
  checkpoint and read back on resume, so curves and metrics continue instead of restarting from 0.
- `finite_weights`: the final check before the model is saved as the result.
"""

from __future__ import annotations

import json
import math
import os

from transformers import TrainerCallback

from . import safety
from .errors import UserError


class TrainingStopped(UserError):
    """Training cannot go on (a non-finite loss, weights, a full disk): the run stops with what to do."""


def _agreed(accelerator, flag: bool) -> bool:
    """True when any rank says so: the ranks must decide together, or some would wait for the others forever."""
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        value = accelerator.reduce(value, reduction="sum")
    return value.item() > 0


HINT = ("Nothing was saved as the result; the last complete checkpoint (if any) stays. Usual causes: a learning rate "
        "far too high, fp16 overflow (prefer bf16), a DPO beta or reward weight that is not a sane number, or rows "
        "with empty answers. Fix it and run the same command again (it resumes from the last checkpoint), or set "
        "`overwrite_output_dir: true` to start over.")


class NonFinite(TrainerCallback):
    """Stops at the first optimizer step whose loss (any micro-batch) or logged gradient norm is not finite."""

    def __init__(self, trainer):
        self.trainer, self.accelerator = trainer, trainer.accelerator
        self.bad = None
        self.what = ""
        step = trainer.training_step

        def checked(*args, **kwargs):
            import torch

            loss = step(*args, **kwargs)
            flag = ~torch.isfinite(loss.detach()).all()
            self.bad = flag if self.bad is None else self.bad | flag
            return loss

        trainer.training_step = checked

    def on_step_end(self, args, state, control, **kwargs):
        bad = bool(self.bad.item()) if self.bad is not None else False
        self.bad = None
        if _agreed(self.accelerator, bad):
            raise TrainingStopped(f"the loss was not finite at optimizer step {state.global_step}. {HINT}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        norm = (logs or {}).get("grad_norm")
        if isinstance(norm, (int, float)) and not math.isfinite(norm) and not args.fp16:
            raise TrainingStopped(f"the gradient norm was {norm} at optimizer step {state.global_step}. {HINT}")


def _model_bytes(model) -> tuple[int, int]:
    """(bytes of every parameter, number of trainable parameters), counting ZeRO-3's partitioned ones whole."""
    total = trainable = 0
    for p in model.parameters():
        numel = getattr(p, "ds_numel", None) or p.numel()
        total += numel * p.element_size()
        trainable += numel if p.requires_grad else 0
    return total, trainable


class DiskSpace(TrainerCallback):
    """Before a checkpoint is written: does it fit? Else stop with the space needed and free."""

    def __init__(self, trainer, run):
        self.trainer, self.run = trainer, run

    def needed(self) -> int:
        previous = self.run.latest_complete()
        if previous:
            return safety.folder_size(previous)
        weights, trainable = _model_bytes(self.trainer.model)
        return weights + trainable * 8 + (1 << 20)  # the weights, two float32 optimizer states, small files

    def on_step_end(self, args, state, control, **kwargs):
        if not control.should_save:
            return
        problem = safety.space_problem(self.run.path, self.needed(), f"checkpoint-{state.global_step}")
        if _agreed(self.trainer.accelerator, problem is not None):
            raise TrainingStopped(problem or "not enough disk space on another node to write the checkpoint.")


def final_save_space(trainer, run, merged: bool) -> None:
    weights, _ = _model_bytes(trainer.model)
    problem = safety.space_problem(run.path, weights * (2 if merged else 1), "the final model")
    if _agreed(trainer.accelerator, problem is not None):
        raise TrainingStopped(problem or "not enough disk space on another node to write the final model.")


def disk_full(error: BaseException, folder: str, what: str) -> TrainingStopped | None:
    """A write that failed on a full disk, as one line (None when `error` is something else)."""
    if not safety.is_disk_full(error):
        return None
    return TrainingStopped(f"the disk filled up while writing {what} in {folder} ({safety.gib(safety.free_space(folder))} "
                           "free now). Free some space or choose another `output_dir`, then run the same command again: "
                           "it resumes from the last complete checkpoint.")


COUNTERS = "counters.json"
_COUNTED = ("_total_train_tokens",)  # trl's trainers count num_tokens here, outside the saved TrainerState


class Counters(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            values = {name: getattr(self.trainer, name) for name in _COUNTED if hasattr(self.trainer, name)}
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if values and os.path.isdir(folder):
                safety.write_atomically(os.path.join(folder, COUNTERS), json.dumps(values))


def restore_counters(trainer, checkpoint: str | None) -> None:
    if checkpoint is None:
        return
    try:
        with open(os.path.join(checkpoint, COUNTERS)) as f:
            values = json.load(f)
    except (OSError, ValueError):
        return
    for name in _COUNTED:
        if isinstance(values.get(name), (int, float)) and hasattr(trainer, name):
            setattr(trainer, name, values[name])


def finite_weights(trainer) -> None:
    """Refuse to save trained weights with NaN or infinity in them (every rank checks its own share)."""
    import torch

    bad = None
    for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters():
        if not p.requires_grad or not p.is_floating_point():  # frozen weights (a 4-bit base: packed) do not train
            continue
        tensor = getattr(p, "ds_tensor", None)
        tensor = tensor if tensor is not None else p
        if tensor.numel() and not torch.isfinite(tensor.detach()).all():
            bad = name
            break
    if _agreed(trainer.accelerator, bad is not None):
        raise TrainingStopped(f"the trained weights are not finite ({bad or 'on another rank'}). {HINT}")
