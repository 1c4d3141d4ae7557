"""Verifiable tasks generated locally, with a seed so runs repeat: prompts plus the columns rewards check.

- arithmetic: "What is 12 + 7?" with `answer` "19"; every (a, b) pair in a range is listed once,
  shuffled by the seed, and the held-out pairs never appear in training.
- countdown: reach a target from 3 or 4 numbers with + - * /, each number used once; `numbers` and
  `target` columns, checked by `rewards.countdown_equation`.

They are built-in data sources (`builtin:arithmetic`, `builtin:countdown`, with `train` and `test`
splits) and `posttrain-dist tasks` writes other sizes and seeds to JSONL.
"""

from __future__ import annotations

import itertools
import random

ARITHMETIC_PROMPT = "What is {a} {op} {b}?"
COUNTDOWN_PROMPT = (
    "Using the numbers {numbers}, make {target}. Use each number exactly once, with + - * / and parentheses. "
    "Write the equation inside <answer></answer>, for example <answer>(1 + 2) * 3</answer>."
)


def arithmetic(split: str = "train", seed: int = 0, low: int = 1, high: int = 20, ops: str = "+",
               test_size: int = 100, train_size: int | None = None) -> list[dict]:
    """Problems `a op b` over every pair in [low, high]; `test_size` pairs are held out from training."""
    problems = [(a, op, b) for op in ops for a, b in itertools.product(range(low, high + 1), repeat=2)]
    random.Random(seed).shuffle(problems)
    held, rest = problems[:test_size], problems[test_size:]
    if split == "test":
        chosen = held
    elif split == "train":
        chosen = rest if train_size is None else [rest[i % len(rest)] for i in range(train_size)]
    else:
        raise ValueError(f"split must be train or test, got {split!r}")
    value = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    shown = {"+": "+", "-": "-", "*": "×"}
    return [{"prompt": [{"role": "user", "content": ARITHMETIC_PROMPT.format(a=a, op=shown[op], b=b)}],
             "answer": str(value[op](a, b))} for a, op, b in chosen]


def _reachable(numbers: list[int], rng: random.Random) -> tuple[int, str]:
    """A target reachable from `numbers` (each once) and one equation reaching it, by a random build."""
    order = numbers[:]
    rng.shuffle(order)
    expression, value = str(order[0]), order[0]
    for n in order[1:]:
        op = rng.choice("+-*")
        if op == "-" and value - n < 0:
            op = "+"
        value = {"+": value + n, "-": value - n, "*": value * n}[op]
        expression = f"({expression} {op} {n})"
    return value, expression


def countdown(split: str = "train", seed: int = 0, size: int | None = None) -> list[dict]:
    """Countdown puzzles with a guaranteed solution; the test split uses another seed stream."""
    rng = random.Random(f"{seed}-{split}")
    size = size or (1000 if split == "train" else 100)
    rows = []
    for _ in range(size):
        numbers = [rng.randint(1, 12) for _ in range(rng.choice((3, 4)))]
        target, solution = _reachable(numbers, rng)
        rows.append({"prompt": [{"role": "user", "content": COUNTDOWN_PROMPT.format(numbers=numbers, target=target)}],
                     "numbers": numbers, "target": target, "solution": solution})
    return rows


GENERATORS = {"arithmetic": arithmetic, "countdown": countdown}
