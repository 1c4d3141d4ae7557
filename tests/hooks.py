"""Trainer callbacks the tests inject into recipe runs (`--callbacks hooks:Name`, with tests/ on PYTHONPATH).

Production code knows nothing of them: they use the recipes' `callbacks` option like any user's own.
Their parameters come from the test's environment variables.

- TraceData: appends, per rank, one line per micro-batch to `output_dir/data_trace/rank{R}.jsonl`: the
  optimizer step and a fingerprint of each example (its token ids without padding).
- PreemptAtStep: every rank sends itself SIGUSR1 (or $HOOK_PREEMPT_SIGNAL) during step $HOOK_PREEMPT_AT_STEP, as
  Slurm would.
- KillInSave: the main process dies while writing checkpoint $HOOK_KILL_IN_SAVE, one file half written,
  as a crash or a SIGKILL during the save would leave it.
"""

import hashlib
import json
import os
import signal

from transformers import TrainerCallback

HOOKS = ["--callbacks", "hooks:TraceData"]


def fingerprint(token_ids) -> str:
    return hashlib.sha1(json.dumps([int(t) for t in token_ids]).encode()).hexdigest()[:16]


def read_trace(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


class TraceData(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        path = os.path.join(args.output_dir, "data_trace", f"rank{args.process_index}.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)

        def record(module, positional, keywords):
            input_ids = keywords.get("input_ids", positional[0] if positional else None)
            if not module.training or input_ids is None:
                return
            rows = list(input_ids)
            if keywords.get("attention_mask") is not None:  # drop the padding
                rows = [row[mask.bool()] for row, mask in zip(rows, keywords["attention_mask"])]
            with open(path, "a") as f:
                f.write(json.dumps({"step": state.global_step + 1,
                                    "examples": [fingerprint(r.tolist()) for r in rows]}) + "\n")

        model.register_forward_pre_hook(record, with_kwargs=True)


class PreemptAtStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == int(os.environ["HOOK_PREEMPT_AT_STEP"]):
            os.kill(os.getpid(), getattr(signal, os.environ.get("HOOK_PREEMPT_SIGNAL", "SIGUSR1")))


class KillInSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step != int(os.environ["HOOK_KILL_IN_SAVE"]) or not state.is_world_process_zero:
            return
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        for name in sorted(os.listdir(checkpoint)):
            path = os.path.join(checkpoint, name)
            if os.path.isfile(path) and os.path.getsize(path) > 1:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                break
        os.kill(os.getpid(), signal.SIGKILL)


class RecordCheckpointing(TrainerCallback):
    """Writes `output_dir/checkpointing_rank{R}.json`: how the model's layers are wrapped for activation
    checkpointing when training starts (`use_reentrant`, or null when they are not wrapped)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        wrapped = [m._gradient_checkpointing_func for m in model.modules()
                   if getattr(m, "gradient_checkpointing", False) and hasattr(m, "_gradient_checkpointing_func")]
        reentrant = sorted({bool(f.keywords.get("use_reentrant", True)) for f in wrapped}) if wrapped else None
        with open(os.path.join(args.output_dir, f"checkpointing_rank{args.process_index}.json"), "w") as f:
            json.dump({"use_reentrant": reentrant}, f)


class ExitTime(TrainerCallback):
    """Writes `output_dir/exit_rank{R}.txt` with the time this process exits (after the recipe's last step)."""

    def on_train_begin(self, args, state, control, **kwargs):
        import atexit
        import time

        path = os.path.join(args.output_dir, f"exit_rank{args.process_index}.txt")
        atexit.register(lambda: open(path, "w").write(repr(time.time())))


class SignalInSave(TrainerCallback):
    """Sends SIGUSR1 to this process while checkpoint $HOOK_SIGNAL_IN_SAVE is being written (its on_save)."""

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ["HOOK_SIGNAL_IN_SAVE"]):
            os.kill(os.getpid(), signal.SIGUSR1)


class PoisonAtStep(TrainerCallback):
    """Sets one weight matrix to NaN at the start of step $HOOK_POISON_AT_STEP (a diverging run, made on purpose)."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == int(os.environ["HOOK_POISON_AT_STEP"]):
            import torch

            with torch.no_grad():
                next(p for p in model.parameters() if p.dim() == 2).fill_(float("nan"))


class SlowSteps(TrainerCallback):
    """Sleeps $HOOK_SLOW_STEP_SECONDS after each step, and marks that training started (output_dir/started_rankR)."""

    def on_step_end(self, args, state, control, **kwargs):
        import time

        open(os.path.join(args.output_dir, f"started_rank{args.process_index}"), "w").close()
        time.sleep(float(os.environ.get("HOOK_SLOW_STEP_SECONDS", "5")))


class RecordSharding(TrainerCallback):
    """Writes `output_dir/sharding_rank{R}.json` once the trainer has prepared the model: for each parameter, its
    class (DTensor where FSDP2 shards it), the shape this rank holds and the whole shape."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        record = {name: {"class": type(p).__name__, "local": list(getattr(p, "to_local", lambda: p)().shape),
                         "whole": list(p.shape)} for name, p in model.named_parameters()}
        with open(os.path.join(args.output_dir, f"sharding_rank{args.process_index}.json"), "w") as f:
            json.dump(record, f)


class RecordPrecision(TrainerCallback):
    """Writes `output_dir/precision_rank{R}.json` at the first training forward: whether CPU autocast is on and in
    which dtype (seen from the first linear layer: accelerate's autocast wraps the model's forward, inside its hooks),
    and the dtypes of the trainable and of the frozen floating-point parameters."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        path = os.path.join(args.output_dir, f"precision_rank{args.process_index}.json")

        def record(module, positional, keywords):
            if os.path.exists(path) or not module.training:
                return
            floating = [p for p in model.parameters() if p.is_floating_point()]
            with open(path, "w") as f:
                json.dump({"autocast": torch.is_autocast_enabled("cpu") and str(torch.get_autocast_dtype("cpu")),
                           "trainable": sorted({str(p.dtype) for p in floating if p.requires_grad}),
                           "frozen": sorted({str(p.dtype) for p in floating if not p.requires_grad})}, f)

        first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        first.register_forward_pre_hook(record, with_kwargs=True)
