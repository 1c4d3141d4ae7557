"""Data sources, format checks and the conversion to trainable SFT form."""

import json

import pytest

from posttrain_dist import checks, config, data, formats, methods, sources
from posttrain_dist.errors import ConfigError, DataError

from conftest import PRESETS


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def recipe(**kwargs):
    return methods.get("sft").recipe_args(**kwargs)


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of Peru?"},
    {"role": "assistant", "content": "Lima."},
]


def test_builtin_data_loads_with_both_splits():
    train, test = data.load_for(methods.get("sft"), recipe(dataset_name="builtin:sft-basics", dataset_test_split="test"))
    assert len(train) > 200 and 10 < len(test) < 60
    assert train.column_names == ["messages"]
    train_prompts = {row["messages"][0]["content"] for row in train}
    assert not train_prompts & {row["messages"][0]["content"] for row in test}, "held-out prompts leak into training"


def test_a_conversation_stays_whole_and_per_turn_makes_one_example_per_answer(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_name=path))
    assert len(train) == 1 and train[0]["messages"] == CONVERSATION
    turns = formats.per_turn(train["messages"])
    assert turns["prompt"] == [CONVERSATION[:2], CONVERSATION[:4]]
    assert turns["completion"] == [[CONVERSATION[2]], [CONVERSATION[4]]]


def test_sharegpt_conversations_are_converted(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}]
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_name=write_jsonl(tmp_path / "sg.jsonl", rows)))
    assert train[0]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def test_the_chat_template_arguments_of_each_row_survive_the_conversion(tmp_path):
    rows = [{"messages": CONVERSATION[1:3], "chat_template_kwargs": {"enable_thinking": False}, "source": "x"}]
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_name=write_jsonl(tmp_path / "smoltalk2.jsonl", rows)))
    assert train.column_names == ["messages", "chat_template_kwargs"]
    assert train[0]["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_prompt_completion_from_every_file_type(tmp_path, suffix):
    import datasets

    rows = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(5)]
    path = tmp_path / f"pc{suffix}"
    ds = datasets.Dataset.from_list(rows)
    {".jsonl": lambda: ds.to_json(str(path)), ".json": lambda: path.write_text(json.dumps(rows)),
     ".csv": lambda: ds.to_csv(str(path), index=False), ".parquet": lambda: ds.to_parquet(str(path))}[suffix]()
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_name=str(path)))
    # plain strings become chat turns, so the chat template applies as it does to conversations
    assert sorted(m[0]["content"] for m in train["messages"]) == [f"Q{i}" for i in range(5)]
    assert all([t["role"] for t in m] == ["user", "assistant"] for m in train["messages"])


def test_text_format_and_a_folder_source(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "one"}, {"text": "two"}])
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_name=str(folder)))
    assert train["text"] == ["one", "two"]


def test_wrong_columns_are_reported_with_found_and_expected(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(DataError) as error:
        data.load_for(methods.get("sft"), recipe(dataset_name=path))
    message = str(error.value)
    assert "['answer', 'question']" in message
    assert "messages | conversations | instruction + output | prompt + completion | text" in message
    assert "`dataset_columns: {question: prompt, answer: completion}`" in message


def test_malformed_messages_are_reported_with_the_row(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}, {"messages": "hello"}])
    with pytest.raises(DataError, match=r"row 1 \(line 2\): `messages` must be a list of {role, content}"):
        data.load_for(methods.get("sft"), recipe(dataset_name=path))


def test_empty_completion_is_reported(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q", "completion": ""}])
    with pytest.raises(DataError, match=r"row 0 \(line 1\): `completion` must be non-empty"):
        data.load_for(methods.get("sft"), recipe(dataset_name=path))


def test_conversations_without_answers_are_reported(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match="none of the 1 conversations has an assistant turn"):
        data.load_for(methods.get("sft"), recipe(dataset_name=path))


def test_missing_file_is_a_config_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such local file or folder"):
        sources.check_sources(recipe(dataset_name=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="no such local file or folder"):
        sources.check_sources(recipe(dataset_name="data/missing.jsonl"))
    # a mistyped folder under a folder that exists here is local, not a hub id to wait 30 s for
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match="no such local file or folder 'data/my_sft'"):
        sources.check_sources(recipe(dataset_name="data/my_sft"))
    sources.check_sources(recipe(dataset_name="org/my_sft"))  # no such folder here: a hub name


def test_unsupported_file_type_and_unknown_builtin(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="must be one of .json, .jsonl, .parquet, .csv"):
        sources.check_sources(recipe(dataset_name=str(tmp_path / "notes.txt")))
    with pytest.raises(ConfigError, match="unknown built-in data set 'nope'"):
        sources.check_sources(recipe(dataset_name="builtin:nope"))


def test_hub_names_are_left_for_loading():
    sources.check_sources(recipe(dataset_name="HuggingFaceTB/smoltalk"))  # no error, nothing read


def test_test_split_of_a_single_file_is_refused_with_what_to_type(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(ConfigError, match="`--dataset_test_split none`.*`eval_split_size: 0.1`"):
        sources.check_sources(recipe(dataset_name=path, dataset_test_split="test"))
    for unset in ("none", "null", "", "None"):
        assert recipe(dataset_name=path, dataset_test_split=unset).dataset_test_split is None


def test_a_presets_test_split_gives_way_to_a_file_from_the_command_line(tmp_path, capsys):
    """`--config preset.yaml --dataset_name my.jsonl` just works: the preset's split cannot apply to one file."""
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"q{i}", "completion": "a"} for i in range(4)])
    args = checks.parse("sft", ["--config", str(PRESETS / "sft_lora.yaml"), "--dataset_name", path,
                                "--output_dir", str(tmp_path / "o")])
    assert args.recipe.dataset_test_split is None
    assert "single file (one split)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--dataset_test_split none"):  # named on the command line: refused
        checks.parse("sft", ["--config", str(PRESETS / "sft_lora.yaml"), "--dataset_name", path,
                             "--dataset_test_split", "test", "--output_dir", str(tmp_path / "o")])


