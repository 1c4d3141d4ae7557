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
      finished.json                      the run finished: its final step and the hash of its config
      .posttrain-dist.lock               held while a run works in the folder (`lock`)

Before anything loads, `check()` says a folder holding this very run, finished, has nothing to do
(`RunFinished`: exit 0, nothing written), refuses a folder that holds another run (naming what differs)
unless `overwrite_output_dir` is set, refuses links that point outside the folder, and (main process)
takes the folder's lock. The same config resumes. When training starts the main process `claim()`s
it: replaces the other run if told to, writes config.yaml and any data curated for the run. A
checkpoint without its completion mark (a process died while writing it) is never resumed from, nor
one whose mark this user's key did not sign (`safety`): its pickled files are never loaded.
`save_total_limit` is kept here, not by transformers: an older checkpoint is deleted only once a newer
one is marked complete, so even `save_total_limit: 1` always leaves one complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import yaml

from . import safety
from .errors import ConfigError, RunFinished

COMPLETE = "checkpoint_complete.json"
PREEMPTED = "preempted.json"  # the run stopped for preemption in this attempt: requeue it
FINISHED = "finished.json"  # the run ended: its final step and the hash of its config
# A folder holding any of these (or a checkpoint) holds a run. config.yaml alone does not: a run that failed
# before its first checkpoint left nothing to resume or protect, and the corrected rerun takes the folder.
RUN_FILES = ("model.safetensors", "adapter_model.safetensors", "trainer_state.json", FINISHED)
# What a run writes besides checkpoints: removed when another run replaces it.
OUTPUTS = ("runs", "merged", "metrics.json", "evaluation.json", "report.md", "curves.png", "config.yaml", PREEMPTED)
# Values that may change between the attempts of one run: bookkeeping, how long it runs, and where it runs (the
# machine, the vLLM server's address, what trl derives from the number of processes, a kernel missing on a node).
SAME_RUN_IGNORES = {
    "output_dir", "overwrite_output_dir", "auto_resume", "logging_dir", "report_to", "run_name", "ddp_backend",
    "use_cpu", "bnb_4bit_quant_storage", "max_steps", "num_train_epochs", "save_steps", "save_total_limit",
    "logging_steps", "eval_steps", "dataloader_num_workers", "push_to_hub", "hub_model_id", "ddp_timeout",
    "callbacks", "vllm_server_host", "vllm_server_base_url", "vllm_server_port", "generation_batch_size",
    "steps_per_generation", "attn_implementation",
}
# How long a run trains: a finished run asked for more continues from its last checkpoint, instead of being done.
LENGTH = {"max_steps", "num_train_epochs"}


def main_process() -> bool:
    """Rank 0 of the run (or a plain process), before accelerate is set up."""
    return int(os.environ.get("RANK", "0")) == 0


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
    """Marked complete (every rank finished writing it); whether the mark is ours is `untrusted`'s question."""
    return os.path.isfile(os.path.join(checkpoint, COMPLETE))


def latest_complete(output_dir: str) -> str | None:
    """The newest checkpoint of `output_dir` that was marked complete, or None."""
    complete = [path for _, path in checkpoints(output_dir) if is_complete(path)]
    return complete[-1] if complete else None


def untrusted(checkpoint: str) -> str | None:
    """Why a complete checkpoint may not be resumed from (its mark not signed by this user's key, or a pickled
    file that is not the one the run wrote), or None."""
    mark = safety.read_mark(os.path.join(checkpoint, COMPLETE))
    if mark is None:
        return "its completion mark was not signed by a run of yours"
    found = safety.pickled_digests(checkpoint)
    expected = mark.get("files", {})
    changed = sorted(name for name in set(found) | set(expected) if found.get(name) != expected.get(name))
    return f"its files {changed[:3]} are not the ones the run wrote" if changed else None


def sign_checkpoint(checkpoint: str, step: int) -> None:
    safety.write_mark(os.path.join(checkpoint, COMPLETE), {"global_step": step, "time": time.time(),
                                                          "files": safety.pickled_digests(checkpoint)})


