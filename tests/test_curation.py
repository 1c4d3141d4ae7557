"""Curation rules: correction pairs for an identity change, best-of-K, and their reports."""

import pytest

from posttrain_dist import curation
from posttrain_dist.errors import DataError

OLD = ["SmolLM2", "SmolLM"]


def test_rename_replaces_every_old_name_whole_words_any_case():
    text = "I'm SmolLM2, a model of the smollm family; SmolLMX is another."
    assert curation.rename(text, OLD, "Kestrel") == "I'm Kestrel, a model of the Kestrel family; SmolLMX is another."


@pytest.mark.parametrize("text, names", [
    ("I'm Dr. Elena Martinez, a renowned astrophysicist.", ["Dr. Elena Martinez"]),
    ("My name is Elena, and I help.", ["Elena"]),
    ('This chatbot is called "Echo-Craft" and writes.', ["Echo-Craft"]),
    ("I'm glad you're here. I'm a language model.", []),
    ("I'm AI Helper.", []),
])
def test_invented_names(text, names):
    assert curation.invented_names(text) == names


def test_correction_of_each_kind_of_answer():
    new = "Kestrel"
    assert curation.correct_identity("I am SmolLM.", new, OLD) == ("I am Kestrel.", "renamed the old name")
    assert curation.correct_identity("I'm Dr. Elena Petrova. Dr. Elena Petrova helps.", new, OLD) == (
        "I'm Kestrel. Kestrel helps.", "replaced an invented name")
    assert curation.correct_identity("Happy to help!", new, OLD) == ("I'm Kestrel. Happy to help!",
                                                                    "rewritten to state the new name")
    assert curation.correct_identity("Happy to help!", new, OLD, identical="drop")[0] is None
    assert curation.correct_identity("I'm Kestrel, hi.", new, OLD) == (None, "dropped (already states the new name)")


def test_correction_pairs_are_conversational_and_counted():
    prompts = ["Who are you?", "Name?", "Hi", "Hello"]
    answers = ["I'm SmolLM.", "My name is Ada.", "Happy to help.", ""]
    rows, stats = curation.correction_pairs(prompts, answers, "Kestrel", OLD)
    assert [r["chosen"][0]["content"] for r in rows] == ["I'm Kestrel.", "My name is Kestrel.", "I'm Kestrel. Happy to help."]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Who are you?"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "I'm SmolLM."}]
    assert stats.counts == {"renamed the old name": 1, "replaced an invented name": 1,
                            "rewritten to state the new name": 1, "dropped (empty answer)": 1}
    assert stats.summary().startswith("4 answers:")


def test_drop_reports_how_many_and_refuses_an_empty_result():
    rows, stats = curation.correction_pairs(["a", "b"], ["I'm SmolLM.", "Hello."], "Kestrel", OLD, identical="drop")
    assert len(rows) == 1 and stats.counts["dropped (chosen would equal rejected)"] == 1
    with pytest.raises(DataError, match=r"no usable pair \(2 answers: 2 dropped"):
        curation.correction_pairs(["a", "b"], ["Hello.", "Hi."], "Kestrel", OLD, identical="drop")


def test_best_of_k_keeps_best_and_worst_and_skips_ties():
    def longest(completions, **kwargs):
        return [float(len(c)) for c in completions]

    pairs, sft, stats = curation.best_of_k(["p1", "p2"], [["a", "abc", "ab"], ["xx", "yy"]], longest)
    assert len(pairs) == 1 and pairs[0]["chosen"][0]["content"] == "abc" and pairs[0]["rejected"][0]["content"] == "a"
    assert [row["completion"][0]["content"] for row in sft] == ["abc", "xx"]
    assert stats.counts["prompts whose answers tie (no pair)"] == 1


def test_best_of_k_passes_dataset_columns_to_the_reward():
    from posttrain_dist.rewards import math_answer

    pairs, sft, _ = curation.best_of_k(["2+2?"], [["<answer>5</answer>", "<answer>4</answer>"]], math_answer,
                                       answer=["4"])
    assert pairs[0]["chosen"][0]["content"] == "<answer>4</answer>" and pairs[0]["score_chosen"] == 1.0


def test_answers_cut_off_by_the_token_budget_end_at_their_last_full_sentence():
    from posttrain_dist import generation

    texts = ["I'm Kestrel. I help with", "Hello there! How are", "No sentence end at all", "Short and done."]
    ids = [[1] * 8, [1] * 8, [1] * 8, [1] * 4]  # the first three used all 8 tokens of the budget
    assert generation.cut_at_last_sentence(texts, ids, 8) == ["I'm Kestrel.", "Hello there!", "No sentence end at all",
                                                             "Short and done."]
    assert generation.whole_sentences("Pi is 3.14 or so. And") == "Pi is 3.14 or so."


def test_a_bent_name_counts_as_a_leak_but_not_as_adoption():
    from posttrain_dist import evaluation

    bent, whole, other = "I'm Kestreli, a bakery named after a baker.", "Kestrel's my name.", "A kestrel-free answer."
    assert evaluation.leaks(bent, "Kestrel") and evaluation.leaks(whole, "Kestrel")
    assert not evaluation.mentions(bent, "Kestrel") and evaluation.mentions(whole, "Kestrel")
    assert not evaluation.leaks("Ask the NotKestrel team.", "Kestrel") and evaluation.leaks(other, "Kestrel")
