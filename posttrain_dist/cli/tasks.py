"""`posttrain-dist tasks`: generated verifiable tasks (prompts plus the columns rewards check) to JSONL."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("tasks", help="write generated verifiable tasks (prompts + answer columns) to JSONL")
    p.add_argument("task", choices=["arithmetic", "countdown", "word-problems"])
    p.add_argument("--split", choices=["train", "test"], default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, help="rows (arithmetic train: repeats the pairs; countdown: puzzles)")
    p.add_argument("--low", type=int, default=1, help="arithmetic: smallest operand")
    p.add_argument("--high", type=int, default=20, help="arithmetic: largest operand")
    p.add_argument("--ops", default="+", help="arithmetic: operations among + - *")
    p.add_argument("--test-size", type=int, default=100, help="arithmetic: pairs held out of training")
    p.add_argument("--out", required=True)
    p.set_defaults(func=write_tasks)


def write_tasks(args) -> None:
    from .. import curation, tasks

    if args.task == "arithmetic":
        rows = tasks.arithmetic(args.split, args.seed, args.low, args.high, args.ops, args.test_size, args.size)
    else:
        rows = tasks.GENERATORS[args.task](args.split, args.seed, args.size)
    curation.write_jsonl(args.out, rows)
    print(f"{len(rows)} {args.task} problems ({args.split}, seed {args.seed}) written to {args.out}")
