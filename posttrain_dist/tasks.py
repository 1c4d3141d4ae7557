"""Verifiable tasks generated locally, with a seed so runs repeat: prompts plus the columns rewards check.

- arithmetic: "What is 12 + 7?" with `answer` "19"; every (a, b) pair in a range is listed once,
  shuffled by the seed, and the held-out pairs never appear in training.
- countdown: reach a target from 3 or 4 numbers with + - * /, each number used once; `numbers` and
  `target` columns, checked by `rewards.countdown_equation`.
- word-problems: short arithmetic word problems with two- and three-digit numbers ("A crate holds 36 jars. How
  many jars are in 47 crates?"), `answer` column; the problems of the `calculator` tool environment (`tools`).

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


WORD_PROBLEMS = {
    "+": ["{name} has {a} {things} and gets {b} more. How many {things} does {name} have now?",
          "A shop sold {a} {things} in the morning and {b} in the afternoon. How many {things} did it sell in all?"],
    "-": ["{name} had {a} {things} and gave away {b}. How many {things} are left?",
          "A library owned {a} {things} and lost {b} of them. How many {things} does it own now?"],
    "*": ["A crate holds {b} {things}. How many {things} are in {a} crates?",
          "{name} buys {a} packs of {things} with {b} in each pack. How many {things} is that?"],
}
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
THINGS = ["apples", "pencils", "stamps", "marbles", "books", "cards", "shells", "bottles", "tickets", "coins"]
# The calculator environment's instruction, in each problem's system message.
CALCULATOR_SYSTEM = ("Solve the problem. Use the calculator tool for the arithmetic, then give the final answer as a "
                     "number.")


def word_problems(split: str = "train", seed: int = 0, size: int | None = None) -> list[dict]:
    """Word problems over two- and three-digit numbers (worth a calculator); the test split draws its own stream."""
    rng = random.Random(f"words-{seed}-{split}")
    rows = []
    for _ in range(size or (1000 if split == "train" else 100)):
        op = rng.choice("+-*")
        a, b = rng.randint(120, 990), rng.randint(12, 99)
        if op == "*":
            a, b = rng.randint(12, 99), rng.randint(12, 99)
        problem = rng.choice(WORD_PROBLEMS[op]).format(name=rng.choice(NAMES), things=rng.choice(THINGS), a=a, b=b)
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"prompt": [{"role": "system", "content": CALCULATOR_SYSTEM}, {"role": "user", "content": problem}],
                     "answer": str(answer)})
    return rows


EXPRESSION_CHARS = 200


def evaluate_expression(expression) -> float:
    """The value of an arithmetic expression a tool was given; ValueError (the tool refuses) when it is none."""
    from .rewards import _evaluate

    if not isinstance(expression, str) or len(expression) > EXPRESSION_CHARS:
        raise ValueError(f"give the expression as text of at most {EXPRESSION_CHARS} characters")
    value = _evaluate(expression)
    if value is None:
        raise ValueError(f"cannot evaluate {expression!r}: use numbers, + - * / and parentheses")
    return value


def shown_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: The expression to evaluate, with numbers, + - * / and parentheses, e.g. "(12 + 7) * 3".

    Returns:
        The value of the expression.
    """
    return shown_number(evaluate_expression(expression))


def word_problem_calls(split: str = "train", seed: int = 0, size: int | None = None) -> list[dict]:
    """Word problems solved with the calculator, as conversations for SFT (`builtin:word-problem-calls`): the
    assistant calls calculator("a op b"), the tool answers, the assistant states the number; each row carries the
    `tools` column (the calculator's schema) the template renders. A warm start before GRPO with tools."""
    import json
    import re

    from transformers.utils import get_json_schema

    rows = []
    for problem in word_problems(split, seed, size):
        a, b = (int(n) for n in re.findall(r"\d+", problem["prompt"][-1]["content"])[-2:])  # as the problem states them
        value = int(problem["answer"])
        op = "+" if a + b == value else "-" if a - b == value else "*"
        call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": f"{a} {op} {b}"}}}
        rows.append({"messages": [*problem["prompt"], {"role": "assistant", "content": "", "tool_calls": [call]},
                                  {"role": "tool", "name": "calculator", "content": str(value)},
                                  {"role": "assistant", "content": f"The answer is {value}."}],
                     "tools": json.dumps([get_json_schema(calculator)])})
    return rows


GENERATORS = {"arithmetic": arithmetic, "countdown": countdown, "word-problems": word_problems,
              "word-problem-calls": word_problem_calls}
