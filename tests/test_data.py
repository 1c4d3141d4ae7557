"""Data sources, format checks and the conversion to trainable SFT form."""

import json

import pytest

from posttrain_dist import config, data
from posttrain_dist.errors import ConfigError, DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def recipe(**kwargs):
    return config.RecipeArgs(**kwargs)


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of Peru?"},
    {"role": "assistant", "content": "Lima."},
]


def test_builtin_data_loads_with_both_splits():
    train, test = data.load_for("sft", recipe(dataset_name="builtin:sft-basics", dataset_test_split="test"))
    assert len(train) > 200 and 10 < len(test) < 60
    assert train.column_names == ["prompt", "completion"]
    train_prompts = {row["prompt"][0]["content"] for row in train}
    assert not train_prompts & {row["prompt"][0]["content"] for row in test}, "held-out prompts leak into training"


def test_conversation_becomes_one_example_per_assistant_turn(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    train, _ = data.load_for("sft", recipe(dataset_name=path))
    assert len(train) == 2
    assert train[0]["prompt"] == CONVERSATION[:2] and train[0]["completion"] == [CONVERSATION[2]]
    assert train[1]["prompt"] == CONVERSATION[:4] and train[1]["completion"] == [CONVERSATION[4]]


def test_sharegpt_conversations_are_converted(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}]
    train, _ = data.load_for("sft", recipe(dataset_name=write_jsonl(tmp_path / "sg.jsonl", rows)))
    assert train[0]["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert train[0]["completion"] == [{"role": "assistant", "content": "4"}]


def test_assistant_only_loss_keeps_whole_conversations(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    train, _ = data.load_for("sft", recipe(dataset_name=path), keep_conversations=True)
    assert train.column_names == ["messages"] and len(train) == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_prompt_completion_from_every_file_type(tmp_path, suffix):
    import datasets

    rows = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(5)]
    path = tmp_path / f"pc{suffix}"
    ds = datasets.Dataset.from_list(rows)
    {".jsonl": lambda: ds.to_json(str(path)), ".json": lambda: path.write_text(json.dumps(rows)),
     ".csv": lambda: ds.to_csv(str(path), index=False), ".parquet": lambda: ds.to_parquet(str(path))}[suffix]()
    train, _ = data.load_for("sft", recipe(dataset_name=str(path)))
    assert sorted(train["prompt"]) == [f"Q{i}" for i in range(5)]


def test_text_format_and_a_folder_source(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "one"}, {"text": "two"}])
    train, _ = data.load_for("sft", recipe(dataset_name=str(folder)))
    assert train["text"] == ["one", "two"]


def test_wrong_columns_are_reported_with_found_and_expected(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(DataError) as error:
        data.load_for("sft", recipe(dataset_name=path))
    message = str(error.value)
    assert "['answer', 'question']" in message
    assert "messages | conversations | prompt + completion | text" in message


def test_malformed_messages_are_reported_with_the_row(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}, {"messages": "hello"}])
    with pytest.raises(DataError, match="row 1: `messages` must be a list of {role, content}"):
        data.load_for("sft", recipe(dataset_name=path))


def test_empty_completion_is_reported(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q", "completion": ""}])
    with pytest.raises(DataError, match="row 0: `completion` must be non-empty"):
        data.load_for("sft", recipe(dataset_name=path))


def test_conversations_without_answers_are_reported(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match="none of the 1 conversations has an assistant turn"):
        data.load_for("sft", recipe(dataset_name=path))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        data.check_sources(recipe(dataset_name=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="does not exist"):
        data.check_sources(recipe(dataset_name="data/missing.jsonl"))


def test_unsupported_file_type_and_unknown_builtin(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="must be one of .json, .jsonl, .parquet, .csv"):
        data.check_sources(recipe(dataset_name=str(tmp_path / "notes.txt")))
    with pytest.raises(ConfigError, match="unknown built-in data set 'nope'"):
        data.check_sources(recipe(dataset_name="builtin:nope"))


def test_hub_names_are_left_for_loading():
    data.check_sources(recipe(dataset_name="HuggingFaceTB/smoltalk"))  # no error, nothing read


def test_test_split_of_a_single_file_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(ConfigError, match="use `eval_split_size`"):
        data.check_sources(recipe(dataset_name=path, dataset_test_split="test"))


def test_weighted_mixture_takes_shares_and_repeats_and_aligns_chat_and_plain(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "completion": "x"} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": f"b{i}"},
                                                         {"role": "assistant", "content": "y"}]} for i in range(4)])
    mixture = [{"path": a, "weight": 0.5}, {"path": b, "weight": 2.0}]
    train, _ = data.load_for("sft", recipe(dataset_mixture=mixture))
    assert all(isinstance(p, list) for p in train["prompt"]), "plain prompts should become user turns"
    prompts = [p[0]["content"] for p in train["prompt"]]
    assert sum(p.startswith("a") for p in prompts) == 5
    assert sum(p.startswith("b") for p in prompts) == 8
    assert len(set(p for p in prompts if p.startswith("a"))) == 5


def test_mixture_of_text_and_prompt_data_is_reported(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "q", "completion": "x"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "t"}])
    with pytest.raises(DataError, match="do not share one format"):
        data.load_for("sft", recipe(dataset_mixture=[{"path": a}, {"path": b}]))


def test_eval_split_and_max_train_samples():
    train, test = data.load_for("sft", recipe(dataset_name="builtin:sft-basics", max_train_samples=100, eval_split_size=0.2))
    assert len(train) == 80 and len(test) == 20
