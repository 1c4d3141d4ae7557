"""`posttrain-dist eval MODEL --tasks ...`: lm-evaluation-harness tasks on a model, an adapter or a short name."""

from __future__ import annotations

import json


def add(sub) -> None:
    p = sub.add_parser("eval", help="run lm-evaluation-harness tasks on a model (a table, and JSON with --out)")
    p.add_argument("model", help="short name, model folder, or LoRA adapter folder (loaded on its base)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names or task YAML files")
    p.add_argument("--limit", type=int, help="rows per task (default: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", help="also write the results as JSON to this file")
    p.set_defaults(func=evaluate)


def evaluate(args) -> None:
    from .. import generation, harness
    from ..errors import ConfigError
    from ..safety import write_atomically

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--tasks names no task.")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1; got {args.limit}.")
    harness.check(tasks)  # before the model loads
    model, tokenizer = generation.load_for_generation(args.model)
    results = harness.run(model, tokenizer, tasks, args.limit, args.batch_size)
    print(generation.text_table(harness.table(results), ("task", "metric", "value", "stderr", "rows")))
    if args.out:
        write_atomically(args.out, json.dumps({"model": args.model, "results": results}, indent=1) + "\n")
        print(f"results: {args.out}")
