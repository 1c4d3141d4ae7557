"""Run features every recipe shares: resume from the newest complete checkpoint, checkpoint-and-exit on
the preemption signal, and (for tests and debugging) a trace of the examples each step trained on.

`train(trainer, args)` is the recipes' training step:

- Checkpoints are marked complete: after the trainer has written `checkpoint-N` on every rank and all
  ranks have met, the main process writes `checkpoint-N/checkpoint_complete.json` (written to a
  temporary name, then renamed). A checkpoint without the mark (a process died while writing it) is
  never resumed from, and is removed before the next run trains.
- With `auto_resume` (the default) a run whose output folder holds complete checkpoints resumes
  from the newest: weights, optimizer, scheduler, RNG and data position, as transformers restores them.
- SIGUSR1 (Slurm sends it before the time limit with `--signal=USR1@SECONDS`; slurm/train.sbatch)
  asks the run to stop: all ranks agree on it at the end of a step, save a complete checkpoint at
  that step and exit with status 75 (EX_TEMPFAIL: try again), and the job requeues itself.
- POSTTRAIN_DIST_TRACE_DATA=1 appends, per rank, one line per micro-batch to
  `output_dir/data_trace/rank{R}.jsonl`: the optimizer step and a fingerprint of each example.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import time

from transformers import TrainerCallback

COMPLETE = "checkpoint_complete.json"
EXIT_PREEMPTED = 75
PREEMPT_SIGNAL = signal.SIGUSR1


# ---------------------------------------------------------------- complete checkpoints


def _checkpoints(output_dir: str) -> list[tuple[int, str]]:
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            found.append((int(name[len("checkpoint-"):]), os.path.join(output_dir, name)))
    return sorted(found)


def is_complete(checkpoint: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint, COMPLETE))


def latest_complete(output_dir: str) -> str | None:
    """The newest checkpoint of `output_dir` that was marked complete, or None."""
    complete = [path for _, path in _checkpoints(output_dir) if is_complete(path)]
    return complete[-1] if complete else None


def remove_incomplete(output_dir: str) -> list[str]:
    """Delete checkpoints without the completion mark (a process died while writing them)."""
    removed = []
    for _, path in _checkpoints(output_dir):
        if not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _mark_complete(checkpoint: str, step: int) -> None:
    tmp = os.path.join(checkpoint, f".{COMPLETE}.tmp")
    with open(tmp, "w") as f:
        json.dump({"global_step": step, "time": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(checkpoint, COMPLETE))


class CompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint complete once every rank has finished writing it."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def on_save(self, args, state, control, **kwargs):
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        _fault_injection(checkpoint, state.global_step)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process and os.path.isdir(checkpoint):
            _mark_complete(checkpoint, state.global_step)
        self.accelerator.wait_for_everyone()


def _fault_injection(checkpoint: str, step: int) -> None:
    """Test hook (POSTTRAIN_DIST_FAULT_KILL_IN_SAVE=N): the main process dies while writing checkpoint N,
    one file half written, as a crash or a SIGKILL during the save would leave it."""
    if os.environ.get("POSTTRAIN_DIST_FAULT_KILL_IN_SAVE") != str(step) or os.environ.get("RANK", "0") != "0":
        return
    for name in sorted(os.listdir(checkpoint)):
        path = os.path.join(checkpoint, name)
        if os.path.isfile(path) and os.path.getsize(path) > 1:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            break
    os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- preemption


_requested = {"signal": None}


def _on_signal(signum, frame):
    _requested["signal"] = signum


class Preemption(TrainerCallback):
    """On SIGUSR1: every rank saves a checkpoint at the same step, then training stops."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.stopped_at = None

    def on_train_begin(self, args, state, control, **kwargs):
        signal.signal(PREEMPT_SIGNAL, _on_signal)

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        at = os.environ.get("POSTTRAIN_DIST_PREEMPT_AT_STEP")  # test hook: as if the signal came at that step
        requested = _requested["signal"] is not None or (at is not None and state.global_step == int(at))
        flag = torch.tensor([1.0 if requested else 0.0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:  # the ranks must agree, or some would wait for the others forever
            flag = self.accelerator.reduce(flag, reduction="sum")
        if flag.item() > 0:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


# ---------------------------------------------------------------- data trace


def fingerprint(token_ids) -> str:
    return hashlib.sha1(json.dumps([int(t) for t in token_ids]).encode()).hexdigest()[:16]


def _trace_compute_loss(trainer, path: str) -> None:
    """Wrap the trainer's compute_loss: record what each micro-batch trains on, then compute as before."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    original = trainer.compute_loss

    def compute_loss(model, inputs, *args, **kwargs):
        if model.training and "input_ids" in inputs:
            rows = list(inputs["input_ids"])
            if inputs.get("attention_mask") is not None:  # drop the padding
                rows = [row[mask.bool()] for row, mask in zip(rows, inputs["attention_mask"])]
            with open(path, "a") as f:
                f.write(json.dumps({"step": trainer.state.global_step + 1,
                                    "examples": [fingerprint(r.tolist()) for r in rows]}) + "\n")
        return original(model, inputs, *args, **kwargs)

    trainer.compute_loss = compute_loss


def read_trace(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------- the recipes' training step


def attach(trainer, args) -> Preemption:
    """Add complete-checkpoint marks, preemption handling and (when asked) data tracing to a trainer."""
    trainer.add_callback(CompleteCheckpoints(trainer.accelerator))
    preemption = Preemption(trainer.accelerator)
    trainer.add_callback(preemption)
    if os.environ.get("POSTTRAIN_DIST_TRACE_DATA") == "1":
        rank = trainer.accelerator.process_index
        _trace_compute_loss(trainer, os.path.join(args.training.output_dir, "data_trace", f"rank{rank}.jsonl"))
    return preemption


def train(trainer, args) -> None:
    """Train, resuming from the newest complete checkpoint; on a preemption signal checkpoint and exit 75."""
    from . import outputs

    preemption = attach(trainer, args)
    output_dir = args.training.output_dir
    if trainer.accelerator.is_main_process:
        removed = outputs.start_run(args)
        if removed:
            print(f"overwrite_output_dir: removed the earlier run's {', '.join(removed)} from {output_dir}", flush=True)
    trainer.accelerator.wait_for_everyone()
    resume = args.training.resume_from_checkpoint
    if resume is None and args.recipe.auto_resume:
        if trainer.accelerator.is_main_process:
            for path in remove_incomplete(output_dir):
                print(f"removed incomplete checkpoint {path} (a process died while writing it)", flush=True)
        trainer.accelerator.wait_for_everyone()
        resume = latest_complete(output_dir)
        if resume is not None and trainer.accelerator.is_main_process:
            print(f"resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    if preemption.stopped_at is not None:
        if trainer.accelerator.is_main_process:
            print(f"preempted: checkpoint-{preemption.stopped_at} saved in {output_dir}; run the same command "
                  "again (or let the Slurm job requeue) to resume from it.", flush=True)
        sys.exit(EXIT_PREEMPTED)
