"""Multi-turn conversations trained in one pass: the masks cover exactly the assistant turns, the loss equals the
per-turn split's, on every shipped and commonly named template; templates that rewrite earlier turns go per turn;
the prepared data is cached in the output folder and reused."""

import json
from pathlib import Path

import datasets
import pytest
import torch
import yaml

from posttrain_dist import checks, config, formats, modeling, sequences, templates
from posttrain_dist.errors import DataError

from conftest import TINY

FOUR_TURNS = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of Peru?"},
    {"role": "assistant", "content": "Lima."},
    {"role": "user", "content": "And of Chile?"},
    {"role": "assistant", "content": "Santiago."},
    {"role": "user", "content": "Which is further south?"},
    {"role": "assistant", "content": "Santiago is further south than Lima."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You're welcome."},
]
WITH_REASONING = [
    {"role": "user", "content": "2 + 2?"},
    {"role": "assistant", "content": "<think>\nTwo and two make four.\n</think>\n\n4."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "<think>\nThree and three.\n</think>\n\n6."},
]
PEER_CONFIGS = Path(__file__).parent / "peer_configs"


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.load_tokenizer(config.ModelArgs(model_name_or_path=TINY))


def with_template(tokenizer, template: str, name: str | None = None):
    """The tiny model's tokenizer with `template`, and the special tokens that template's family has (Llama 3's
    headers are single tokens in its vocabulary; split into pieces they could merge across a turn's end)."""
    copy = modeling.load_tokenizer(config.ModelArgs(model_name_or_path=TINY))
    copy.chat_template = template
    missing = [t for t in templates.needed_tokens(name or "") if t not in copy.get_vocab()]
    if missing:
        copy.add_special_tokens({"additional_special_tokens": missing})
    return copy


def trained_pieces(tokenizer, ids, labels) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    pieces, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            current.append(token)
        elif current:
            pieces.append(tokenizer.decode(current))
            current = []
    return pieces + ([tokenizer.decode(current)] if current else [])


def one_pass_and_per_turn(tokenizer, messages, kwargs=None):
    row = {"messages": messages, **({"chat_template_kwargs": kwargs} if kwargs else {})}
    one = sequences.Masker(tokenizer, "auto")
    per = sequences.Masker(tokenizer, "per_turn")
    return one, one.batch([row], False), per.batch([row], False)


def test_a_four_turn_conversation_one_pass_masks_and_loss_equal_the_per_turn_split(tokenizer, tiny_model_path):
    from transformers import AutoModelForCausalLM

    masker, one, per = one_pass_and_per_turn(tokenizer, FOUR_TURNS)
    assert masker.counts["one_pass"] == 1 and len(one["input_ids"]) == 1 and len(per["input_ids"]) == 4
    ids, labels = one["input_ids"][0], one["labels"][0]
    answers = [m["content"] for m in FOUR_TURNS if m["role"] == "assistant"]
    assert trained_pieces(tokenizer, ids, labels) == [f"{a}<|im_end|>\n" for a in answers]  # exactly the answers
    # every other token is the prompt's: the system message, the user turns and each answer's header
    untrained = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100])
    assert all(m["content"] in untrained for m in FOUR_TURNS if m["role"] != "assistant")

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()

    def summed_nll(ids, labels):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        return torch.nn.functional.cross_entropy(logits, torch.tensor(labels[1:]), ignore_index=-100,
                                                 reduction="sum").item()

    per_turn = sum(summed_nll(i, lab) for i, lab in zip(per["input_ids"], per["labels"]))
    assert summed_nll(ids, labels) == pytest.approx(per_turn, rel=1e-5)
    assert sum(x != -100 for x in labels) == sum(sum(x != -100 for x in lab) for lab in per["labels"])


def peer_template(name: str) -> str:
    return yaml.safe_load((PEER_CONFIGS / name).read_text())["chat_template"]


TEMPLATES = {**{name: text for name, text in templates.TEMPLATES.items()},
             "SmolLM2's own": None,
             "alignment-handbook zephyr (as published)": lambda: peer_template("handbook_zephyr_sft_full.yaml"),
             "SmolLM3 (as published)": lambda: peer_template("handbook_smollm3_sft.yaml"),
             "open-r1 distill (as published)": lambda: peer_template("openr1_distill_sft.yaml")}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_template_trains_the_same_tokens_in_one_pass_as_per_turn(tokenizer, name):
    template = TEMPLATES[name]
    tok = tokenizer if template is None else with_template(tokenizer, template() if callable(template) else template,
                                                           name)
    for kwargs in ([None, {"enable_thinking": False}] if "smollm3" in name.lower() or "qwen3" in name else [None]):
        masker, one, per = one_pass_and_per_turn(tok, FOUR_TURNS, kwargs)
        # Qwen3 renders the last answer with a reasoning block that the same answer does not have once later turns
        # follow: its multi-turn rows are trained per turn, every other template's in one pass
        assert masker.counts["per_turn"] == (4 if name == "qwen3" else 0), (name, kwargs, masker.counts)
        one_pieces = [piece for ids, labels in zip(one["input_ids"], one["labels"])
                      for piece in trained_pieces(tok, ids, labels)]
        per_pieces = [piece for ids, labels in zip(per["input_ids"], per["labels"])
                      for piece in trained_pieces(tok, ids, labels)]
        assert one_pieces == per_pieces and len(one_pieces) == 4, (name, kwargs, one_pieces, per_pieces)