write_atomically = safety.write_atomically


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

    def config_hash(self) -> str:
        """The hash of what the run trains: every resolved value but bookkeeping and where it runs."""
        values = {k: v for k, v in self.args.resolved().items() if k not in SAME_RUN_IGNORES - LENGTH}
        return hashlib.sha256(json.dumps({"method": self.args.method, **values}, sort_keys=True,
                                         default=str).encode()).hexdigest()

    def finished(self) -> dict | None:
        """The signed mark of a finished run in the folder, or None."""
        return safety.read_mark(os.path.join(self.path, FINISHED))

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
        """Before anything loads: a finished run of this config has nothing to do (RunFinished); another run is
        refused unless told to replace it; the same run is let through to resume from a checkpoint it signed."""
        leaving = safety.links_leaving(self.path)
        if leaving:
            raise ConfigError(f"output_dir {self.path!r} holds links that point outside it ({'; '.join(leaving[:3])}): "
                              "the run would write through them. Remove them, or choose another `output_dir`.")
        overwrite = self.args.recipe.overwrite_output_dir
        finished = self.finished()
        self._checked, self._replace = True, self.differences()
        if finished and not overwrite and not self._replace:
            if finished.get("config_hash") == self.config_hash():
                raise RunFinished(
                    f"{self.path} holds this run, finished at step {finished.get('global_step')} "
                    f"({time.strftime('%Y-%m-%d %H:%M', time.localtime(finished.get('time', 0)))}): nothing to do. "
                    "`overwrite_output_dir: true` trains it again."
                    + ("" if finished.get("reported") else " (Its report was not written: the run ended during the "
                                                            "evaluation.)"))
            if self.args.recipe.auto_resume and latest_complete(self.path) is None:
                self._replace = ("a finished run with other `max_steps`/`num_train_epochs` and no checkpoint to "
                                 "continue from")
        if finished and overwrite:
            self._replace = self._replace or "this run, finished"
        if self._replace and not overwrite:
            raise ConfigError(
                f"output_dir {self.path!r} holds another run ({self._replace}); choose a new `output_dir`, or set "
                "`overwrite_output_dir: true` to replace that run. (A run with the same config resumes from its "
                "checkpoints instead.)"
            )
        if not self._replace and self.args.recipe.auto_resume and main_process():
            newest = latest_complete(self.path)
            problem = newest and untrusted(newest)
            if problem:
                raise ConfigError(
                    f"{newest} cannot be resumed from: {problem}. Its pickled files (optimizer, RNG, DeepSpeed states) "
                    "could run code when loaded. Remove it (or set `overwrite_output_dir: true`); if you know who wrote "
                    f"it and trust it, `posttrain-dist trust {newest}` signs it with your key.")

    def lock(self):
        """Hold the folder for this run (the main process; the others share it): refused, naming the holder, when
        another run holds it. Released when the recipe ends."""
        from . import lock

        return lock.acquire(self.path) if main_process() else None

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
        for name in (PREEMPTED, FINISHED):  # the mark of the attempt this one continues; of the shorter run it extends
            if os.path.lexists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        self.write_config()
        for name, rows in self._kept.items():
            self.write(name, "".join(json.dumps(row) + "\n" for row in rows))
        return removed

    def write_config(self) -> None:
        """config.yaml: every resolved value, then where the non-default ones came from."""
        args = self.args
        os.makedirs(self.path, exist_ok=True)
        text = yaml.safe_dump({"method": args.method, "config_file": args.config_path, **args.resolved()}, sort_keys=False)
        text += "\n# where each value came from (default, file, command line)\n"
        text += yaml.safe_dump({"sources": {k: v for k, v in args.sources.items() if v != "default"}}, sort_keys=True)
        self.write("config.yaml", text)

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
            sign_checkpoint(checkpoint, step)

    def rotate(self, limit: int | None, keep: str | None = None) -> list[str]:
        """`save_total_limit`: delete the oldest checkpoints beyond `limit`, counting only complete ones, once the
        newest is complete; `keep` (the best checkpoint) stays. Incomplete ones older than a complete one go too."""
        if not limit:
            return []
        found = checkpoints(self.path)
        complete = [path for _, path in found if is_complete(path)]
        kept = set(complete[-limit:]) | ({keep} if keep else set())
        newest = complete[-1] if complete else None
        removed = []
        for step, path in found:
            if path not in kept and newest is not None and step < step_of(os.path.basename(newest)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def mark_preempted(self, step: int | None, signum=None) -> None:
        """Main process: the run stopped for preemption (at checkpoint `step`, or before training: None)."""
        os.makedirs(self.path, exist_ok=True)
        safety.write_mark(os.path.join(self.path, PREEMPTED), {
            "step": step, "signal": int(signum) if signum is not None else None, "time": time.time(),
            "attempt": self.args.env.attempt if getattr(self.args, "env", None) is not None else None})

    def mark_finished(self, step: int, reported: bool) -> None:
        """Main process: the run ended (its model saved; `reported` once report.md is written too)."""
        safety.write_mark(os.path.join(self.path, FINISHED), {
            "global_step": step, "config_hash": self.config_hash(), "time": time.time(), "reported": reported})
        if os.path.lexists(os.path.join(self.path, PREEMPTED)):
            os.remove(os.path.join(self.path, PREEMPTED))

    def preempted(self, attempt: str | None = None, since: float | None = None) -> dict | None:
        """The preemption mark this user's run signed, if the run stopped for preemption in this attempt (the same
        Slurm job attempt, or written after `since`); else None."""
        mark = safety.read_mark(os.path.join(self.path, PREEMPTED))
        if mark is None:
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
        from . import curves, guards, methods, modeling, training

        args = self.args
        merging = bool(args.model.use_peft and args.recipe.merge_adapter)
        guards.finite_weights(trainer)  # NaN weights are never the result
        guards.final_save_space(trainer, self, merging)
        fsdp = getattr(trainer.accelerator.state, "fsdp_plugin", None)
        if fsdp is not None and "FULL_STATE_DICT" not in str(fsdp.state_dict_type):
            fsdp.set_state_dict_type("FULL_STATE_DICT")  # checkpoints are sharded; the model users load is whole
        try:
            trainer.save_model(self.path)
        except Exception as error:
            stopped = guards.disk_full(error, self.path, "the final model")
            if stopped is None:
                raise
            raise stopped from None
        self.drop_pickled_arguments()
        main = trainer.is_world_process_zero()
        if fsdp is not None and main:
            self.keep_training_dtype(args.model.dtype)
        model = trainer.accelerator.unwrap_model(trainer.model)
        dtype = str(getattr(model.config, "dtype", None) or "float32").replace("torch.", "")
        if main:
            tokenizer.save_pretrained(self.path)
            if model.can_generate():  # a reward model scores; it generates nothing
                model.generation_config.save_pretrained(self.path)
            history = trainer.state.log_history
            final = next((entry for entry in reversed(history) if "train_runtime" in entry), {})
            self.metrics = {"final": final, "global_step": trainer.state.global_step, "log_history": history}
            self.write("metrics.json", json.dumps(self.metrics, indent=1))
            try:
                curves.plot(history, methods.get(args.method).panels, os.path.join(self.path, "curves.png"),
                            title=f"{args.method.upper()} of {args.model.model_name_or_path}: {self.path}")
            except ImportError:  # a bare GPU image without matplotlib: the numbers are in metrics.json
                print("curves.png not drawn: matplotlib is not installed (`pip install matplotlib`)", flush=True)
        del model
        training.release(trainer)
        if main and merging:
            modeling.merge_adapter(self.path, os.path.join(self.path, "merged"), save_dtype=dtype)
        if main:
            self.mark_finished(trainer.state.global_step, reported=False)

    def keep_training_dtype(self, dtype: str | None) -> None:
        """Under FSDP with bf16/fp16 mixed precision accelerate keeps the trained parameters in float32 (the master
        weights; each forward casts them to the compute dtype), so the final state dict is float32. The saved files
        are cast back to the dtype the model was loaded in, as ZeRO-3 and one process save it: a bf16 8B model
        stays 16 GB, and its config says bfloat16."""
        import torch
        from safetensors import safe_open
        from safetensors.torch import save_file

        if dtype in (None, "auto", "float32"):
            return
        target, total = getattr(torch, dtype), 0
        for name in sorted(n for n in os.listdir(self.path) if n.endswith(".safetensors")):
            path = os.path.join(self.path, name)
            with safe_open(path, "pt") as f:
                metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
            cast = {k: t.to(target) if t.is_floating_point() else t for k, t in tensors.items()}
            total += sum(t.numel() * t.element_size() for t in cast.values())
            if any(t.dtype != cast[k].dtype for k, t in tensors.items()):
                save_file(cast, path + ".partial", metadata=metadata)
                os.replace(path + ".partial", path)
        for name, key, value in (("config.json", None, {"dtype": dtype}),
                                 ("model.safetensors.index.json", "metadata", {"total_size": total})):
            path = os.path.join(self.path, name)
            if os.path.isfile(path):
                with open(path) as f:
                    content = json.load(f)
                (content.setdefault(key, {}) if key else content).update(value)
                safety.write_atomically(path, json.dumps(content, indent=2) + "\n")

    def drop_pickled_arguments(self) -> None:
        """transformers pickles the training arguments (`training_args.bin`) next to the model: they can hold a hub
        token, and unpickling someone's copy runs code. config.yaml holds every value as plain text instead."""
        path = os.path.join(self.path, "training_args.bin")
        if os.path.lexists(path):
            os.remove(path)

    def write(self, name: str, text: str) -> str:
        """A file of the run's own, written whole or not at all, never through a link."""
        path = os.path.join(self.path, name)
        write_atomically(path, text)
        return path

    def has(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.path, name))