def test_weighted_mixture_takes_shares_and_repeats_and_converts_plain_and_chat_alike(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "completion": "x"} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": f"b{i}"},
                                                         {"role": "assistant", "content": "y"}]} for i in range(4)])
    mixture = [{"path": a, "weight": 0.5}, {"path": b, "weight": 2.0}]
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_mixture=mixture))
    prompts = [m[0]["content"] for m in train["messages"]]
    assert sum(p.startswith("a") for p in prompts) == 5
    assert sum(p.startswith("b") for p in prompts) == 8
    assert len(set(p for p in prompts if p.startswith("a"))) == 5


def test_mixture_of_text_and_prompt_data_is_reported(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "q", "completion": "x"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "t"}])
    with pytest.raises(DataError, match="do not share one form"):
        data.load_for(methods.get("sft"), recipe(dataset_mixture=[{"path": a}, {"path": b}]))


def test_eval_split_and_max_train_samples():
    train, test = data.load_for(methods.get("sft"), recipe(dataset_name="builtin:sft-basics", max_train_samples=100, eval_split_size=0.2))
    assert len(train) == 80 and len(test) == 20


# ---------------------------------------------------------------- the layouts of public data sets (converted)


def test_alpaca_with_and_without_input_and_preferred_over_text(tmp_path):
    rows = [{"instruction": "Give a synonym.", "input": "happy", "output": "Glad.", "text": "### Instruction..."},
            {"instruction": "Name a colour.", "input": "", "output": "Blue.", "text": "### Instruction..."}]
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_name=write_jsonl(tmp_path / "alpaca.jsonl", rows)))
    assert train.column_names == ["messages"]
    assert train[0]["messages"][0] == {"role": "user", "content": "Give a synonym.\n\nhappy"}
    assert train[1]["messages"] == [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]


def test_ultrafeedback_pairs_repeat_the_prompt_and_are_split_at_the_shared_turns(tmp_path):
    turn = lambda role, text: {"role": role, "content": text}  # noqa: E731
    row = {"prompt": "Hi?", "chosen": [turn("user", "Hi?"), turn("assistant", "Hello!")],
           "rejected": [turn("user", "Hi?"), turn("assistant", "Go away.")], "score_chosen": 9.0}
    train, _ = data.load_for(methods.get("dpo"), recipe(dataset_name=write_jsonl(tmp_path / "uf.jsonl", [row])))
    assert train[0] == {"prompt": [turn("user", "Hi?")], "chosen": [turn("assistant", "Hello!")],
                        "rejected": [turn("assistant", "Go away.")]}


def test_hh_rlhf_strings_become_turns_and_the_shared_turns_the_prompt(tmp_path):
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Capital of Peru?\n\nAssistant: Lima."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Capital of Peru?\n\nAssistant: No idea."
    train, _ = data.load_for(methods.get("dpo"), recipe(dataset_name=write_jsonl(tmp_path / "hh.jsonl",
                                                                    [{"chosen": chosen, "rejected": rejected}])))
    assert [m["role"] for m in train[0]["prompt"]] == ["user", "assistant", "user"]
    assert train[0]["prompt"][-1]["content"] == "Capital of Peru?"
    assert train[0]["chosen"] == [{"role": "assistant", "content": "Lima."}]
    assert train[0]["rejected"] == [{"role": "assistant", "content": "No idea."}]


def test_strings_without_prompt_or_markers_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"chosen": "good", "rejected": "bad"}])
    with pytest.raises(DataError, match="without a prompt column and without hh-rlhf's"):
        data.load_for(methods.get("dpo"), recipe(dataset_name=path))