def test_a_template_that_drops_earlier_reasoning_is_trained_per_turn(tokenizer):
    qwen3 = with_template(tokenizer, templates.QWEN3, "qwen3")
    masker, one, per = one_pass_and_per_turn(qwen3, WITH_REASONING)
    assert masker.counts["per_turn"] == 2 and one == per  # this row per turn: each answer with its own reasoning
    assert "Two and two make four" in trained_pieces(qwen3, one["input_ids"][0], one["labels"][0])[0]
    single = sequences.Masker(qwen3, "auto")
    single.batch([{"messages": WITH_REASONING[:2]}], False)
    assert single.counts["one_pass"] + single.counts["exact"] == 1  # one answer: nothing to rewrite
    with pytest.raises(DataError, match="renders an earlier turn"):
        sequences.Masker(qwen3, "one_pass").batch([{"messages": WITH_REASONING}], False)


def test_a_smollm3_row_without_thinking_is_rendered_without_thinking(tokenizer):
    smollm3 = with_template(tokenizer, peer_template("handbook_smollm3_sft.yaml"))
    masker = sequences.Masker(smollm3, "auto")
    no_think = masker.render(FOUR_TURNS[1:3], sequences._kwargs_of({"chat_template_kwargs": {"enable_thinking": False}}))
    think = masker.render(FOUR_TURNS[1:3], sequences._kwargs_of({"chat_template_kwargs": {"enable_thinking": True}}))
    assert "Reasoning Mode: /no_think" in no_think and "<think>\n\n</think>\nLima." in no_think
    assert "Reasoning Mode: /think" in think and "assistant\nLima." in think
    # through the data preparation, the row's own argument reaches the template
    rows = datasets.Dataset.from_list([{"messages": FOUR_TURNS[1:3], "chat_template_kwargs": {"enable_thinking": False}}])
    args = checks.parse("sft", ["--model_name_or_path", TINY, "--dataset_name", "builtin:sft-basics", "--output_dir",
                                "/tmp/unused"]).training
    prepared = sequences.tokenize(rows, smollm3, args, "auto", "smoltalk2 row")
    assert "/no_think" in smollm3.decode(prepared[0]["input_ids"])


def test_prepared_data_is_cached_in_the_output_folder_and_reused(tokenizer, tmp_path, monkeypatch):
    rows = datasets.Dataset.from_list([{"messages": FOUR_TURNS}] * 3)
    args = checks.parse("sft", ["--model_name_or_path", TINY, "--dataset_name", "builtin:sft-basics",
                                "--output_dir", str(tmp_path)])
    first = sequences.prepare({"train": rows, "eval": None}, tokenizer, args, str(tmp_path))
    cached = list((tmp_path / "prepared").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("train-")
    monkeypatch.setattr(sequences, "tokenize", lambda *a, **k: pytest.fail("prepared twice"))
    again = sequences.prepare({"train": rows, "eval": None}, tokenizer, args, str(tmp_path))
    assert again["train"]["input_ids"] == first["train"]["input_ids"] and again["eval"] is None


def test_rows_whose_answer_lies_beyond_max_length_are_dropped_and_counted(tokenizer, capsys):
    long_prompt = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Short."}]
    rows = datasets.Dataset.from_list([{"messages": FOUR_TURNS}, {"messages": long_prompt}])
    args = checks.parse("sft", ["--model_name_or_path", TINY, "--dataset_name", "builtin:sft-basics", "--max_length",
                                "128", "--output_dir", "/tmp/unused"]).training
    prepared = sequences.tokenize(rows, tokenizer, args, "auto", "two rows")
    assert len(prepared) == 1 and "dropped 1 of 2 rows" in capsys.readouterr().err
    with pytest.raises(DataError, match="no row has a trained token within max_length=128"):
        sequences.tokenize(rows.select([1]), tokenizer, args, "auto", "one long row")


def test_per_turn_examples_carry_the_row_columns():
    out = formats.per_turn([FOUR_TURNS], {"chat_template_kwargs": [{"enable_thinking": False}]})
    assert len(out["prompt"]) == 4 and out["chat_template_kwargs"] == [{"enable_thinking": False}] * 4
    assert json.dumps(out["completion"][0]) == json.dumps([FOUR_TURNS[2]])


def test_a_conversation_with_tool_calls_trains_the_calls_and_not_the_results():
    """builtin:word-problem-calls through the data preparation: the assistant's tool call survives the conversion
    (it was once dropped with the other message keys) and is trained, the tool's answer is not."""
    from posttrain_dist import data
    from posttrain_dist.methods import sft

    args = checks.parse("sft", ["--model_name_or_path", TINY, "--dataset_name", "builtin:word-problem-calls",
                                "--chat_template", "trl:qwen3", "--max_length", "1024", "--output_dir", "/tmp/unused"])
    train, _ = data.load_for(sft.METHOD, args.recipe)
    assert train[0]["messages"][2]["tool_calls"][0]["function"]["name"] == "calculator"
    qwen3 = modeling.load_tokenizer(args.model, "trl:qwen3")
    prepared = sequences.tokenize(train.select(range(3)), qwen3, args.training, "auto", "tool calls")
    pieces = [p for row in prepared for p in trained_pieces(qwen3, row["input_ids"], row["labels"])]
    assert all("<tools>" in qwen3.decode(row["input_ids"]) for row in prepared)  # the schema of the `tools` column
    assert sum("<tool_call>" in p and '"expression"' in p for p in pieces) == 3  # each call trained once
    assert sum("The answer is" in p for p in pieces) == 3
    assert not any("<tool_response>" in p or "# Tools" in p or "Solve the problem" in p for p in pieces)
