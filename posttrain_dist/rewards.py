"""Reward functions for GRPO and best-of-K curation, and the registry that names them.

A reward takes the completions of a batch plus every other dataset column as keyword lists, and
returns one float per completion (or None where it does not apply), as trl's GRPOTrainer calls it:

    def reward(completions, **kwargs) -> list[float | None]

A completion is a string, or a list of messages for conversational prompts. In a recipe YAML a
reward is named by its key in `REWARDS`, or by `package.module:function` for your own. The name
the logs show is the function's name.
"""

from __future__ import annotations

import importlib
import re
from fractions import Fraction

from .errors import ConfigError


def text_of(completion) -> str:
    """The text of a completion, plain or conversational (the last message's content)."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return completion


# ---------------------------------------------------------------- reading numbers

_NUMBER = r"[-+−]?\s*(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*[-+]?\d+)?"
_FRAC = re.compile(r"\\d?frac\s*\{\s*([-+]?[\d.]+)\s*\}\s*\{\s*([-+]?[\d.]+)\s*\}")


def parse_number(text: str) -> Fraction | None:
    """A number written as an integer, decimal, fraction (3/4, \\frac{3}{4}), with commas or $ or %; else None."""
    text = text.strip().strip(".").replace("−", "-").replace("$", "").replace("\\%", "").replace("%", "")
    text = re.sub(r"\\(?:text|mathrm)\{[^}]*\}", "", text).replace("\\,", "").replace("\\!", "").strip()
    frac = _FRAC.fullmatch(text) or _FRAC.fullmatch(text.lstrip("-+"))
    if frac:
        value = Fraction(frac.group(1)) / Fraction(frac.group(2))
        return -value if text.startswith("-") else value
    if not re.fullmatch(_NUMBER, text):
        return None
    text = text.replace(" ", "").replace(",", "")
    try:
        if "/" in text:
            numerator, denominator = text.split("/")
            return Fraction(numerator) / Fraction(denominator)
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None  # truncated inside the box


def final_answer(text: str) -> str | None:
    """The answer a completion commits to: <answer>...</answer>, else the last \\boxed{}, else None."""
    tagged = re.findall(r"<answer>(.*?)</answer>", text, flags=re.DOTALL)
    if tagged:
        return tagged[-1].strip()
    return _boxed(text)


# ---------------------------------------------------------------- rewards


def math_answer(completions, answer, **kwargs) -> list[float]:
    """1.0 when the final answer (<answer>..</answer> or \\boxed{..}) equals the `answer` column as a number.

    Values are compared, not strings: 0.5, 1/2 and \\frac{1}{2} are equal. A completion with no
    final answer (malformed, or cut off before it closed the tag) scores 0.0, as does a wrong one.
    """
    scores = []
    for completion, gold in zip(completions, answer):
        given = final_answer(text_of(completion))
        expected = parse_number(str(gold))
        value = parse_number(given) if given is not None else None
        scores.append(1.0 if value is not None and expected is not None and value == expected else 0.0)
    return scores


_THINK_ANSWER = re.compile(r"^\s*<think>(?:(?!</?think>).)+</think>\s*<answer>(?:(?!</?answer>).)+</answer>\s*$", re.DOTALL)


def think_format(completions, **kwargs) -> list[float]:
    """1.0 for exactly `<think>...</think>` then `<answer>...</answer>`, both non-empty, nothing around; else 0.0."""
    return [1.0 if _THINK_ANSWER.match(text_of(c)) else 0.0 for c in completions]


def answer_tag(completions, **kwargs) -> list[float]:
    """1.0 when the completion holds one closed, non-empty `<answer>...</answer>`; a partial credit format reward."""
    return [1.0 if len(re.findall(r"<answer>\s*\S.*?</answer>", text_of(c), flags=re.DOTALL)) == 1 else 0.0
            for c in completions]


def overlong_penalty(completion_ids, max_completion_length: int = 256, buffer: int = 64, **kwargs) -> list[float]:
    """DAPO's soft over-long penalty: 0 up to `max_completion_length - buffer` tokens, then falling linearly
    to -1 at `max_completion_length` (where a completion is cut off)."""
    start = max_completion_length - buffer
    return [-min(1.0, max(0.0, (len(ids) - start) / buffer)) if buffer > 0 else -float(len(ids) >= max_completion_length)
            for ids in completion_ids]


REWARDS = {f.__name__: f for f in (math_answer, think_format, answer_tag, overlong_penalty)}


def resolve(name: str):
    """A reward function from its registry name or its `package.module:function` import path."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(f"reward {name!r}: cannot import {module_name!r} ({error}).") from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise ConfigError(f"reward {name!r}: {module_name} has no function {attribute!r}.")
        return function
    raise ConfigError(
        f"unknown reward {name!r}; registered: {', '.join(sorted(REWARDS))}, or give `package.module:function`."
    )
