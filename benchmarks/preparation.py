"""Benchmarks of data preparation and of the whole process, against plain trl on the same rows and settings.

    python benchmarks/run.py sft-preparation     SFT conversations of 2-4 turns: 10k, 100k, 500k rows (--sizes)
    python benchmarks/run.py whole-process       DPO and GRPO recipes vs trl: whole process and training alone

sft-preparation: seconds from the raw `messages` JSONL to token ids and labels, ours (posttrain_dist.data +
sequences: every row checked, one pass per conversation) against trl's SFTTrainer preparing the same file (its
constructor, less that of a one-row data set), and the tokens each trains per epoch. Each side runs in its own
process (`python benchmarks/preparation.py SIDE ROWS`), the sides alternating.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = "the a capital of france paris how many legs does spider have eight four answer because is it why".split()


def conversations(path: str, rows: int, seed: int = 0) -> str:
    """`rows` conversations of 2 to 4 exchanges, questions of 5-30 words and answers of 5-60, in a JSONL file."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(rows):
            messages = []
            for t in range(rng.choice((2, 3, 4))):
                question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
                answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
                messages += [{"role": "user", "content": f"Question {i}.{t}: {question}?"},
                             {"role": "assistant", "content": answer + "."}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def side(which: str, data_file: str) -> dict:
    """One side, in this process: seconds to prepare, rows and tokens per epoch."""
    from posttrain_dist import checks, data, modeling, sequences
    from posttrain_dist.methods.sft import METHOD

    args = checks.parse("sft", ["--model_name_or_path", "tiny-random-llama", "--dataset_name", data_file,
                                "--output_dir", "/tmp/posttrain-dist-bench-unused", "--report_to", "none",
                                "--max_length", "2048"])
    tokenizer = modeling.load_tokenizer(args.model)
    if which == "ours":
        start = time.perf_counter()
        train, _ = data.load_for(METHOD, args.recipe, seed=42)
        prepared = sequences.tokenize(train, tokenizer, args.training, args.recipe.multi_turn, "benchmark")
    else:
        import datasets
        from transformers import AutoModelForCausalLM
        from trl import SFTTrainer

        model = AutoModelForCausalLM.from_pretrained(modeling.resolve_model("tiny-random-llama"))
        one = datasets.Dataset.from_list([json.loads(open(data_file).readline())])
        start = time.perf_counter()
        SFTTrainer(model=model, args=args.training, train_dataset=one, processing_class=tokenizer)
        fixed = time.perf_counter() - start  # the constructor's own cost, without data
        start = time.perf_counter() + fixed
        loaded = datasets.load_dataset("json", data_files=data_file, split="train")
        prepared = SFTTrainer(model=model, args=args.training, train_dataset=loaded,
                              processing_class=tokenizer).train_dataset
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(prepared), "tokens": sum(len(ids) for ids in prepared["input_ids"]),
            "trained_tokens": sum(sum(x != -100 for x in labels) for labels in prepared["labels"])}


def _run_side(which: str, data_file: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, which, data_file], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "true"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCHMARK ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{which} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("BENCHMARK "):])


def sft_preparation(args, write) -> None:
    import tempfile

    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            path = conversations(os.path.join(folder, f"conversations{size}.jsonl"), size)
            rounds = args.rounds if size < 500_000 else 1
            for round_ in range(rounds):
                for which in ("ours", "trl"):
                    result = _run_side(which, path)
                    rows.append({"rows": size, "side": which, "round": round_, "seconds": result["seconds"],
                                 "s per 100k rows": result["seconds"] / size * 100_000, "rows trained": result["rows"],
                                 "tokens per epoch": result["tokens"], "trained tokens": result["trained_tokens"]})
                    print(rows[-1], flush=True)
            ours = statistics.median(r["seconds"] for r in rows if r["rows"] == size and r["side"] == "ours")
            trl = statistics.median(r["seconds"] for r in rows if r["rows"] == size and r["side"] == "trl")
            figures[f"{size} rows: ours / trl preparation time (goal <= 1.0)"] = ours / trl
            same = {r["tokens per epoch"] for r in rows if r["rows"] == size}
            figures[f"{size} rows: same tokens per epoch on both sides"] = len(same) == 1
    write("sft-preparation", figures, rows, [
        "Conversations of 2 to 4 exchanges (synthetic, JSONL). ours: reading, checking every row and tokenizing each "
        "conversation once (every assistant turn trained, no prompt token); trl: SFTTrainer preparing the same file "
        "(conversations tokenized whole, every token trained: trl trains on the prompts unless the template has "
        "generation markers). Both sides train every conversation once: the same rows and tokens per epoch; the "
        "`trained tokens` column shows where the loss falls. Before, our recipe split each conversation into one "
        "example per assistant turn (33 % more rows at 2-4 turns, the early turns run again for every later one).",
    ])


