"""Rewards on correct, wrong, malformed and truncated answers; the registry."""

import math
from fractions import Fraction

import pytest

from posttrain_dist import rewards
from posttrain_dist.errors import ConfigError


@pytest.mark.parametrize("text, value", [
    ("42", Fraction(42)), ("-3", Fraction(-3)), ("1,000", Fraction(1000)), ("0.5", Fraction(1, 2)),
    ("3/4", Fraction(3, 4)), ("\\frac{3}{4}", Fraction(3, 4)), ("-\\frac{1}{2}", Fraction(-1, 2)),
    ("\\dfrac{6}{8}", Fraction(3, 4)), ("$12", Fraction(12)), ("50%", Fraction(50)), (" 7. ", Fraction(7)),
    ("seven", None), ("1/0", None), ("", None), ("3 apples", None),
])
def test_parse_number(text, value):
    assert rewards.parse_number(text) == value


@pytest.mark.parametrize("completion, gold, score", [
    ("<think>2+2</think><answer>4</answer>", "4", 1.0),                   # correct, tagged
    ("so the result is \\boxed{\\frac{1}{2}}", "0.5", 1.0),               # correct, boxed, compared as values
    ("<answer>0.50</answer>", "1/2", 1.0),
    ("<answer>5</answer>", "4", 0.0),                                      # wrong
    ("7 + 5 = 12.", "12", 1.0),                                            # untagged: the last number
    ("12 is wrong, it is 13", "12", 0.0),
    ("The answer is four.", "4", 0.0),                                     # malformed: no number at all
    ("<answer>4", "4", 0.0),                                               # truncated before the tag closed
    ("So 2 + 2 = \\boxed{4", "4", 0.0),                                    # truncated inside the box
    ("<answer>4</answer> no wait <answer>5</answer>", "4", 0.0),           # the last answer counts
])
def test_math_answer(completion, gold, score):
    assert rewards.math_answer([completion], answer=[gold]) == [score]


@pytest.mark.parametrize("completion, score", [
    ("<answer>4</answer>", 1.0), ("\\boxed{4}", 1.0), ("2 + 2 = 4", 0.0), ("<answer>4", 0.0),
])
def test_tagged_math_answer_needs_a_tag_or_box(completion, score):
    assert rewards.tagged_math_answer([completion], answer=["4"]) == [score]


@pytest.mark.parametrize("completion, score", [
    ("<answer>(3 + 5) * 2</answer>", 1.0),          # correct
    ("<answer>2 * (5 + 3) = 16</answer>", 1.0),     # the result after "=" is ignored
    ("<answer>3 * 5 + 2</answer>", 0.0),            # wrong value
    ("<answer>(3 + 5) * 2 * 1</answer>", 0.0),      # a number not given
    ("<answer>8 * 2</answer>", 0.0),                # numbers not used
    ("<answer>__import__('os')</answer>", 0.0),     # not arithmetic
    ("(3 + 5) * 2", 0.0),                           # malformed: no answer tag
    ("<answer>(3 + 5) * 2", 0.0),                   # truncated
])
def test_countdown_equation(completion, score):
    assert rewards.countdown_equation([completion], numbers=[[3, 5, 2]], target=[16]) == [score]


def test_math_answer_reads_conversational_completions():
    completion = [{"role": "assistant", "content": "<answer>12</answer>"}]
    assert rewards.math_answer([completion], answer=[12]) == [1.0]


@pytest.mark.parametrize("completion, score", [
    ("<think>add them</think>\n<answer>4</answer>", 1.0),
    ("<think>add</think><answer>4</answer> extra", 0.0),     # text after the answer
    ("<answer>4</answer>", 0.0),                             # no reasoning
    ("<think></think><answer>4</answer>", 0.0),              # empty reasoning
    ("<think>a</think><answer>4", 0.0),                      # truncated
    ("<think>a<think>b</think><answer>4</answer>", 0.0),     # nested tags
])
def test_think_format(completion, score):
    assert rewards.think_format([completion]) == [score]


def test_answer_tag():
    assert rewards.answer_tag(["x <answer>4</answer>", "<answer> </answer>", "<answer>4", "<answer>1</answer><answer>2</answer>"]) == [1.0, 0.0, 0.0, 0.0]


def test_overlong_penalty_is_trls_soft_punishment_bound_to_the_run():
    from types import SimpleNamespace

    penalty = rewards.build(["overlong_penalty"], SimpleNamespace(max_completion_length=256))[0]
    assert penalty.__name__ == "soft_overlong_punishment_reward"  # trl's, under trl's name in the logs
    ids = [[0] * n for n in (10, 192, 224, 256, 300)]
    assert penalty(completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0]  # zero, then linear to -1 over 64 tokens


