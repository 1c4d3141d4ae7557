"""The recipes' training step: claim the run folder, resume exactly, stop cleanly on preemption, end together.

- `catch_preemption()`, first thing in a recipe: SIGUSR1 (Slurm's warning before the time limit,
  `--signal=USR1@SECONDS`) and SIGTERM (preemption by another job, or `scancel`) ask the run to stop,
  whenever they come, during model loading or data preparation too.
- `train(trainer, run)`: a stop asked before training starts ends the run there; during training all
  ranks agree on it at the end of a step, save a checkpoint at that step, mark it complete
  (`run_folder`), and the main process writes `preempted.json`, the mark the Slurm script requeues on
  (`posttrain-dist preempted`); then every process exits with status 75 (EX_TEMPFAIL: try again).
  With `auto_resume` (the default) the next attempt resumes from the newest complete checkpoint:
  weights, optimizer, scheduler, RNG and data position, as transformers restores them.
- `release(trainer)` frees the model and optimizer after the final save, before evaluation and the
  adapter merge load other models; `finish(trainer)` is the recipes' last line: every rank waits for
  the main process's report, then the process group is destroyed, so that no rank exits early (and is
  reported failed) or leaves a communication thread running at exit.
- `callbacks` in the config adds trainer callbacks of your own (`package.module:Name`).
"""

from __future__ import annotations

import importlib
import signal
import sys

from transformers import TrainerCallback

from .errors import ConfigError

EXIT_PREEMPTED = 75
PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

_requested: dict = {"signal": None}


def _on_signal(signum, frame):
    _requested["signal"] = signum


def catch_preemption() -> None:
    """From now on SIGUSR1 and SIGTERM ask the run to checkpoint and stop, instead of killing it."""
    for signum in PREEMPT_SIGNALS:
        signal.signal(signum, _on_signal)


def stop_requested() -> bool:
    return _requested["signal"] is not None


class CompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint complete once every rank has finished writing it."""

    def __init__(self, accelerator, run):
        self.accelerator, self.run = accelerator, run

    def on_save(self, args, state, control, **kwargs):
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.run.mark_complete(state.global_step)
        self.accelerator.wait_for_everyone()


class Preemption(TrainerCallback):
    """A stop asked by signal: every rank saves a checkpoint at the same step, then training stops."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.stopped_at = None

    def on_step_end(self, args, state, control, **kwargs):
        if _agreed(self.accelerator, stop_requested()):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


def _agreed(accelerator, flag: bool) -> bool:
    """True when any rank says so: the ranks must decide together, or some would wait for the others forever."""
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        value = accelerator.reduce(value, reduction="sum")
    return value.item() > 0


def user_callbacks(names: list[str] | None) -> list:
    """The callbacks a config names as `package.module:Name`: classes are instantiated, instances kept."""
    found = []
    for name in names or []:
        module_name, _, attribute = name.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as error:
            raise ConfigError(f"callback {name!r}: cannot import it ({error}); give `package.module:Name`.") from None
        callback = target() if isinstance(target, type) else target
        if not isinstance(callback, TrainerCallback):
            raise ConfigError(f"callback {name!r} is not a transformers TrainerCallback.")
        found.append(callback)
    return found


def attach(trainer, run) -> Preemption:
    """Your callbacks first (they see each event before ours), then complete-checkpoint marks and preemption."""
    for callback in user_callbacks(run.args.recipe.callbacks):
        trainer.add_callback(callback)
    trainer.add_callback(CompleteCheckpoints(trainer.accelerator, run))
    preemption = Preemption(trainer.accelerator)
    trainer.add_callback(preemption)
    return preemption


def align_checkpointing(args) -> None:
    """trl sets `use_reentrant` where it must (PEFT under ZeRO-3 needs reentrant activation checkpointing) in the
    deprecated `gradient_checkpointing_kwargs`, after transformers has copied that field to
    `activation_checkpointing_kwargs`, which is the one `Trainer.train` reads: carry trl's value over."""
    old, new = getattr(args, "gradient_checkpointing_kwargs", None), getattr(args, "activation_checkpointing_kwargs", None)
    if old is not None and old != new:
        args.activation_checkpointing_kwargs = dict(old)


def train(trainer, run) -> None:
    """Train, resuming from the newest complete checkpoint; on a preemption signal checkpoint and exit 75."""
    preemption = attach(trainer, run)
    accelerator = trainer.accelerator
    align_checkpointing(trainer.args)
    if accelerator.is_main_process:
        removed = run.claim()
        if removed:
            print(f"overwrite_output_dir: removed the earlier run's {', '.join(removed)} from {run.path}", flush=True)
    accelerator.wait_for_everyone()
    resume = run.args.training.resume_from_checkpoint
    if resume is None and run.args.recipe.auto_resume:
        if accelerator.is_main_process:
            for path in run.remove_incomplete():
                print(f"removed incomplete checkpoint {path} (a process died while writing it)", flush=True)
        accelerator.wait_for_everyone()
        resume = run.latest_complete()
        if resume is not None and accelerator.is_main_process:
            print(f"resuming from {resume}", flush=True)
    if _agreed(accelerator, stop_requested()):  # the signal came while the model or the data loaded
        _stop(accelerator, run, None, resume)
    trainer.train(resume_from_checkpoint=resume)
    if preemption.stopped_at is not None:
        _stop(accelerator, run, preemption.stopped_at, resume)


def _stop(accelerator, run, step: int | None, resume: str | None) -> None:
    """Mark the run preempted (main process), wait until the mark is written, end the process group, exit 75."""
    import os

    if accelerator.is_main_process:
        run.mark_preempted(step, _requested["signal"])
        where = f"checkpoint-{step} saved" if step is not None else \
            f"stopped before training ({'will resume from ' + os.path.basename(resume) if resume else 'nothing trained yet'})"
        print(f"preempted: {where} in {run.path}; run the same command again (or let the Slurm job requeue) to "
              "resume from it.", flush=True)
    _end_process_group(accelerator)
    sys.exit(EXIT_PREEMPTED)


def release(trainer) -> None:
    """Drop the trainer's model, reference model and optimizer (and their GPU memory) once they are saved."""
    import gc

    import torch

    for holder in (trainer, trainer.callback_handler):  # the callbacks' handler holds them too
        for name in ("model", "model_wrapped", "ref_model", "optimizer", "lr_scheduler"):
            if hasattr(holder, name):
                setattr(holder, name, None)
    trainer.accelerator.free_memory()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def finish(trainer) -> None:
    """The recipes' last step: every rank waits until the main process has written everything, then the
    process group ends before the interpreter does."""
    _end_process_group(trainer.accelerator)


def _end_process_group(accelerator) -> None:
    import torch.distributed as dist

    accelerator.wait_for_everyone()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
