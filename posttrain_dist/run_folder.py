"""The output folder of one run, and the one object that writes it: `RunFolder`.

    output_dir/
      config.yaml                        every resolved value, and where each came from (written once, when claimed)
      model.safetensors, config.json     full training: the weights
      adapter_model.safetensors, ...     LoRA/QLoRA: the PEFT adapter
      merged/                            LoRA/QLoRA with `merge_adapter: true`: adapter merged into its base
      tokenizer files, chat_template.jinja   the tokenizer with the template used in training
      generation_config.json             stops at the chat template's end-of-turn token
      metrics.json                       final metrics and the logged history
      curves.png                         the method's training curves (loss, rewards, margins, lengths, lr)
      runs/                              TensorBoard logs (report_to: tensorboard, the default)
      report.md, evaluation.json         before/after evaluation (`evaluation`)
      checkpoint-N/                      checkpoints; `checkpoint_complete.json` marks one every rank finished

Before anything loads, `check()` refuses a folder that holds another run (naming what differs)
unless `overwrite_output_dir` is set; the same config resumes. When training starts the main
process `claim()`s it: replaces the other run if told to, writes config.yaml and any data curated
for the run. A checkpoint without its completion mark (a process died while writing it) is never
resumed from.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import yaml

from .errors import ConfigError

COMPLETE = "checkpoint_complete.json"
PREEMPTED = "preempted.json"  # the run stopped for preemption in this attempt: requeue it
# A folder holding any of these holds a run.
RUN_FILES = ("config.yaml", "model.safetensors", "adapter_model.safetensors", "trainer_state.json")
# What a run writes besides checkpoints: removed when another run replaces it.
OUTPUTS = ("runs", "merged", "metrics.json", "evaluation.json", "report.md", "curves.png")
# Values that may change between the attempts of one run: bookkeeping, how long it runs, and where it runs (the
# machine, the vLLM server's address, what trl derives from the number of processes, a kernel missing on a node).
SAME_RUN_IGNORES = {
    "output_dir", "overwrite_output_dir", "auto_resume", "logging_dir", "report_to", "run_name", "ddp_backend",
    "use_cpu", "bnb_4bit_quant_storage", "max_steps", "num_train_epochs", "save_steps", "save_total_limit",
    "logging_steps", "eval_steps", "dataloader_num_workers", "push_to_hub", "hub_model_id", "ddp_timeout",
    "callbacks", "vllm_server_host", "vllm_server_base_url", "vllm_server_port", "generation_batch_size",
    "steps_per_generation", "attn_implementation",
}


# ---------------------------------------------------------------- checkpoints


def step_of(name: str) -> int | None:
    """N for a folder named checkpoint-N, else None."""
    prefix = "checkpoint-"
    return int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None


def checkpoints(output_dir: str) -> list[tuple[int, str]]:
    if not os.path.isdir(output_dir):
        return []
    found = [(step_of(name), os.path.join(output_dir, name)) for name in os.listdir(output_dir)]
    return sorted((step, path) for step, path in found if step is not None)


def is_complete(checkpoint: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint, COMPLETE))


def latest_complete(output_dir: str) -> str | None:
    """The newest checkpoint of `output_dir` that was marked complete, or None."""
    complete = [path for _, path in checkpoints(output_dir) if is_complete(path)]
    return complete[-1] if complete else None


def write_atomically(path: str, text: str) -> None:
    """Write a small file under a temporary name, flush it to disk, then rename: it is whole or absent."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- the folder