def whole_process(args, write, measure) -> None:
    """DPO and GRPO: our recipe (with its before/after evaluation) against trl's trainer called directly, on the same
    rows and settings; the whole process (load, train, save, evaluate) next to the training alone."""
    import tempfile

    from posttrain_dist import modeling, tasks

    model = modeling.resolve_model("smollm2-135m-instruct")
    quiet = ["--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1",
             "--seed", "42", "--bf16", "false", "--max_steps", "4", "--learning_rate", "1e-6",
             "--lr_scheduler_type", "constant", "--warmup_steps", "0"]
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as folder:
        prefs = os.path.join(folder, "prefs.jsonl")
        with open(prefs, "w") as f:
            for i in range(64):
                f.write(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                                    "chosen": [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}],
                                    "rejected": [{"role": "assistant", "content": f"It is {2 * i + 3}."}]}) + "\n")
        sums = os.path.join(folder, "sums.jsonl")
        with open(sums, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in tasks.arithmetic("train")[:64])
        work = {"dpo": (prefs, ["--per_device_train_batch_size", "4", "--max_length", "128", "--beta", "0.1"],
                        ["--eval_prompts", "What is 2 plus 2?", "Name a colour."]),
                "grpo": (sums, ["--per_device_train_batch_size", "8", "--num_generations", "4",
                                "--max_completion_length", "24", "--temperature", "0.7", "--beta", "0.0"],
                         ["--reward_funcs", "math_answer", "--dataset_test_split", "", "--eval_prompts",
                          "What is 2 plus 2?"])}
        for method, (data_file, settings, ours_only) in work.items():
            for round_ in range(args.rounds):
                for which in ("ours", "trl"):
                    out = os.path.join(folder, f"{method}{which}{round_}")
                    if which == "ours":
                        run = measure("recipe", method, "--model_name_or_path", model, "--dataset_name", data_file,
                                      "--output_dir", out, *settings, *quiet, *ours_only)
                        evaluation = json.load(open(os.path.join(out, "evaluation.json"))).get("seconds")
                    else:
                        run = measure(f"plain-{method}", model, data_file, out, *settings, *quiet)
                        evaluation = 0.0
                    rows.append({"method": method, "side": which, "round": round_, "whole process s": run["wall"],
                                 "training s": run["train_runtime"], "evaluation s": evaluation})
                    print(rows[-1], flush=True)
            for column in ("whole process s", "training s"):
                ours = statistics.median(r[column] for r in rows if r["method"] == method and r["side"] == "ours")
                trl = statistics.median(r[column] for r in rows if r["method"] == method and r["side"] == "trl")
                figures[f"{method}: ours / trl, {column[:-2]}"] = ours / trl
    write("whole-process", figures, rows, [
        "4 optimizer steps of SmolLM2-135M-Instruct; ours runs its before/after evaluation too (a few eval prompts, "
        "and for GRPO the held-out reward), which the `evaluation s` column times (report.md says it too); trl's "
        "trainer called directly evaluates nothing. The training alone is the like-for-like comparison.",
    ])


if __name__ == "__main__":
    print("BENCHMARK " + json.dumps(side(sys.argv[1], sys.argv[2])), flush=True)