def test_identical_pairs_are_dropped_with_a_warning_and_all_identical_refused(tmp_path, capsys):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "a"}, {"prompt": "r", "chosen": "b", "rejected": "c"}]
    train, _ = data.load_for(methods.get("dpo"), recipe(dataset_name=write_jsonl(tmp_path / "p.jsonl", rows)))
    assert len(train) == 1
    assert "dropped 1 of 2 pairs whose chosen answer equals the rejected one" in capsys.readouterr().err
    with pytest.raises(DataError, match="all 1 pairs .* have chosen == rejected"):
        data.load_for(methods.get("dpo"), recipe(dataset_name=write_jsonl(tmp_path / "q.jsonl", rows[:1])))


def test_column_mapping_renames_and_the_mixture_accepts_a_mapping_or_a_list(tmp_path):
    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "2+2?", "answer": "2+2=4\n#### 4"}])
    train, _ = data.load_for(methods.get("grpo"), recipe(dataset_name=gsm8k, dataset_columns={"question": "prompt"}))
    assert train[0]["prompt"] == [{"role": "user", "content": "2+2?"}] and train[0]["answer"].endswith("#### 4")
    assert recipe(dataset_name=gsm8k, dataset_columns="question=prompt,answer=completion").dataset_columns == \
        {"question": "prompt", "answer": "completion"}
    mixture = [{"path": gsm8k, "columns": {"question": "prompt", "answer": "completion"}},
               {"path": write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "p", "completion": "c", "id": 1}]),
                "columns": ["prompt", "completion"]}]
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_mixture=mixture))
    assert len(train) == 2 and train.column_names == ["messages"]
    with pytest.raises(DataError, match=r"`dataset_columns` renames \['query'\], which .* lacks"):
        data.load_for(methods.get("grpo"), recipe(dataset_name=gsm8k, dataset_columns={"query": "prompt"}))


def test_wrong_columns_suggest_the_mapping_that_fits(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(DataError, match=r"`dataset_columns: \{question: prompt\}`"):
        data.load_for(methods.get("grpo"), recipe(dataset_name=path))


def test_every_row_is_checked_and_named_by_its_line(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": "a"} for i in range(60)]
    rows[55]["completion"] = None
    path = tmp_path / "late.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows[:10]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[10:]))
    with pytest.raises(DataError, match=r"late.jsonl row 55 \(line 57\): `completion` must be non-empty text; got None"):
        data.load_for(methods.get("sft"), recipe(dataset_name=str(path)))


def test_csv_cells_are_read_as_text(tmp_path):
    path = tmp_path / "pc.csv"
    path.write_text('prompt,completion\nWhat is 2 + 2?,4\nWhat is 0 + 0?,0\n')
    train, _ = data.load_for(methods.get("sft"), recipe(dataset_name=str(path)))
    assert [m[1]["content"] for m in train["messages"]] == ["4", "0"]


@pytest.mark.parametrize("name, content, message", [
    ("corrupt.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion"\n', r"corrupt.jsonl line 2 is not valid JSON"),
    ("blank.jsonl", "\n\n  \n", r"blank.jsonl is empty"),
    ("broken.csv", 'prompt,completion\n"unterminated,4\n', r"could not read .*broken.csv as CSV"),
])
def test_unreadable_files_are_one_clear_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        data.load_for(methods.get("sft"), recipe(dataset_name=str(tmp_path / name)))


def test_empty_parquet_is_refused(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": "q", "completion": "a"}]).select([]).to_parquet(str(tmp_path / "e.parquet"))
    with pytest.raises(DataError, match="e.parquet holds no rows"):
        data.load_for(methods.get("sft"), recipe(dataset_name=str(tmp_path / "e.parquet")))


def test_a_missing_split_names_the_option_that_picks_one(tmp_path):
    import datasets

    (tmp_path / "uf" / "data").mkdir(parents=True)
    datasets.Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}]).to_parquet(
        str(tmp_path / "uf" / "data" / "train_prefs-00000-of-00001.parquet"))
    with pytest.raises(ConfigError, match=r"no split 'train'; its splits are \['train_prefs'\]: set "
                                          r"`dataset_train_split: train_prefs`"):
        data.load_for(methods.get("dpo"), recipe(dataset_name=str(tmp_path / "uf")))


def test_hub_names_fail_fast_when_the_hub_is_unreachable(monkeypatch):
    monkeypatch.setattr(sources, "hub_unreachable", lambda: "huggingface.co: Name or service not known")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DataError, match="cannot be reached from here .* set HF_HUB_OFFLINE=1.*`hf download"):
        sources.load_source("someone/some-data")


def test_the_layout_table_is_the_readme_table():
    from conftest import ROOT

    from posttrain_dist import methods

    table = formats.readme_table([(m.name, m.layouts) for m in methods.METHODS.values()])
    assert table in (ROOT / "README.md").read_text()