class RunFolder:
    """The output folder of one run: checked before anything loads, claimed when training starts, then written."""

    def __init__(self, args):
        self.args = args
        self.path = args.training.output_dir
        self._kept: dict[str, list[dict]] = {}
        self._checked, self._replace = False, None
        self.metrics: dict | None = None

    # -------------------------------------------------- before anything loads

    def differences(self) -> str | None:
        """None when the folder holds no run or the same run; else what differs from the run found there."""
        out, args = self.path, self.args
        if not os.path.isdir(out):
            return None
        names = os.listdir(out)
        if not (any(step_of(n) is not None for n in names) or any(n in names for n in RUN_FILES)):
            return None
        stored_path = os.path.join(out, "config.yaml")
        if not os.path.isfile(stored_path):
            return "model files or checkpoints, but no config.yaml of a posttrain-dist run"
        with open(stored_path) as f:
            stored = yaml.safe_load(f) or {}
        if stored.get("method") != args.method:
            return f"a {stored.get('method')} run, not {args.method}"
        if not args.recipe.auto_resume:
            return "a run with checkpoints, and `auto_resume` is off"
        current = args.resolved()
        changed = [
            f"{key}: {stored.get(key)!r} there, {current.get(key)!r} now"
            for key in sorted(set(current) | (set(stored) - {"method", "config_file", "sources"}))
            if key not in SAME_RUN_IGNORES and stored.get(key) != current.get(key)
        ]
        if not changed:
            return None
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return "its config differs in " + "; ".join(changed[:3]) + more

    def check(self) -> None:
        """Refuse a folder holding another run, unless told to replace it; the same run is let through to resume."""
        self._checked, self._replace = True, self.differences()
        if self._replace and not self.args.recipe.overwrite_output_dir:
            raise ConfigError(
                f"output_dir {self.path!r} holds another run ({self._replace}); choose a new `output_dir`, or set "
                "`overwrite_output_dir: true` to replace that run. (A run with the same config resumes from its "
                "checkpoints instead.)"
            )

    # -------------------------------------------------- when training starts

    def keep(self, name: str, rows: list[dict]) -> None:
        """Rows made for this run (curated data): written into the folder when it is claimed."""
        self._kept[name] = rows

    def claim(self) -> list[str]:
        """Main process, when training starts: replace another run if told to, write config.yaml and the kept rows.
        Returns what was removed."""
        out = self.path
        replace = self._replace if self._checked else self.differences()
        removed = []
        if self.args.recipe.overwrite_output_dir and replace:
            for name in sorted(os.listdir(out)):
                if step_of(name) is not None or name in RUN_FILES or name in OUTPUTS or name.endswith(".safetensors") \
                        or name in self._kept:
                    path = os.path.join(out, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                    removed.append(name)
        marker = os.path.join(out, PREEMPTED)
        if os.path.exists(marker):  # the mark of the attempt this one continues
            os.remove(marker)
        self.write_config()
        for name, rows in self._kept.items():
            with open(os.path.join(out, name), "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        return removed

    def write_config(self) -> None:
        """config.yaml: every resolved value, then where the non-default ones came from."""
        args = self.args
        os.makedirs(self.path, exist_ok=True)
        with open(os.path.join(self.path, "config.yaml"), "w") as f:
            yaml.safe_dump({"method": args.method, "config_file": args.config_path, **args.resolved()}, f, sort_keys=False)
            f.write("\n# where each value came from (default, file, command line)\n")
            yaml.safe_dump({"sources": {k: v for k, v in args.sources.items() if v != "default"}}, f, sort_keys=True)

    def remove_incomplete(self) -> list[str]:
        """Delete checkpoints without the completion mark (a process died while writing them)."""
        removed = []
        for _, path in checkpoints(self.path):
            if not is_complete(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def latest_complete(self) -> str | None:
        return latest_complete(self.path)

    def mark_complete(self, step: int) -> None:
        checkpoint = os.path.join(self.path, f"checkpoint-{step}")
        if os.path.isdir(checkpoint):
            write_atomically(os.path.join(checkpoint, COMPLETE), json.dumps({"global_step": step, "time": time.time()}))

    def mark_preempted(self, step: int | None, signum=None) -> None:
        """Main process: the run stopped for preemption (at checkpoint `step`, or before training: None)."""
        os.makedirs(self.path, exist_ok=True)
        write_atomically(os.path.join(self.path, PREEMPTED), json.dumps({
            "step": step, "signal": int(signum) if signum is not None else None, "time": time.time(),
            "attempt": self.args.env.attempt if self.args.env is not None else None}))

    def preempted(self, attempt: str | None = None, since: float | None = None) -> dict | None:
        """The preemption mark, if the run stopped for preemption in this attempt (the same Slurm job attempt, or
        written after `since`); else None."""
        path = os.path.join(self.path, PREEMPTED)
        try:
            with open(path) as f:
                mark = json.load(f)
        except (OSError, ValueError):
            return None
        if attempt is not None and mark.get("attempt") != attempt:
            return None
        if since is not None and mark.get("time", 0) < since:
            return None
        return mark

    # -------------------------------------------------- the end of training

    def save(self, trainer, tokenizer) -> None:
        """Weights (every rank takes part: ZeRO-3 gathers them), then on the main process the tokenizer, the
        generation config, metrics.json and curves.png. Then the trainer's model and optimizer are released, and
        for LoRA with `merge_adapter` the adapter is merged on the CPU (float32) and saved in the training dtype
        under merged/: an 8B merge never needs GPU memory next to the trainer's."""
        from . import curves, modeling, training

        args = self.args
        fsdp = getattr(trainer.accelerator.state, "fsdp_plugin", None)
        if fsdp is not None and "FULL_STATE_DICT" not in str(fsdp.state_dict_type):
            fsdp.set_state_dict_type("FULL_STATE_DICT")  # checkpoints are sharded; the model users load is whole
        trainer.save_model(self.path)
        main = trainer.is_world_process_zero()
        model = trainer.accelerator.unwrap_model(trainer.model)
        dtype = str(getattr(model.config, "dtype", None) or "float32").replace("torch.", "")
        if main:
            tokenizer.save_pretrained(self.path)
            model.generation_config.save_pretrained(self.path)
            history = trainer.state.log_history
            final = next((entry for entry in reversed(history) if "train_runtime" in entry), {})
            self.metrics = {"final": final, "global_step": trainer.state.global_step, "log_history": history}
            self.write("metrics.json", json.dumps(self.metrics, indent=1))
            try:
                curves.plot(history, args.method, os.path.join(self.path, "curves.png"),
                            title=f"{args.method.upper()} of {args.model.model_name_or_path}: {self.path}")
            except ImportError:  # a bare GPU image without matplotlib: the numbers are in metrics.json
                print("curves.png not drawn: matplotlib is not installed (`pip install matplotlib`)", flush=True)
        del model
        training.release(trainer)
        if main and args.model.use_peft and args.recipe.merge_adapter:
            modeling.merge_adapter(self.path, os.path.join(self.path, "merged"), save_dtype=dtype)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.path, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def has(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.path, name))
