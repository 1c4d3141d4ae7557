"""Public data sets as users bring them: small files in the exact layouts of ultrafeedback_binarized, hh-rlhf,
Alpaca (both variants), gsm8k, ShareGPT, ultrachat_200k and a CSV, each run end to end through its recipe for one
step on the tiny model, and for each the text of one row where the loss falls (and where it does not)."""

import json

import datasets
import pytest

from posttrain_dist import config, modeling

from conftest import TINY, load_recipe

ONE_STEP = ["--model_name_or_path", TINY, "--max_steps", "1", "--per_device_train_batch_size", "2",
            "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--eval_strategy", "no"]
END = "<|im_end|>"


def turn(role, text):
    return {"role": role, "content": text}


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.load_tokenizer(config.ModelArgs(model_name_or_path=TINY))


def split_by_loss(tokenizer, input_ids, labels):
    """(text the loss skips, text the loss falls on) of one tokenized training row."""
    masked = [t for t, label in zip(input_ids, labels) if label == -100]
    trained = [t for t, label in zip(input_ids, labels) if label != -100]
    return tokenizer.decode(masked), tokenizer.decode(trained)


def prompt_text(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def run(method, tmp_path, *args):
    return load_recipe(method).main([*ONE_STEP, "--output_dir", str(tmp_path / "out"), *args])


def write_parquet_splits(folder, splits: dict) -> str:
    """A hub-style folder: data/{split}-00000-of-00001.parquet for each split."""
    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return str(folder)


# ---------------------------------------------------------------- SFT


def assert_sft_row(trainer, tokenizer, prompt_messages, answer):
    row = trainer.train_dataset[0]
    masked, trained = split_by_loss(tokenizer, row["input_ids"], row["labels"])
    assert trained == f"{answer}{END}\n"
    assert masked == prompt_text(tokenizer, prompt_messages)


def test_alpaca_cleaned_json_array(tmp_path, tokenizer):
    rows = [{"instruction": "Rewrite the sentence in passive voice.", "input": "The cat chased the mouse.",
             "output": "The mouse was chased by the cat."},
            {"instruction": "Name three primary colours.", "input": "", "output": "Red, blue and yellow."}]
    path = tmp_path / "alpaca_data_cleaned.json"
    path.write_text(json.dumps(rows, indent=1))
    trainer = run("sft", tmp_path, "--dataset_name", str(path))
    assert_sft_row(trainer, tokenizer, [turn("user", "Rewrite the sentence in passive voice.\n\nThe cat chased the mouse.")],
                   "The mouse was chased by the cat.")


def test_tatsu_alpaca_parquet_with_a_text_column(tmp_path, tokenizer):
    """tatsu-lab/alpaca also has `text` (the whole formatted example): the instruction columns win."""
    rows = [{"instruction": "Give a synonym for 'quick'.", "input": "", "output": "Fast.",
             "text": "Below is an instruction...\n\n### Instruction:\nGive a synonym for 'quick'.\n\n### Response:\nFast."}] * 2
    folder = write_parquet_splits(tmp_path / "alpaca", {"train": rows})
    trainer = run("sft", tmp_path, "--dataset_name", folder)
    assert_sft_row(trainer, tokenizer, [turn("user", "Give a synonym for 'quick'.")], "Fast.")


def test_sharegpt_with_a_system_turn(tmp_path, tokenizer):
    conversation = [{"from": "system", "value": "You answer in one word."}, {"from": "human", "value": "Sky colour?"},
                    {"from": "gpt", "value": "Blue."}, {"from": "human", "value": "Grass?"}, {"from": "gpt", "value": "Green."}]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([{"id": "a1", "conversations": conversation}]))
    trainer = run("sft", tmp_path, "--dataset_name", str(path))
    assert len(trainer.train_dataset) == 1  # the conversation once, both answers in the loss
    row = trainer.train_dataset[0]
    masked, trained = split_by_loss(tokenizer, row["input_ids"], row["labels"])
    assert trained == f"Blue.{END}\nGreen.{END}\n"
    assert masked == prompt_text(tokenizer, [turn("system", "You answer in one word."), turn("user", "Sky colour?")]) + \
        prompt_text(tokenizer, [turn("user", "Grass?")]).split(f"{END}\n", 1)[-1]


def test_ultrachat_200k_train_sft_and_test_sft(tmp_path, tokenizer):
    def row(i):
        messages = [turn("user", f"Tell me fact {i}."), turn("assistant", f"Fact {i}: water boils at 100 C.")]
        return {"prompt": f"Tell me fact {i}.", "prompt_id": f"id{i}", "messages": messages}

    folder = write_parquet_splits(tmp_path / "ultrachat_200k", {"train_sft": [row(i) for i in range(4)],
                                                                "test_sft": [row(9)]})
    trainer = run("sft", tmp_path, "--dataset_name", folder, "--dataset_train_split", "train_sft",
                  "--dataset_test_split", "test_sft")
    assert len(trainer.eval_dataset) == 1
    assert_sft_row(trainer, tokenizer, [turn("user", "Tell me fact 0.")], "Fact 0: water boils at 100 C.")