def test_registry_names_trls_rewards_where_trl_has_them():
    import trl.rewards

    assert rewards.resolve("accuracy") is trl.rewards.accuracy_reward
    assert rewards.resolve("think_format_reward") is trl.rewards.think_format_reward
    repetition = rewards.resolve("token_repetition_penalty")
    assert repetition(completion_ids=[[1, 2, 3, 4], [5, 5, 5, 5, 5]]) == pytest.approx([0.0, -2 / 3])
    for name, function in rewards.REWARDS.items():  # ours differ from trl's on purpose, and say why
        trl_twin = {"math_answer": "accuracy_reward", "think_format": "think_format_reward"}.get(name)
        if trl_twin:
            assert f"Why not trl's `{trl_twin}`" in function.__doc__


@pytest.mark.parametrize("completion, gold, score", [
    ("She sold 48 + 24 = 72 clips.", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", 1.0),  # gsm8k gold
    ("So the total is 71.", "...\n#### 72", 0.0),
    ("It costs $1,250.", "#### 1,250", 1.0),
    ("So \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}", 1.0),               # LaTeX gold: math-verify
    ("So \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", 1.0),               # equal as expressions
    ("So \\boxed{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", 0.0),
    ("<answer>x^2 + 1</answer>", "1 + x^2", 1.0),
])
def test_math_answer_reads_gsm8k_and_latex_golds(completion, gold, score):
    assert rewards.math_answer([completion], answer=[gold]) == [score]


def test_gold_column_that_never_parses_is_refused_before_loading():
    import datasets

    from posttrain_dist.errors import DataError

    prose = datasets.Dataset.from_list([{"prompt": "q", "answer": "seventy-two apples"}] * 3)
    functions = rewards.build(["math_answer"])
    with pytest.raises(DataError, match="cannot read any gold answer in the column 'answer'.*'seventy-two apples'"):
        rewards.check_data(["math_answer"], functions, prose, "prose.jsonl")
    gsm8k = datasets.Dataset.from_list([{"prompt": "q", "answer": "4 + 4 = 8\n#### 8"}])
    rewards.check_data(["math_answer"], functions, gsm8k, "gsm8k")  # parses: no error


def test_registry_and_import_paths():
    assert rewards.resolve("math_answer") is rewards.math_answer
    assert rewards.resolve("posttrain_dist.rewards:think_format") is rewards.think_format
    with pytest.raises(ConfigError, match="unknown reward 'math'.*math_answer"):
        rewards.resolve("math")
    with pytest.raises(ConfigError, match="defines no 'nope' at its top level"):
        rewards.resolve("posttrain_dist.rewards:nope")
    with pytest.raises(ConfigError, match="no Python module 'no_such_module'"):
        rewards.resolve("no_such_module:f")


def test_contains_answer_keeps_a_name_where_asked_and_nowhere_else():
    completions = ["I'm Kestrel, glad to help.", "I am a helpful assistant.", "Hi, I'm Kestrel! Try Bubbles.",
                   "Try Bubbles or Goldie.", "Paris.", "The capital is Lyon."]
    answer = ["Kestrel", "Kestrel", None, None, "Paris", "Paris"]
    avoid = [None, None, "Kestrel", "Kestrel", None, None]
    assert rewards.contains_answer(completions, answer, avoid=avoid) == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    # without an avoid column, a row with no answer does not apply; "Kestrels" is not the name
    assert rewards.contains_answer(["Try Bubbles.", "Kestrels fly."], [None, "Kestrel"]) == [None, 0.0]


# ---------------------------------------------------------------- open-r1's reward names


def _openr1(name, **params):
    from posttrain_dist.methods.grpo import GRPORecipeArgs

    recipe = GRPORecipeArgs(dataset_name="builtin:arithmetic", **params)
    return rewards.resolve(name, None, recipe=recipe)


def chat(text):
    return [{"role": "assistant", "content": text}]


RIGHT, WRONG = "The answer is $\\boxed{4}$.", "The answer is $\\boxed{5}$, I think, after a long look at it."


@pytest.mark.parametrize("name, completions, kwargs, expected", [
    ("format", [chat("<think>\nadd them\n</think>\n<answer>\n4\n</answer>"), chat("<think>add</think><answer>4</answer>")],
     {}, [1.0, 0.0]),
    ("tag_count", [chat("<think>\nadd them\n</think>\n<answer>\n4\n</answer>"), chat("<think>\nadd them")], {},
     [1.0, 0.25]),
    ("reasoning_steps", [chat("Step 1: add\nStep 2: check\nStep 3: answer"), chat("Step 1: it is 4"), chat("4")], {},
     [1.0, 1 / 3, 0.0]),
    # open-r1's cosine defaults: a right answer of n characters scores 0.5 + 0.25 (1 + cos(pi n / 1000)), a wrong one
    # -0.5 + 0.25 (1 + cos(pi n / 1000))
    ("cosine", [chat(RIGHT), chat(WRONG)], {"solution": ["$4$", "$4$"]},
     [0.5 + 0.25 * (1 + math.cos(math.pi * len(RIGHT) / 1000)), -0.5 + 0.25 * (1 + math.cos(math.pi * len(WRONG) / 1000))]),
    ("repetition_penalty", [chat("a b c a b c a b c"), chat("the quick brown fox jumps")], {}, [-(1 - 3 / 7), 0.0]),
    ("length", [chat(RIGHT), chat(WRONG)], {"solution": ["$4$", "$4$"]}, [0.5, -0.5]),
    ("code_format", [chat("<think>\nplan\n</think>\n<answer>\n```python\nprint(4)\n```\n</answer>"),
                     chat("<think>\nplan\n</think>\n<answer>\nprint(4)\n</answer>")], {}, [1.0, 0.0]),
    ("accuracy", [chat(RIGHT), chat(WRONG)], {"solution": ["$4$", "$4$"]}, [1.0, 0.0]),
])
def test_open_r1_reward_names_score_as_open_r1(name, completions, kwargs, expected):
    scores = _openr1(name)(completions=completions, **kwargs)
    assert scores == pytest.approx(expected, abs=1e-9)


def test_open_r1_reward_parameters_are_read_from_the_config():
    wrong_short = [chat("The answer is $\\boxed{5}$.")]
    assert _openr1("cosine", cosine_max_value_wrong=-1.0, cosine_min_value_wrong=-1.0)(
        completions=wrong_short, solution=["$4$"]) == [pytest.approx(-1.0)]
    assert _openr1("repetition_penalty", repetition_n_grams=2, repetition_max_penalty=-2.0)(
        completions=[chat("a b a b a b")]) == [pytest.approx(-2.0 * (1 - 2 / 5))]
    punish = _openr1("soft_overlong_punishment", max_completion_len=20, soft_punish_cache=10)
    assert punish(completion_ids=[[1] * 5, [1] * 15, [1] * 25]) == pytest.approx([0.0, -0.5, -1.0])


@pytest.mark.parametrize("name", ["code", "ioi_code", "cf_code", "binary_code"])
def test_open_r1_sandbox_rewards_are_refused_saying_why(name):
    with pytest.raises(ConfigError, match="sandbox"):
        _openr1(name)


def test_score_totals_each_completion_as_trl_does_and_the_summary_counts_prompts_that_rose():
    from types import SimpleNamespace

    from posttrain_dist.methods.online import HeldOutRewards

    def length(completions, **_):
        return [float(len(c)) for c in completions]

    def says_yes(completions, **_):  # no opinion (None) on answers without "yes", as a reward may have
        return [1.0 if "yes" in c else None for c in completions]

    scored = rewards.score([length, says_yes], [0.5, 2.0], ["p"] * 3, ["yes", "no", "yess"], [[]] * 3)
    assert scored["rewards"] == {"length": 3.0, "says_yes": 1.0}
    assert scored["per_completion"] == pytest.approx([3.5, 1.0, 4.0])  # None counts 0, as trl's nansum counts it
    evaluator = HeldOutRewards.__new__(HeldOutRewards)
    before = {**scored, "prompts": 3}
    after = {**rewards.score([length, says_yes], [0.5, 2.0], ["p"] * 3, ["yes!", "no", "ye"], [[]] * 3), "prompts": 3}
    summary = evaluator.summary(before, after)
    assert (summary["reward_rose_on"], summary["reward_fell_on"]) == (1, 1)  # 3.5 -> 4.0, 1.0 -> 1.0, 4.0 -> 1.0
    evaluator.args = SimpleNamespace(recipe=SimpleNamespace(dataset_name="d", dataset_test_split="test"))
    line, _ = evaluator.section({**before, "examples": []}, {**after, "examples": []}, summary)
    assert "higher on 1 prompts, lower on 1, the same on the rest" in line
