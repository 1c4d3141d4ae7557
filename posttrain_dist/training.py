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

import sys

from transformers import TrainerCallback

from . import guards, vllm_sync
from .errors import ConfigError
from .guards import _agreed
from .signals import EXIT_PREEMPTED, PREEMPT_SIGNALS, _requested, catch_preemption, stop_requested  # noqa: F401


class CompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint complete (signed, with the digests of its pickled files) once every rank has finished
    writing it; then, for `save_total_limit`, deletes the checkpoints that are now beyond it."""

    def __init__(self, accelerator, run, limit: int | None):
        self.accelerator, self.run, self.limit = accelerator, run, limit

    def on_save(self, args, state, control, **kwargs):
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.run.mark_complete(state.global_step)
            self.run.rotate(self.limit, keep=state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()


class Preemption(TrainerCallback):
    """A stop asked by signal: every rank saves a checkpoint at the same step, then training stops. Asked during the
    last step, it lets the run end as finished (saved and reported), not preempted."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.stopped_at = None

    def on_step_end(self, args, state, control, **kwargs):
        if _agreed(self.accelerator, stop_requested()) and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


def user_callbacks(names: list[str] | None) -> list:
    """The callbacks a config names as `package.module:Name`: imported now (the run starts), classes instantiated."""
    from . import references

    found = []
    for name in names or []:
        target = references.load(name, "callback")
        callback = target() if isinstance(target, type) else target
        if not isinstance(callback, TrainerCallback):
            raise ConfigError(f"callback {name!r} is not a transformers TrainerCallback.")
        found.append(callback)
    return found


def attach(trainer, run) -> Preemption:
    """Your callbacks first (they see each event before ours), then the counters, complete-checkpoint marks,
    the non-finite guard, preemption, and last (it sees whether a checkpoint is due) the disk space check.
    transformers' own `save_total_limit` rotation is switched off: ours deletes only behind a complete checkpoint."""
    for callback in user_callbacks(run.args.recipe.callbacks):
        trainer.add_callback(callback)
    limit, trainer.args.save_total_limit = trainer.args.save_total_limit, None
    trainer.add_callback(guards.Counters(trainer))
    trainer.add_callback(CompleteCheckpoints(trainer.accelerator, run, limit))
    trainer.add_callback(guards.NonFinite(trainer))
    preemption = Preemption(trainer.accelerator)
    trainer.add_callback(preemption)
    trainer.add_callback(guards.DiskSpace(trainer, run))
    vllm_sync.attach(trainer, run.args)  # a colocated vLLM: its CPU weight copy, `vllm_sync_check`
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
    guards.restore_counters(trainer, resume)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except Exception as error:
        stopped = guards.disk_full(error, run.path, "a checkpoint")
        if stopped is None:
            raise
        raise stopped from None
    if preemption.stopped_at is not None:
        _stop(accelerator, run, preemption.stopped_at, resume)
    if trainer.state.global_step == 0:
        raise guards.TrainingStopped("training ended after 0 optimizer steps (no rows, or `max_steps`/`num_train_epochs` "
                                     "too small): nothing trained, so nothing is saved as the result.")


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
    process group ends before the interpreter does. A colocated vLLM engine stops first: it joined the run's
    process group and ends it itself."""
    trainer.accelerator.wait_for_everyone()
    if vllm_sync.shutdown(trainer):
        return
    _end_process_group(trainer.accelerator)


def _end_process_group(accelerator) -> None:
    import torch.distributed as dist

    accelerator.wait_for_everyone()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
