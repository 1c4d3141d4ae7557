"""open-r1's reward names, scoring as open-r1's rewards do (src/open_r1/rewards.py), with its parameters.

Configs copied from open-r1 name their rewards `accuracy`, `format`, `tag_count`, `reasoning_steps`,
`cosine`, `repetition_penalty`, `length`, `code_format` and `soft_overlong_punishment`, with parameters
such as `cosine_min_value_wrong` or `repetition_n_grams` at the top level of the config. Each name here is
built for a run from those parameters (`build(name, training, recipe)`), so such a config trains as it
did there. `accuracy` is trl's own reward, which is open-r1's. The rewards that run code in a sandbox
(`code`, `ioi_code`, `cf_code`, `binary_code`) are refused: posttrain-dist runs no sandbox.

Each reward reads a completion's text (`text_of`), and `cosine` and `length` the gold `solution` column
(LaTeX, compared by math-verify, a gold that does not parse scoring as right, as open-r1 does).
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError

SANDBOX = ("code", "ioi_code", "cf_code", "binary_code")


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def _correct(content: str, solution: str) -> bool:
    """Is the answer in `content` (a boxed or otherwise anchored LaTeX answer) the gold `solution`?"""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    gold = parse(solution, extraction_mode="first_match", extraction_config=[LatexExtractionConfig()])
    if not gold:
        return True  # open-r1 does not penalise an unparseable gold
    normalization = NormalizationConfig(nits=False, malformed_operators=False, basic_latex=True, equations=True,
                                        boxed=True, units=True)
    answer = parse(content, extraction_mode="first_match", extraction_config=[
        LatexExtractionConfig(normalization_config=normalization, boxed_match_priority=0,
                              try_extract_without_anchor=False)])
    try:
        return bool(verify(answer, gold))
    except Exception:  # math-verify's own failures score as wrong
        return False


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 for exactly `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`, else 0.0 (open-r1's `format`)."""
    pattern = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", re.DOTALL | re.MULTILINE)
    return [1.0 if pattern.match(_text(c)) else 0.0 for c in completions]


def tag_count_reward(completions, **kwargs) -> list[float]:
    """0.25 for each of `<think>\\n`, `\\n</think>\\n`, `\\n<answer>\\n`, `\\n</answer>` present exactly once."""
    tags = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")
    return [sum(0.25 for tag in tags if _text(c).count(tag) == 1) for c in completions]


def reasoning_steps_reward(completions, **kwargs) -> list[float]:
    """The share of three step markers ("Step 1:", a numbered line, a bullet, "First,", ...), at most 1.0."""
    pattern = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)")
    return [min(1.0, len(pattern.findall(_text(c))) / 3) for c in completions]


def cosine_scaled(min_value_wrong: float, max_value_wrong: float, min_value_correct: float, max_value_correct: float,
                  max_len: int):
    def cosine_scaled_reward(completions, solution, **kwargs) -> list[float]:
        """Right answers score more the shorter they are, wrong ones are punished less the longer they are: a cosine
        over the length (characters) up to `cosine_max_len`."""
        rewards = []
        for completion, gold in zip(completions, solution):
            content = _text(completion)
            right = _correct(content, gold)
            low, high = (min_value_correct, max_value_correct) if right else (max_value_wrong, min_value_wrong)
            rewards.append(float(low + 0.5 * (high - low) * (1.0 + math.cos(len(content) / max_len * math.pi))))
        return rewards

    return cosine_scaled_reward


def repetition(ngram_size: int, max_penalty: float):
    if max_penalty > 0:
        raise ConfigError(f"`repetition_max_penalty` is a penalty: 0 or below; got {max_penalty}.")

    def repetition_penalty_reward(completions, **kwargs) -> list[float]:
        """The share of repeated word n-grams times `repetition_max_penalty` (0 for an answer too short to have any)."""
        rewards = []
        for completion in completions:
            words = _text(completion).lower().split()
            grams = list(zip(*[words[i:] for i in range(ngram_size)]))
            rewards.append(0.0 if not grams else (1 - len(set(grams)) / len(grams)) * max_penalty)
        return rewards

    return repetition_penalty_reward


def len_reward(completions, solution, **kwargs) -> list[float]:
    """Kimi 1.5's length reward: within the group, 0.5 down to -0.5 from the shortest to the longest answer; a wrong
    answer gets no more than 0."""
    contents = [_text(c) for c in completions]
    right = [_correct(c, gold) for c, gold in zip(contents, solution)]
    lengths = [len(c) for c in contents]
    shortest, longest = min(lengths), max(lengths)
    if shortest == longest:
        return [0.0] * len(contents)
    rewards = []
    for length, ok in zip(lengths, right):
        value = 0.5 - (length - shortest) / (longest - shortest)
        rewards.append(float(value if ok else min(0.0, value)))
    return rewards


def code_format(language: str):
    pattern = re.compile(rf"^<think>\n.*?\n</think>\n<answer>\n.*?```{re.escape(language)}.*?```.*?\n</answer>$",
                         re.DOTALL | re.MULTILINE)

    def code_format_reward(completions, **kwargs) -> list[float]:
        """1.0 for open-r1's think/answer layout with a code block of `code_language` in the answer."""
        return [1.0 if pattern.match(_text(c)) else 0.0 for c in completions]

    return code_format_reward


def _soft_overlong(recipe):
    import trl.rewards

    return trl.rewards.get_soft_overlong_punishment(recipe.max_completion_len, recipe.soft_punish_cache)


# name -> function of (training arguments, recipe arguments)
OPEN_R1 = {
    "format": lambda training, recipe: format_reward,
    "tag_count": lambda training, recipe: tag_count_reward,
    "reasoning_steps": lambda training, recipe: reasoning_steps_reward,
    "cosine": lambda training, recipe: cosine_scaled(recipe.cosine_min_value_wrong, recipe.cosine_max_value_wrong,
                                                     recipe.cosine_min_value_correct, recipe.cosine_max_value_correct,
                                                     recipe.cosine_max_len),
    "repetition_penalty": lambda training, recipe: repetition(recipe.repetition_n_grams, recipe.repetition_max_penalty),
    "length": lambda training, recipe: len_reward,
    "code_format": lambda training, recipe: code_format(recipe.code_language),
    "soft_overlong_punishment": lambda training, recipe: _soft_overlong(recipe),
}


# open-r1's defaults for its parameters (its GRPOScriptArguments); GRPO's config fields take them from here
DEFAULTS = {"cosine_min_value_wrong": 0.0, "cosine_max_value_wrong": -0.5, "cosine_min_value_correct": 0.5,
            "cosine_max_value_correct": 1.0, "cosine_max_len": 1000, "repetition_n_grams": 3,
            "repetition_max_penalty": -1.0, "code_language": "python", "max_completion_len": 16384,
            "soft_punish_cache": 4096}


def build(name: str, training, recipe):
    if name in SANDBOX:
        raise ConfigError(f"reward {name!r} (open-r1's) runs the completions' code in a sandbox (E2B, Morph or "
                          "Piston), which posttrain-dist does not run; score code with a reward of your own "
                          "(`package.module:function`) or drop it.")
    from types import SimpleNamespace

    parameters = SimpleNamespace(**{key: getattr(recipe, key, default) for key, default in DEFAULTS.items()})
    return OPEN_R1[name](training, parameters)