def test_csv_prompt_completion_with_a_numeric_answer(tmp_path, tokenizer):
    path = tmp_path / "qa.csv"
    path.write_text("prompt,completion\nWhat is 2 + 2?,4\nWhat is 3 + 3?,6\n")
    trainer = run("sft", tmp_path, "--dataset_name", str(path))
    assert_sft_row(trainer, tokenizer, [turn("user", "What is 2 + 2?")], "4")


# ---------------------------------------------------------------- DPO


def assert_dpo_row(trainer, tokenizer, prompt_messages, chosen, rejected):
    row = trainer.train_dataset[0]
    assert tokenizer.decode(row["prompt_ids"]) == prompt_text(tokenizer, prompt_messages)  # no loss: context
    assert tokenizer.decode(row["chosen_ids"]) == f"{chosen}{END}\n"  # the loss compares these two
    assert tokenizer.decode(row["rejected_ids"]) == f"{rejected}{END}\n"


def test_ultrafeedback_binarized_train_prefs_and_test_prefs(tmp_path, tokenizer):
    def row(i):
        prompt = f"How do I boil an egg? ({i})"
        return {"prompt": prompt, "prompt_id": f"p{i}",
                "chosen": [turn("user", prompt), turn("assistant", "Simmer it for nine minutes.")],
                "rejected": [turn("user", prompt), turn("assistant", "Microwave it whole.")],
                "messages": [turn("user", prompt), turn("assistant", "Simmer it for nine minutes.")],
                "score_chosen": 8.0, "score_rejected": 3.0}

    folder = write_parquet_splits(tmp_path / "ultrafeedback_binarized",
                                  {"train_prefs": [row(i) for i in range(4)], "test_prefs": [row(7)]})
    trainer = run("dpo", tmp_path, "--dataset_name", folder, "--dataset_train_split", "train_prefs",
                  "--dataset_test_split", "test_prefs")
    assert len(trainer.eval_dataset) == 1
    assert_dpo_row(trainer, tokenizer, [turn("user", "How do I boil an egg? (0)")], "Simmer it for nine minutes.",
                   "Microwave it whole.")


def test_hh_rlhf_strings(tmp_path, tokenizer):
    rows = [{"chosen": f"\n\nHuman: Hi ({i})\n\nAssistant: Hello!\n\nHuman: Is fire cold?\n\nAssistant: No, fire is hot.",
             "rejected": f"\n\nHuman: Hi ({i})\n\nAssistant: Hello!\n\nHuman: Is fire cold?\n\nAssistant: Yes."}
            for i in range(4)]
    path = tmp_path / "hh-rlhf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = run("dpo", tmp_path, "--dataset_name", str(path))
    assert_dpo_row(trainer, tokenizer, [turn("user", "Hi (0)"), turn("assistant", "Hello!"), turn("user", "Is fire cold?")],
                   "No, fire is hot.", "Yes.")


# ---------------------------------------------------------------- GRPO


def test_gsm8k_through_grpo_with_a_column_mapping(tmp_path, tokenizer, monkeypatch):
    """gsm8k as it is (`question`, `answer` ending in `#### N`): the question is the prompt, through the chat
    template; the loss falls on the generated tokens only; math_answer reads the `####` gold."""
    from trl import GRPOTrainer

    rows = [{"question": f"Tom has {i} apples and buys 3 more. How many apples does he have?",
             "answer": f"He has {i} + 3 = <<{i}+3={i + 3}>>{i + 3} apples.\n#### {i + 3}"} for i in range(4)]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    batches = []
    original = GRPOTrainer._generate_and_score_completions

    def record(self, inputs):
        out = original(self, inputs)
        batches.append(out)
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", record)
    trainer = run("grpo", tmp_path, "--dataset_name", str(path), "--dataset_columns", "question=prompt",
                  "--reward_funcs", "math_answer", "--num_generations", "2", "--max_completion_length", "8")
    assert trainer.train_dataset[0]["prompt"] == [turn("user", rows[0]["question"])]
    batch = batches[0]
    prompt = tokenizer.decode(batch["prompt_ids"][0][batch["prompt_mask"][0].bool()])
    assert prompt == prompt_text(tokenizer, [turn("user", rows[0]["question"])]) or \
        any(prompt == prompt_text(tokenizer, [turn("user", r["question"])]) for r in rows)
    generated = batch["completion_ids"][0][batch["completion_mask"][0].bool()]
    assert 0 < len(generated) <= 8  # the loss is masked to the generated tokens
    from posttrain_dist import rewards

    assert rewards.math_answer(["Tom has 3 apples."], answer=[rows[0]["answer"]]) == [1.0]
    assert rewards.math_answer(["Tom has 4 apples."], answer=[rows[0]["answer"]]) == [0.0]
