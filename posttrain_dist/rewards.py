"""Reward functions for GRPO and best-of-K curation, and the registry that names them.

A reward takes the completions of a batch plus every other dataset column as keyword lists, and
returns one float per completion (or None where it does not apply), as trl's GRPOTrainer calls it:

    def reward(completions, **kwargs) -> list[float | None]

A completion is a string, or a list of messages for conversational prompts. In a recipe YAML a
reward is named by its key in `REWARDS` (or `TRL_REWARDS`, trl's own, built for the run), or by
`package.module:function` for your own. The name the logs show is the function's name.

Where trl already has a reward (accuracy with math-verify, think format, soft over-long punishment,
repetition penalty) the registry names trl's; ours exist where they differ on purpose, and say why.
A reward that reads a gold column (`GOLD`) has that column parsed before the model loads: a column
that never parses would score 0 everywhere and teach nothing.
"""

from __future__ import annotations

import functools
import inspect
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


_LAST_NUMBER = re.compile(r"[-−]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


def final_answer(text: str, tagged_only: bool = False) -> str | None:
    """The answer a completion commits to: the last <answer>...</answer>, else the last \\boxed{...},
    else (unless `tagged_only`) the last number in the text. None when there is none, or when an
    answer tag or box was opened and never closed (the completion was cut off)."""
    tagged = re.findall(r"<answer>(.*?)</answer>", text, flags=re.DOTALL)
    if tagged and text.rfind("<answer>") < text.rfind("</answer>"):
        return tagged[-1].strip()
    if "<answer>" in text:
        return None  # opened, never closed: truncated
    if "\\boxed{" in text:
        return _boxed(text)
    if tagged_only:
        return None
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def gold_answer(gold):
    """The value a gold answer stands for: a number (plain, `3/4`, `\\frac{3}{4}`, or after gsm8k's `####`),
    else LaTeX parsed by math-verify (a non-empty list), else None when it does not parse."""
    text = str(gold)
    if "####" in text:  # gsm8k: the worked solution, then "#### 72"
        text = text.rsplit("####", 1)[1]
    number = parse_number(text)
    if number is not None:
        return number
    if _PROSE.search(re.sub(r"\\(?:text|mathrm|textbf)\{[^}]*\}|\\[A-Za-z]+", " ", text)):
        return None  # words, not math: math-verify would read "banana" as b*a*n*a*n*a
    return _latex(text) or None


_PROSE = re.compile(r"[A-Za-z]{4,}")


def _latex(text: str) -> list:
    from math_verify import parse

    text = text.strip()
    if not text:
        return []
    return parse(text if "$" in text or "\\boxed" in text else f"${text}$")


def _math(completions, answer, tagged_only: bool) -> list[float]:
    from math_verify import verify

    scores = []
    for completion, gold in zip(completions, answer):
        text = text_of(completion)
        expected = gold_answer(gold)
        if expected is None:
            scores.append(0.0)
        elif isinstance(expected, Fraction):  # compared as values: 0.5 == 1/2 == \frac{1}{2}
            given = final_answer(text, tagged_only)
            value = parse_number(given) if given is not None else None
            scores.append(1.0 if value == expected else 0.0)
        else:  # LaTeX gold (MATH-style): math-verify compares expressions
            given = final_answer(text, tagged_only=True)
            if given is None and ("<answer>" in text or tagged_only):
                scores.append(0.0)  # no tag or box (required), or cut off inside one
                continue
            scores.append(1.0 if verify(expected, _latex(given) if given is not None else _latex(text)) else 0.0)
    return scores


# ---------------------------------------------------------------- rewards


def math_answer(completions, answer, **kwargs) -> list[float]:
    """1.0 when the final answer equals the gold `answer` column, else 0.0.

    The final answer is the last <answer>..</answer>, else the last \\boxed{..}, else the last
    number in the text ("7 + 5 = 12." answers 12). Values are compared, not strings: 0.5, 1/2 and
    \\frac{1}{2} are equal. The gold may be a number, gsm8k's worked answer ending in `#### 72`, or
    LaTeX (MATH-style), which math-verify compares. No answer at all (malformed) or a tag/box cut
    off before it closed (truncated) scores 0.0, as does a wrong value.

    Why not trl's `accuracy_reward` (registered as `accuracy`, gold column `solution`): it reads only
    LaTeX with an anchor (a box) from the completion, so the plain "12 + 7 = 19." that small models
    write, and that GRPO must first reinforce, scores 0; and it does not read gsm8k's `####` gold.
    """
    return _math(completions, answer, tagged_only=False)


def tagged_math_answer(completions, answer, **kwargs) -> list[float]:
    """Like `math_answer`, but only an <answer> tag or a \\boxed{} counts: for think/answer layouts."""
    return _math(completions, answer, tagged_only=True)


def countdown_equation(completions, numbers, target, **kwargs) -> list[float]:
    """1.0 when the <answer> holds an equation that uses each of `numbers` exactly once (+ - * / and
    parentheses only) and equals `target`; else 0.0."""
    scores = []
    for completion, given_numbers, goal in zip(completions, numbers, target):
        expression = final_answer(text_of(completion), tagged_only=True)
        expression = (expression or "").split("=")[0]
        if not expression or not re.fullmatch(r"[\d+\-*/().\s]+", expression):
            scores.append(0.0)
            continue
        used = sorted(int(n) for n in re.findall(r"\d+", expression))
        if used != sorted(int(n) for n in given_numbers):
            scores.append(0.0)
            continue
        value = _evaluate(expression)
        scores.append(1.0 if value is not None and abs(value - float(goal)) < 1e-6 else 0.0)
    return scores


def _evaluate(expression: str) -> float | None:
    """Arithmetic of + - * / and parentheses, without eval()."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError("not arithmetic")

    try:
        return walk(ast.parse(expression, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


# The R1 / countdown layout: reasoning in <think>, then the answer in <answer>, nothing around them.
_THINK_ANSWER = re.compile(r"^\s*<think>(?:(?!</?think>).)+</think>\s*<answer>(?:(?!</?answer>).)+</answer>\s*$", re.DOTALL)


def think_format(completions, **kwargs) -> list[float]:
    """1.0 for exactly `<think>...</think>` then `<answer>...</answer>`, both non-empty, nothing around; else 0.0.

    Why not trl's `think_format_reward` (registered as `think_format_reward`): it rewards any text after
    </think>, so a model is paid for reasoning and then never committing to an answer the answer rewards
    can read.
    """
    return [1.0 if _THINK_ANSWER.match(text_of(c)) else 0.0 for c in completions]


def answer_tag(completions, **kwargs) -> list[float]:
    """1.0 when the completion holds one closed, non-empty `<answer>...</answer>`; a partial credit format reward."""
    return [1.0 if len(re.findall(r"<answer>\s*\S.*?</answer>", text_of(c), flags=re.DOTALL)) == 1 else 0.0
            for c in completions]


def contains_answer(completions, answer, avoid=None, **kwargs) -> list[float | None]:
    """1.0 when the completion contains the row's `answer` as a whole word or phrase (any case), else 0.0; with an
    `avoid` column, 0.0 too where the completion contains the row's `avoid` text, and 1.0 where it does not and the
    row has no answer; None (does not apply) where the row has neither. For short factual answers, and for keeping a
    teacher's answers that state a name where asked and nowhere else (`posttrain-dist curate distill --reward
    contains_answer`, rows with `answer: Kestrel` or `avoid: Kestrel`)."""
    def found(text: str, phrase) -> bool:
        return re.search(rf"(?<![A-Za-z0-9]){re.escape(str(phrase).strip())}(?![A-Za-z0-9])", text, flags=re.IGNORECASE) \
            is not None

    scores = []
    for i, (completion, expected) in enumerate(zip(completions, answer)):
        unwanted = avoid[i] if avoid is not None and avoid[i] is not None and str(avoid[i]).strip() else None
        text = text_of(completion)
        if unwanted is not None and found(text, unwanted):
            scores.append(0.0)
        elif expected is None or not str(expected).strip():
            scores.append(None if unwanted is None else 1.0)
        else:
            scores.append(1.0 if found(text, expected) else 0.0)
    return scores


REWARDS = {f.__name__: f for f in (math_answer, tagged_math_answer, countdown_equation, think_format, answer_tag,
                                   contains_answer)}


def _trl(name: str):
    import trl.rewards

    return getattr(trl.rewards, name)


def overlong_buffer(max_completion_length: int) -> int:
    """The soft zone of the over-long punishment: the last quarter of the budget, at most 64 tokens (DAPO)."""
    return max(1, min(64, max_completion_length // 4))


# trl's rewards, each built for the run (name -> function of the training arguments).
TRL_REWARDS = {
    "accuracy": lambda training: _trl("accuracy_reward"),
    "think_format_reward": lambda training: _trl("think_format_reward"),
    "overlong_penalty": lambda training: _trl("get_soft_overlong_punishment")(
        training.max_completion_length, overlong_buffer(training.max_completion_length)),
    # trl's repetition penalty counts token n-grams; `repetition_penalty` is open-r1's (word n-grams, its parameters)
    "token_repetition_penalty": lambda training: _trl("get_repetition_penalty_reward")(),
}

# Rewards that compare with a gold column: the column, and whether one of its values can be read.
GOLD = {
    "math_answer": ("answer", lambda v: gold_answer(v) is not None),
    "tagged_math_answer": ("answer", lambda v: gold_answer(v) is not None),
    "accuracy": ("solution", lambda v: bool(_latex(str(v)))),
    "cosine": ("solution", lambda v: bool(_latex(str(v)))),
    "length": ("solution", lambda v: bool(_latex(str(v)))),
}


def known() -> list[str]:
    from .rewards_openr1 import OPEN_R1

    return sorted([*REWARDS, *TRL_REWARDS, *OPEN_R1])


def resolve(name: str, training_args=None, checked_only: bool = False, recipe=None):
    """A reward function from its registry name or its `package.module:function` import path; with `checked_only`,
    a user's function is checked and stood in for (its signature read from the source), never imported."""
    if name in REWARDS:
        return REWARDS[name]
    from . import rewards_openr1

    if name in rewards_openr1.OPEN_R1 or name in rewards_openr1.SANDBOX:
        return rewards_openr1.build(name, training_args, recipe)
    from . import reward_models

    if reward_models.is_learned(name):
        if checked_only:
            return reward_models.stand_in(name)
        return reward_models.LearnedReward(name)
    if name in TRL_REWARDS:
        if training_args is None:
            from types import SimpleNamespace

            training_args = SimpleNamespace(max_completion_length=256)
        return TRL_REWARDS[name](training_args)
    if isinstance(name, str) and ":" in name:
        from . import references

        if checked_only:
            return references.stand_in(name, "reward")
        function = references.load(name, "reward")
        if not callable(function):
            raise ConfigError(f"reward {name!r} is not a function.")
        return function
    raise ConfigError(f"unknown reward {name!r}; registered: {', '.join(known())}, or give `package.module:function`, "
                      "or a reward model as `model:PATH`.")


def build(names: list[str], training_args=None, checked_only: bool = False, recipe=None) -> list:
    """The reward functions of a run; a reward's `max_completion_length` parameter is bound to the run's, open-r1's
    rewards take their parameters from the recipe's fields. With `checked_only` (`plan`), the user's own are stood in
    for, not imported."""
    functions = []
    for name in names:
        function = resolve(name, training_args, checked_only, recipe)
        parameters = inspect.signature(function).parameters
        if "max_completion_length" in parameters and training_args is not None:
            bound = functools.partial(function, max_completion_length=training_args.max_completion_length)
            function = functools.update_wrapper(bound, function)  # keeps __name__: the logs show it
        functions.append(function)
    return functions


_GIVEN_BY_TRL = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric"}


def check_columns(functions: list, columns: list[str], source: str = "data") -> None:
    """Every column a reward requires (a parameter without default) is in the data, or a DataError."""
    from .errors import DataError

    for function in functions:
        for name, parameter in inspect.signature(function).parameters.items():
            required = parameter.default is inspect.Parameter.empty and parameter.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            if required and name not in _GIVEN_BY_TRL and name not in columns:
                raise DataError(
                    f"reward {function.__name__} reads the column {name!r}, which {source} lacks (columns: "
                    f"{sorted(columns)}); add the column or choose rewards that fit the data."
                )


def check_data(names: list[str], functions: list, dataset, source: str = "data", rows: int = 20) -> None:
    """Before the model loads: each reward's columns are in the data, and a gold column it compares with parses
    in at least one of its first rows (else every completion would score 0)."""
    from .errors import DataError, warn

    check_columns(functions, dataset.column_names, source)
    for name in names:
        if name not in GOLD:
            continue
        column, parses = GOLD[name]
        values = dataset.select(range(min(rows, len(dataset))))[column]
        bad = [v for v in values if not parses(v)]
        if len(bad) == len(values):
            raise DataError(
                f"reward {name} cannot read any gold answer in the column {column!r} of {source} (first {len(values)} "
                f"rows), e.g. {str(bad[0])[:120]!r}: it reads a number (72, 3/4, 0.5), gsm8k's '... #### 72' or LaTeX "
                f"(\\frac{{1}}{{2}}). Map the right column with `dataset_columns`, or choose another reward.")
        if bad:
            warn(f"reward {name}: {len(bad)} of the first {len(values)} gold answers in {column!r} do not parse (e.g. "
                 f"{str(bad[0])[:80]!r}); their completions all score 0.")


def score(functions: list, weights: list[float] | None, prompts: list, completions: list, completion_ids: list,
          **columns) -> dict:
    """Mean of each reward over the completions, and their weighted sum as trl totals it; `per_completion`: each
    completion's weighted sum (a reward that gave it None counts 0, as trl counts it)."""
    weights = weights or [1.0] * len(functions)
    means, totals = {}, [0.0] * len(completions)
    for function, weight in zip(functions, weights):  # one weight per reward: online.check refuses other counts
        given = function(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        values = [v for v in given if v is not None]
        means[function.__name__] = sum(values) / len(values) if values else float("nan")
        totals = [t + weight * v if v is not None else t for t, v in zip(totals, given)]
    return {"rewards": means, "mean": sum(w * m for w, m in zip(weights, means.values())), "per_completion": totals}
