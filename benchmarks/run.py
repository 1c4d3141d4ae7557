"""Benchmarks: each compares two or more settings on identical work, in one run, as ratios.

    .venv/bin/python benchmarks/run.py NAME        NAME: memory, sft-overhead, packing, grpo-generation
    .venv/bin/python benchmarks/run.py all

Each writes benchmarks/results/NAME.json (every figure, the machine, versions and date) and
NAME.md (the table). Runs are subprocesses (benchmarks/measure.py) so that each one's peak memory
is its own; the sides of a comparison alternate (A B A B) so that a noisy neighbour hits both.
These machines are shared: trust the ratios, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRESETS = ROOT / "recipes" / "smollm2-135m"
sys.path.insert(0, str(ROOT))

QUIET = ["--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1",
         "--seed", "42", "--bf16", "false", "--dataloader_num_workers", "0"]
GiB = 1024**3


def measure(kind: str, *argv: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "measure.py"), kind, *argv]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCHMARK ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(lines[-1][len("BENCHMARK "):])
    result["tokens_per_second"] = result["tokens"] / result["train_runtime"]
    result["steps_per_second"] = result["steps"] / result["train_runtime"]
    result["peak_rss"] = result["training_peak_rss"]
    result["peak_increase"] = result["training_peak_rss"] - result["baseline_rss"]
    print(f"  {kind} {' '.join(argv[:3])}...: {result['train_runtime']:.1f} s, {result['tokens_per_second']:.0f} tok/s, "
          f"peak RSS in training {result['peak_rss'] / GiB:.2f} GiB", flush=True)
    return result


def machine() -> dict:
    import importlib.metadata as md

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {p: md.version(p) for p in ("torch", "transformers", "trl", "accelerate", "peft", "bitsandbytes")},
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
    }


def write(name: str, figures: dict, rows: list[dict], notes: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": info, "figures": figures, "runs": rows}, indent=1))
    columns = list(rows[0])
    lines = [f"# {name}", "", f"`{info['command']}` on {info['cpus']} CPUs ({info['platform']}), {info['date']}; "
             + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    lines += ["", "## Figures", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in figures.items()] + ["", *notes, ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


# ---------------------------------------------------------------- memory: plan's estimate, and full vs LoRA vs QLoRA


def _preset(name: str, folder: str) -> str:
    """A shipped preset without its before/after evaluation (which loads more models after training)."""
    import yaml

    values = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    for key in ("eval_prompts", "perplexity_dataset"):
        values.pop(key, None)
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(values, f)
    return path


def memory(args) -> None:
    from posttrain_dist import modeling, planning

    rows = []
    variants = ("full", "lora", "qlora")
    for model in ("tiny-random-llama", "smollm2-135m-instruct"):
        modeling.resolve_model(model)
        for variant in variants:
            # one packed row of exactly 256 tokens a step: the estimate's full-length assumption holds, and the
            # weights and optimizer state, where full, LoRA and QLoRA differ, are a large part of the peak
            overrides = ["--model_name_or_path", model, "--max_steps", str(args.steps), "--per_device_train_batch_size",
                         "1", "--max_length", "256", "--packing", "true", "--activation_checkpointing", "false",
                         "--merge_adapter", "false"]
            with tempfile.TemporaryDirectory() as out:
                preset = _preset(f"sft_{variant}", out)
                out = os.path.join(out, "run")
                argv = ["--config", preset, *overrides, *QUIET, "--output_dir", out]
                plan = planning.make("sft", preset, str(ROOT / "accelerate_configs" / "cpu.yaml"),
                                     recipe_args=[*overrides, *QUIET, "--output_dir", out])
                run = measure("recipe", "sft", *argv)
            rows.append({
                "model": model, "variant": variant,
                "estimate_GiB": plan.estimate.total / GiB,
                "measured_increase_GiB": run["peak_increase"] / GiB,
                "estimate/measured": plan.estimate.total / run["peak_increase"],
                "peak_rss_GiB": run["peak_rss"] / GiB,
                "tokens/s": run["tokens_per_second"], "steps/s": run["steps_per_second"],
            })
    big = {r["variant"]: r for r in rows if r["model"] == "smollm2-135m-instruct"}
    figures = {
        "qlora/full peak-memory ratio (training memory: peak RSS in training minus RSS before loading; target <= 0.35)":
            big["qlora"]["measured_increase_GiB"] / big["full"]["measured_increase_GiB"],
        "lora/full peak-memory ratio (training memory)":
            big["lora"]["measured_increase_GiB"] / big["full"]["measured_increase_GiB"],
        "qlora/full peak-memory ratio (whole-process peak RSS in training)":
            big["qlora"]["peak_rss_GiB"] / big["full"]["peak_rss_GiB"],
        "qlora/full tokens/s": big["qlora"]["tokens/s"] / big["full"]["tokens/s"],
        "lora/full tokens/s": big["lora"]["tokens/s"] / big["full"]["tokens/s"],
    }
    for r in rows:
        figures[f"plan estimate / measured, {r['model']} {r['variant']}"] = r["estimate/measured"]
    write("memory", figures, rows, [
        "SFT on builtin:sft-basics packed into one 256-token row per step, float32 on CPU, no activation "
        f"checkpointing, {args.steps} steps. Measured: the peak resident memory during training (VmHWM, reset when "
        "training starts, so the transient of loading is not in it) minus the resident memory after the imports, "
        "before data, tokenizer and model load; `posttrain-dist plan` estimates the same from the model config "
        "alone. The tiny model's rows show the part that does not grow with the model: data, tokenizer, trainer and "
        "allocator, about 0.4-0.5 GiB, which the estimate leaves out.",
    ])


# ---------------------------------------------------------------- our recipe vs trl's SFTTrainer called directly


def _prompt_completion_file(folder: str) -> str:
    from posttrain_dist import data

    dataset = data.prepare(data.load_source("builtin:sft-basics", "train"), "sft", "builtin:sft-basics")
    path = os.path.join(folder, "sft.jsonl")
    dataset.to_json(path)
    return path


def sft_overhead(args) -> None:
    from posttrain_dist import modeling

    model = modeling.resolve_model("smollm2-135m-instruct")
    settings = ["--max_steps", str(args.steps), "--per_device_train_batch_size", "8", "--max_length", "256",
                "--learning_rate", "2e-5", "--lr_scheduler_type", "linear", "--warmup_steps", "0",
                "--activation_checkpointing", "false", *QUIET]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data_file = _prompt_completion_file(folder)
        for round_ in range(args.rounds):
            for side in ("posttrain-dist recipe", "plain trl SFTTrainer"):
                out = os.path.join(folder, f"{side[:5]}{round_}")
                if side.startswith("posttrain"):
                    run = measure("recipe", "sft", "--model_name_or_path", model, "--dataset_name", data_file,
                                  "--output_dir", out, *settings)
                else:
                    run = measure("plain-sft", model, data_file, out, *settings)
                rows.append({"side": side, "round": round_, "train_runtime_s": run["train_runtime"],
                             "tokens/s": run["tokens_per_second"], "train_loss": run["train_loss"],
                             "tokens": run["tokens"]})
    ours = [r["train_runtime_s"] for r in rows if r["side"].startswith("posttrain")]
    plain = [r["train_runtime_s"] for r in rows if r["side"].startswith("plain")]
    figures = {
        "recipe / plain trl time ratio (median of rounds; target <= 1.02)": statistics.median(ours) / statistics.median(plain),
        "same work: train_loss equal": len({round(r["train_loss"], 6) for r in rows}) == 1,
        "same work: tokens equal": len({r["tokens"] for r in rows}) == 1,
    }
    write("sft-overhead", figures, rows, [
        f"SmolLM2-135M full SFT, {args.steps} steps of 8 prompt/completion rows (sft-basics) on CPU in float32, "
        "the same data file and settings on both sides; train_runtime is the trainer's own (model loading excluded). "
        "Equal losses and token counts show both sides did the same work.",
    ])


# ---------------------------------------------------------------- packing vs padding on skewed lengths


def _skewed_file(folder: str, rows: int = 400, seed: int = 0) -> str:
    words = ("the model learns to answer questions with short and clear sentences about many things "
             "such as rivers cities numbers colours animals planets and small facts").split()
    rng = random.Random(seed)
    path = os.path.join(folder, "skewed.jsonl")
    with open(path, "w") as f:
        for _ in range(rows):
            long = rng.random() < 0.1  # one row in ten is long, the rest short: typical chat data
            n = rng.randint(250, 400) if long else rng.randint(8, 30)
            f.write(json.dumps({"prompt": "Say something.", "completion": " ".join(rng.choice(words) for _ in range(n))}) + "\n")
    return path


def packing(args) -> None:
    from posttrain_dist import modeling

    model = modeling.resolve_model("smollm2-135m-instruct")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data_file = _skewed_file(folder)
        common = ["--model_name_or_path", model, "--dataset_name", data_file, "--max_steps", str(args.steps),
                  "--per_device_train_batch_size", "8", "--max_length", "512", "--activation_checkpointing", "false",
                  "--learning_rate", "2e-5", *QUIET]
        for round_ in range(args.rounds):
            for side, extra in (("padded", ["--packing", "false"]), ("packed (bfd, padding-free)", ["--packing", "true"])):
                run = measure("recipe", "sft", *common, *extra, "--output_dir", os.path.join(folder, f"{side[:6]}{round_}"))
                rows.append({"side": side, "round": round_, "real_tokens": run["tokens"],
                             "train_runtime_s": run["train_runtime"], "real tokens/s": run["tokens_per_second"],
                             "peak_rss_GiB": run["peak_rss"] / GiB})
    speed = {s: statistics.median(r["real tokens/s"] for r in rows if r["side"] == s) for s in {r["side"] for r in rows}}
    write("packing", {"packed / padded real tokens per second (target >= 2)":
                      speed["packed (bfd, padding-free)"] / speed["padded"]}, rows, [
        f"SmolLM2-135M full SFT on CPU, {args.steps} steps of 8 sequences, max_length 512, on prompt/completion rows "
        "where 9 in 10 have 8-30 words and 1 in 10 has 250-400 words. Real tokens are non-padding tokens (trl's "
        "num_tokens). On CPU, trl's padding-free packing flattens the batch into one sequence and sdpa attends over "
        "it with a block-diagonal mask, quadratic in the whole pack: a packed step is slower and takes more memory "
        "than a padded one, yet carries ten times the real tokens. flash-attention's variable-length kernel on GPU "
        "avoids that cost; the GPU presets (recipes/qwen3-8b) pack. The CPU presets do not, because they are sized "
        "in steps for the test suite's time budget and packing would put about four times the tokens in each step.",
    ])


# ---------------------------------------------------------------- GRPO: how much of a step is generation


def grpo_generation(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for variant in ("full", "lora"):
            run = measure("recipe", "grpo", "--config", _preset(f"grpo_{variant}", folder), "--max_steps",
                          str(args.steps), "--output_dir", os.path.join(folder, variant), "--reward_eval_size", "0",
                          *QUIET, env={"POSTTRAIN_DIST_TIME_GENERATE": "1"})
            gen = run["generate"]
            rows.append({"variant": variant, "steps": run["steps"], "train_runtime_s": run["train_runtime"],
                         "generate_s": gen["seconds"], "generation share": gen["seconds"] / run["train_runtime"],
                         "generated tokens/s": gen["tokens"] / gen["seconds"] if gen["seconds"] else 0.0})
    write("grpo-generation", {f"generation share of step time, {r['variant']}": r["generation share"] for r in rows}, rows, [
        f"SmolLM2-135M GRPO presets (arithmetic, 4 answers per prompt, 16 completions per step, up to 64 new tokens) "
        f"on CPU with transformers' generate, {args.steps} steps. generate_s is the time inside `generate`; "
        "generated tokens include padding after an answer ends.",
    ])


BENCHMARKS = {"memory": memory, "sft-overhead": sft_overhead, "packing": packing, "grpo-generation": grpo_generation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for name in (BENCHMARKS if args.name == "all" else [args.name]):
        print(f"== {name}", flush=True)
        BENCHMARKS[name](args)


if __name__ == "__main__":
    main()
