"""Run one training in this process and print what it cost, as one JSON line (used by benchmarks/run.py).

    python benchmarks/measure.py recipe sft ARGS...     our recipe (recipes/sft.py main)
    python benchmarks/measure.py plain-sft ARGS...      trl's SFTTrainer called directly (see plain_sft)
    python benchmarks/measure.py plain-dpo|plain-grpo ARGS...   trl's DPOTrainer / GRPOTrainer likewise

Measured: the process's resident memory just before the run loads anything (after the imports),
when training starts, and its peak during training (VmHWM, reset as training starts), the trainer's
train_runtime, optimizer steps, and real (non-padding)
tokens trained on; with POSTTRAIN_DIST_TIME_GENERATE=1 also the seconds spent in `generate`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status(key: str) -> int:
    """A /proc/self/status value in bytes (VmRSS, VmHWM)."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak_when_training_starts() -> dict:
    """Wrap Trainer.train: reset the process's peak RSS as training starts (Linux: `5` into clear_refs), so that
    the peak read at the end is the training's own, without the transient of loading (safetensors pages,
    full-precision weights read before 4-bit quantization) that malloc would otherwise keep in RSS."""
    import transformers

    at_start = {}
    original = transformers.Trainer.train

    def train(self, *args, **kwargs):
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed loading buffers back, or RSS keeps counting them
        at_start["rss"] = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return original(self, *args, **kwargs)

    transformers.Trainer.train = train
    return at_start


def _time_generate() -> dict:
    import transformers

    spent = {"seconds": 0.0, "calls": 0, "tokens": 0}
    original = transformers.GenerationMixin.generate

    def generate(self, *args, **kwargs):
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        spent["seconds"] += time.perf_counter() - start
        spent["calls"] += 1
        sequences = out if hasattr(out, "shape") else out.sequences
        prompt = kwargs.get("input_ids", args[0] if args else None)
        spent["tokens"] += int(sequences.numel() - (prompt.numel() if prompt is not None else 0))
        return out

    transformers.GenerationMixin.generate = generate
    return spent


def plain_sft(argv: list[str]):
    """What a user writes without posttrain-dist: load the model and data, call SFTTrainer, train.

    argv: MODEL_DIR DATA_JSONL OUTPUT_DIR then SFTConfig fields as --key value.
    """
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser
    from trl import SFTConfig, SFTTrainer

    model_dir, data_file, output_dir, *rest = argv
    (training,) = HfArgumentParser(SFTConfig).parse_args_into_dataclasses(
        args=["--output_dir", output_dir, "--use_cpu", str(not torch.cuda.is_available()), *rest])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=training, processing_class=tokenizer,
                         train_dataset=load_dataset("json", data_files=data_file, split="train"))
    trainer.train()
    return trainer


def plain_dpo(argv: list[str]):
    """DPOTrainer called directly: MODEL_DIR DATA_JSONL OUTPUT_DIR then DPOConfig fields (the reference: a copy)."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser
    from trl import DPOConfig, DPOTrainer

    model_dir, data_file, output_dir, *rest = argv
    (training,) = HfArgumentParser(DPOConfig).parse_args_into_dataclasses(
        args=["--output_dir", output_dir, "--use_cpu", str(not torch.cuda.is_available()), *rest])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    load = lambda: AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)  # noqa: E731
    trainer = DPOTrainer(model=load(), ref_model=load().requires_grad_(False), args=training, processing_class=tokenizer,
                         train_dataset=load_dataset("json", data_files=data_file, split="train"))
    trainer.train()
    return trainer


def plain_grpo(argv: list[str]):
    """GRPOTrainer called directly: MODEL_DIR DATA_JSONL OUTPUT_DIR then GRPOConfig fields; our math_answer reward."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, str(ROOT))
    from posttrain_dist.rewards import math_answer

    model_dir, data_file, output_dir, *rest = argv
    (training,) = HfArgumentParser(GRPOConfig).parse_args_into_dataclasses(
        args=["--output_dir", output_dir, "--use_cpu", str(not torch.cuda.is_available()), *rest])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=[math_answer], args=training, processing_class=tokenizer,
                          train_dataset=load_dataset("json", data_files=data_file, split="train"))
    trainer.train()
    return trainer


def main() -> None:
    import os

    kind, *argv = sys.argv[1:]
    generate = _time_generate() if os.environ.get("POSTTRAIN_DIST_TIME_GENERATE") == "1" else None
    if kind == "recipe":
        method, *argv = argv
        spec = importlib.util.spec_from_file_location(f"recipe_{method}", ROOT / "recipes" / f"{method}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = module.main
    elif kind == "plain-sft":
        run = plain_sft
    elif kind == "plain-dpo":
        run = plain_dpo
    elif kind == "plain-grpo":
        run = plain_grpo
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    baseline = _status("VmRSS")
    at_start = _reset_peak_when_training_starts()
    start = time.perf_counter()
    trainer = run(argv)
    wall = time.perf_counter() - start
    history = trainer.state.log_history
    final = next(e for e in reversed(history) if "train_runtime" in e)
    tokens = max((e.get("num_tokens", 0) for e in history), default=0)
    result = {
        "baseline_rss": baseline,
        "training_peak_rss": _status("VmHWM"),  # since training started
        "rss_at_training_start": at_start.get("rss"),
        "train_runtime": final["train_runtime"],
        "wall": wall,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "train_loss": final.get("train_loss"),
    }
    if generate is not None:
        result["generate"] = generate
    print("BENCHMARK " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
