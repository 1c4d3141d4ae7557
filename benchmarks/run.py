"""Benchmarks: each compares two or more settings on identical work, in one run, as ratios.

    .venv/bin/python benchmarks/run.py NAME        NAME: memory, sft-overhead, packing, grpo-generation, curation,
                                                   sft-preparation, whole-process (benchmarks/preparation.py)
    .venv/bin/python benchmarks/run.py all
    python benchmarks/run.py gpu [smoke qlora speed memory]   on a CUDA machine: benchmarks/gpu.py

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
        "alone: weights, optimizer state, the larger of gradients and activations with trl's fused-LM-head logit "
        "tile, and the CPU process's own share (data, tokenizer, trainer, allocator; 0.43 GiB, the tiny model's "
        "whole measured increase, which over-counts the tiny rows a little). On a CPU the weights are memory-mapped "
        "from the safetensors file: a 4-bit load reads all of it and keeps it resident (the unquantized embeddings "
        "are views into the mapping), which the QLoRA estimate counts on CPUs only.",
    ])


# ---------------------------------------------------------------- our recipe vs trl's SFTTrainer called directly


def _prompt_completion_file(folder: str) -> str:
    """The built-in SFT rows as conversational prompt/completion pairs: what trl's SFTTrainer, called directly, also
    trains on the completions only (so both sides do the same work)."""
    from posttrain_dist import data, formats, sources

    dataset = data.prepare(sources.load_source("builtin:sft-basics", "train"), data.CONVERSATIONS, "builtin:sft-basics")
    dataset = dataset.map(lambda b: formats.per_turn(b["messages"]), batched=True, remove_columns=dataset.column_names)
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


# ---------------------------------------------------------------- curation: distillation batching, filtering at scale


def curation(args) -> None:
    import json as json_
    import random
    import time as time_

    from posttrain_dist import filtering
    from posttrain_dist.distill import distill

    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as folder:
        prompts = [{"prompt": [{"role": "user", "content": f"Give me one tip about topic number {i}."}]} for i in range(32)]
        seconds = {}
        for batch in (1, 8, 1, 8):  # alternating, so a noisy neighbour hits both
            out = os.path.join(folder, f"distill-{batch}-{len(seconds)}.jsonl")
            start = time_.perf_counter()
            distill("smollm2-135m-instruct", prompts, out, batch_size=batch, max_new_tokens=32, progress=False)
            seconds.setdefault(batch, []).append(time_.perf_counter() - start)
        for batch, values in seconds.items():
            rows.append({"work": f"distill 32 prompts, batch {batch}", "rows": 32, "seconds": min(values),
                         "rows/s": 32 / min(values), "kept": 32})
        figures["distill prompts/s, batch 8 / one at a time"] = min(seconds[1]) / min(seconds[8])

        rng = random.Random(0)
        words = ["river", "stone", "maple", "quiet", "orbit", "lantern", "harbor", "meadow", "signal", "copper"]
        data = []
        for i in range(100_000):
            text = " ".join(rng.choice(words) for _ in range(20)) + f" {i}."
            data.append({"prompt": f"Tell me about item {i % 5000}.", "completion": text})
            if i % 10 == 0:  # one in ten planted again, a tenth of those with a word changed
                data.append(dict(data[-1]) if i % 100 else {**data[-1], "completion": text.replace(" ", "  ", 1)})
        path = os.path.join(folder, "big.jsonl")
        with open(path, "w") as f:
            f.writelines(json_.dumps(r) + "\n" for r in data)
        from posttrain_dist import data as data_

        dataset = data_.load_source(path)
        for name, rules in (("duplicates (default)", filtering.Rules()),
                            ("duplicates + length + truncated + refusals", filtering.Rules(
                                min_response_words=5, drop_empty_or_truncated=True, refusals=[])),
                            ("duplicates + select 1000 (hashing embeddings)", filtering.Rules(
                                select=1000, embedding_model="hashing"))):
            start = time_.perf_counter()
            keep, _ = filtering.apply(dataset, rules)
            took = time_.perf_counter() - start
            rows.append({"work": f"filter {len(dataset)} rows: {name}", "rows": len(dataset), "seconds": took,
                         "rows/s": len(dataset) / took, "kept": len(keep)})
            print(rows[-1], flush=True)
        figures["filter rows/s, 100k rows, duplicates"] = rows[-3]["rows/s"]
    write("curation", figures, rows, [
        "distill: SmolLM2-135M-Instruct answers 32 prompts (32 new tokens, greedy) in batches of 8 or one at a time, "
        "on this CPU; the better of two runs each. filter: 110k synthetic rows (100k distinct, 10k planted "
        "duplicates, some with white space changed); exact and near duplicates by MinHash LSH are linear in the "
        "rows; k-center selection is rows x selected.",
    ])


def sft_preparation(args) -> None:
    import preparation

    preparation.sft_preparation(args, write)


def whole_process(args) -> None:
    import preparation

    preparation.whole_process(args, write, measure)


BENCHMARKS = {"memory": memory, "sft-overhead": sft_overhead, "packing": packing, "grpo-generation": grpo_generation,
              "curation": curation, "sft-preparation": sft_preparation, "whole-process": whole_process}
GPU_PARTS = ("smoke", "qlora", "speed", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=[*BENCHMARKS, "all", "gpu"])
    parser.add_argument("parts", nargs="*", help=f"gpu: the parts to run ({', '.join(GPU_PARTS)}; default: all but qlora)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", type=lambda text: [int(x) for x in text.split(",")], default=[10_000, 100_000, 500_000],
                        help="sft-preparation: the numbers of rows, comma-separated")
    args = parser.parse_args()
    if args.name == "gpu":
        import gpu

        gpu.run(args.parts or ["smoke", "speed", "memory"])
        return
    for name in (BENCHMARKS if args.name == "all" else [args.name]):
        print(f"== {name}", flush=True)
        BENCHMARKS[name](args)


if __name__ == "__main__":
    main()
