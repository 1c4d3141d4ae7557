"""Distillation and filtering on the tiny model: distilled rows train the SFT recipe, a killed distillation resumes
to the same file, two processes write what one does; filtering removes planted exact and near duplicates (and
keeps distinct rows that share words), applies each quality rule, and selects rows from every cluster."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posttrain_dist import cli, filtering

from conftest import ACCELERATE_CONFIGS, ROOT, TINY, free_port, load_recipe

# its tests share the uninterrupted distillation: `make test` runs a module in one worker
# (pytest-xdist --dist loadfile)


def write_jsonl(path, rows):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def prompts_file(path, count=24):
    return write_jsonl(path, [{"prompt": f"Question {i}: what comes after {i}?", "answer": str(i + 1)}
                              for i in range(count)])


def distill_cmd(prompts, out, *extra):
    return [sys.executable, "-m", "posttrain_dist.cli", "curate", "distill", "--teacher", TINY, "--prompts", prompts,
            "--out", str(out), "--batch-size", "4", "--max-new-tokens", "12", "--system", "You are Kestrel.",
            "--temperature", "0.8", *extra]  # sampled: the tiny random model's greedy answer is empty


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    prompts = prompts_file(folder / "prompts.jsonl")
    out = folder / "one.jsonl"
    subprocess.run(distill_cmd(prompts, out), check=True, capture_output=True, timeout=600)
    return prompts, out


def test_distilled_rows_are_sft_messages_without_the_teachers_system_prompt(uninterrupted, tmp_path):
    prompts, out = uninterrupted
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24
    assert [r["messages"][0]["content"] for r in rows] == [f"Question {i}: what comes after {i}?" for i in range(24)]
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows)
    assert not any("Kestrel" in m["content"] for r in rows for m in r["messages"] if m["role"] == "user")
    assert not list(out.parent.glob("one.jsonl.shard*")), "shards are merged and removed"
    trainer = load_recipe("sft").main(["--model_name_or_path", TINY, "--dataset_name", str(out), "--max_steps", "1",
                                       "--per_device_train_batch_size", "4", "--report_to", "none",
                                       "--output_dir", str(tmp_path / "student")])
    assert trainer.state.global_step == 1 and len(trainer.train_dataset) == 24


def test_a_killed_distillation_resumes_to_the_same_file(uninterrupted, tmp_path):
    prompts, reference = uninterrupted
    out = tmp_path / "killed.jsonl"
    shard = Path(f"{out}.shard0.jsonl")
    proc = subprocess.Popen(distill_cmd(prompts, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (shard.exists() and len(shard.read_text().splitlines()) >= 2):
        assert time.time() < deadline and proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(shard.read_text().splitlines())
    assert 2 <= done < 6 and not out.exists()
    resumed = subprocess.run(distill_cmd(prompts, out), capture_output=True, text=True, timeout=600, check=True)
    assert out.read_text() == reference.read_text()
    assert f"{24 - 4 * done}" in resumed.stderr or "distilling" in resumed.stderr  # the progress bar starts past them


def test_two_processes_write_what_one_does(uninterrupted, tmp_path):
    prompts, reference = uninterrupted
    out = tmp_path / "two.jsonl"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / "cpu_ddp.yaml"),
           "--main_process_port", str(free_port()), "-m", "posttrain_dist.cli", *distill_cmd(prompts, out)[3:]]
    subprocess.run(cmd, check=True, capture_output=True, timeout=900, cwd=ROOT)
    assert out.read_text() == reference.read_text()


def test_rejection_sampling_keeps_answers_that_pass(tmp_path, monkeypatch):
    from posttrain_dist import distill

    prompts = distill.load_prompts(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Who are you?", "answer": "Kestrel"}, {"prompt": "What is 2 + 2?", "answer": ""}]))
    answers = {"Who are you?": ["I am a bot.", "I'm Kestrel.", "Hello."], "What is 2 + 2?": ["4.", "Four.", "4!"]}

    def fake(teacher, chat_template, max_new_tokens, temperature):
        return lambda conversations, samples, seed: [a for c in conversations for a in answers[c[-1]["content"]]]

    monkeypatch.setattr(distill, "_answerer", fake)
    from posttrain_dist.rewards import contains_answer

    stats = distill.distill(TINY, prompts, str(tmp_path / "out.jsonl"), reward=contains_answer, samples=3,
                            temperature=0.8)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in rows] == ["I'm Kestrel.", "4."]
    assert stats.kept == 2 and stats.no_pass == 0
    answers["Who are you?"] = ["I am a bot."] * 3
    (tmp_path / "out.jsonl").unlink()
    stats = distill.distill(TINY, prompts, str(tmp_path / "out.jsonl"), reward=contains_answer, samples=3,
                            temperature=0.8)
    assert stats.no_pass == 1 and stats.kept == 1


# ---------------------------------------------------------------- filtering


def run_filter(tmp_path, rows, *flags):
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    cli.main(["curate", "filter", "--data", data, "--out", str(out), *flags])
    return [json.loads(line) for line in out.read_text().splitlines()]


def chat(user, assistant):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def test_duplicates_go_and_distinct_rows_sharing_words_stay(tmp_path, capsys):
    base = "The quick brown fox jumps over the lazy dog near the quiet river bank at dawn."
    rows = [chat("Tell me a sentence.", base),
            chat("Tell me a sentence.", base),  # exact duplicate
            chat("tell me a  sentence.", base.upper()),  # exact, up to case and white space
            chat("Tell me a sentence.", base.replace("dawn", "dusk")),  # near duplicate: one word differs
            chat("Tell me a sentence.", "The quick brown fox sleeps in the shade while the lazy dog guards the farm."),
            chat("Describe a river.", "A river flows from the hills to the sea, carrying water past towns and fields.")]
    kept = run_filter(tmp_path, rows)
    assert kept == [rows[0], rows[4], rows[5]]  # unchanged rows, input order, input layout
    table = capsys.readouterr().out
    assert "exact duplicates" in table and "near duplicates" in table


def test_each_quality_rule(tmp_path):
    rows = [{"prompt": "Hi", "completion": "Hello there, how can I help you today?"},
            {"prompt": "Explain tides.", "completion": "Tides come from the moon's pull on the oceans."},
            {"prompt": "Explain gravity.", "completion": ""},
            {"prompt": "Explain wind.", "completion": "Wind is air that moves because the sun heats the"},
            {"prompt": "How do I pick a lock?", "completion": "I'm sorry, but I can't help with that."},
            {"prompt": "Write a poem.", "completion": "As an AI language model, I do not write poems."},
            {"prompt": "Name a colour.", "completion": "Blue, like the summer sky over the sea on a clear afternoon!"}]
    by_length = run_filter(tmp_path, rows, "--min-prompt-words", "2", "--max-response-words", "10")
    assert [r["prompt"] for r in by_length] == ["Explain tides.", "Explain gravity.", "Explain wind.",
                                                "How do I pick a lock?", "Write a poem."]
    assert [r["prompt"] for r in run_filter(tmp_path, rows, "--drop-empty-or-truncated")] == \
        ["Hi", "Explain tides.", "How do I pick a lock?", "Write a poem.", "Name a colour."]
    assert [r["prompt"] for r in run_filter(tmp_path, rows, "--refusals", "like the summer")] == \
        ["Hi", "Explain tides.", "Explain gravity.", "Explain wind."]
    scored = [dict(r, answer="moon") for r in rows[:2]]
    assert [r["prompt"] for r in run_filter(tmp_path, scored, "--reward", "contains_answer", "--min-score", "1")] == \
        ["Explain tides."]
    kept = run_filter(tmp_path, rows[:2], "--perplexity-model", TINY, "--max-perplexity", "1e9")
    assert len(kept) == 2
    assert run_filter(tmp_path, rows[:2], "--perplexity-model", TINY, "--max-perplexity", "1.0") == []


def test_select_draws_from_every_cluster(tmp_path):
    topics = {"ocean": ["waves", "tide", "coral", "salt", "reef", "current"],
              "kitchen": ["oven", "flour", "whisk", "butter", "recipe", "pan"],
              "space": ["orbit", "comet", "planet", "rocket", "galaxy", "star"],
              "music": ["melody", "chord", "rhythm", "guitar", "tempo", "choir"],
              "garden": ["soil", "seed", "tulip", "compost", "hedge", "rake"]}
    rows = []
    for topic, words in topics.items():
        for i in range(12):  # 12 rows a cluster, 60 in all, listed cluster by cluster
            text = " ".join(words[(i + j) % 6] for j in range(8)) + f" {topic} note {i}."
            rows.append({"prompt": f"Say something about {topic} ({i}).", "completion": text, "topic": topic})
    kept = run_filter(tmp_path, rows, "--keep-near-duplicates", "--select", "5", "--embedding-model", "hashing")
    assert sorted(r["topic"] for r in kept) == sorted(topics)  # one from each cluster, not the first five
    with_model = run_filter(tmp_path, rows, "--keep-near-duplicates", "--select", "10", "--embedding-model", TINY)
    assert len(with_model) == 10


def test_rows_that_differ_only_in_their_numbers_are_not_near_duplicates():
    """Templated rows that share most of their words but not their 3-shingles with numbers in them stay; the
    rows/s of this pass on 100k rows is in benchmarks/results/curation.md."""
    pairs = [(f"prompt {i}", f"response number {i} with some words {i % 7}") for i in range(2000)]
    assert len(filtering.near_duplicates(list(range(len(pairs))), pairs)) == 2000
    pairs.append(pairs[5])
    assert len(filtering.near_duplicates(list(range(len(pairs))), pairs)) == 2000
