"""After training: lm-eval tasks before and after (`posttrain-dist eval`, `eval_tasks`), the push to the hub of a
finished run (never of a preempted one), tested against a local stand-in for the hub's API (tests/hub_standin.py)."""

import json
import math
import os
import subprocess
import sys

import pytest

from posttrain_dist import checks, planning, training
from posttrain_dist.errors import ConfigError

from conftest import PRESETS, ROOT, TINY, TINY_OVERRIDES, TESTS, load_recipe
from hub_standin import HubStandIn

TASK = TESTS / "lm_eval_tasks" / "easy_facts.yaml"
SFT = ["--config", str(PRESETS / "sft_full.yaml"), *TINY_OVERRIDES]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "posttrain_dist.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def hand_accuracy(model_path: str) -> float:
    """The task's accuracy computed here: each choice's summed log-probability after "Question: ...\\nAnswer:",
    the highest one taken (lm-eval's `acc`)."""
    import torch

    from posttrain_dist import generation

    model, tokenizer = generation.load_for_generation(model_path)
    rows = [json.loads(line) for line in (TASK.parent / "easy_facts.jsonl").read_text().splitlines()]
    right = 0
    for row in rows:
        context = f"Question: {row['question']}\nAnswer:"
        scores = []
        for choice in row["choices"]:
            context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
            whole = tokenizer(context + " " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
            scores.append(sum(logits[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole))))
        right += max(range(len(scores)), key=scores.__getitem__) == row["answer"]
    return right / len(rows)


@pytest.mark.parametrize("model", [TINY, pytest.param("smollm2-135m-instruct", marks=pytest.mark.slow)])
def test_eval_runs_a_local_task_file_and_agrees_with_a_hand_computation(model, tmp_path):
    out = tmp_path / "results.json"
    proc = cli("eval", model, "--tasks", str(TASK), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "easy_facts" in proc.stdout and "acc" in proc.stdout
    scores = json.loads(out.read_text())["results"]["easy_facts"]
    assert scores["rows"] == 16
    assert math.isclose(scores["acc"], hand_accuracy(model), abs_tol=1e-9)
    if model != TINY:  # the default model knows most of these easy facts (chance: 25%)
        assert scores["acc"] >= 0.5


def test_bad_tasks_and_hub_settings_are_refused_before_loading(tmp_path, no_model_loading, monkeypatch):
    out = ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(ConfigError, match="does not exist"):
        checks.parse("sft", [*SFT, *out, "--eval_tasks", "no/such_task.yaml"])
    with pytest.raises(ConfigError, match="no task 'arc_easyy'; did you mean arc_easy"):
        checks.parse("sft", [*SFT, *out, "--eval_tasks", "arc_easyy"])
    with pytest.raises(ConfigError, match="another kind of model"):
        checks.parse("reward", ["--config", str(PRESETS / "reward_full.yaml"), *TINY_OVERRIDES, *out,
                                "--eval_tasks", str(TASK)])
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ConfigError, match="needs a hub token"):
        checks.parse("sft", [*SFT, *out, "--push_to_hub"])
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with pytest.raises(ConfigError, match="is not a hub repository name"):
        checks.parse("sft", [*SFT, *out, "--push_to_hub", "--hub_model_id", "me/not a name"])
    assert not (tmp_path / "out").exists()


def test_plan_says_what_happens_after_training(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    plan = planning.make("sft", str(PRESETS / "sft_full.yaml"), "accelerate_configs/cpu.yaml", recipe_args=[
        "--eval_tasks", str(TASK), "--eval_tasks_limit", "4", "--push_to_hub", "--hub_model_id", "me/sft",
        "--hub_strategy", "checkpoint", "--output_dir", str(tmp_path / "out")])
    text = planning.render(plan)
    assert f"lm-eval before and after training: {TASK}, 4 rows each" in text
    assert "push: to me/sft once, when the run has finished" in text
    assert "hub_strategy checkpoint pushes checkpoints in transformers' trainer; here checkpoints stay" in text
    assert [line for line in text.splitlines() if line.split()[:3] == ["push_to_hub", "=", "true"]]
    default = planning.render(planning.make("sft", str(PRESETS / "sft_full.yaml"), "accelerate_configs/cpu.yaml",
                                            recipe_args=["--push_to_hub", "--output_dir", str(tmp_path / "out")]))
    assert "push: to out once" in default and "hub_strategy" not in default  # transformers' default: not the user's


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The stand-in hub, with the hub client of this process pointed at it and a token set."""
    from huggingface_hub import constants

    with HubStandIn(str(tmp_path / "hub")) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        yield hub


def test_a_finished_run_is_evaluated_with_lm_eval_and_pushed_once(tmp_path, standin):
    """SFT with `eval_tasks` and `push_to_hub`: the report holds the task before and after; the stand-in gets one
    commit with the model, tokenizer, card and report, and no checkpoint; `posttrain-dist push` pushes it again."""
    from huggingface_hub import ModelCard

    out = tmp_path / "out"
    load_recipe("sft").main([*SFT, "--eval_tasks", str(TASK), "--eval_tasks_limit", "8", "--push_to_hub",
                             "--hub_model_id", "me/tiny-sft", "--save_strategy", "steps", "--save_steps", "1",
                             "--output_dir", str(out)])
    summary = json.loads((out / "evaluation.json").read_text())["summary"]
    [row] = summary["benchmarks"]
    assert (row["task"], row["metric"], row["rows"]) == ("easy_facts", "acc", 8)
    assert 0 <= row["before"] <= 1 and 0 <= row["after"] <= 1
    assert "## lm-eval tasks before and after" in (out / "report.md").read_text()
    assert "| easy_facts acc (lm-eval, 8 rows) |" in (out / "README.md").read_text()

    [commit] = standin.repos["me/tiny-sft"]["commits"]
    pushed = set(commit["files"])
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md", "report.md",
            "config.yaml", "evaluation.json", "metrics.json"} <= pushed
    assert not any(p.startswith("checkpoint-") or p in ("finished.json", "training_args.bin") for p in pushed)
    assert commit["files"]["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = ModelCard(commit["files"]["README.md"].decode())
    assert "sft" in card.data.tags and card.data.library_name == "transformers"
    assert standin.validated  # the card's metadata went through the hub's check
    assert "push_to_hub: true" in (out / "config.yaml").read_text()  # as asked, though the trainer never pushed

    compared = cli("compare", TINY, str(out), "--tasks", str(TASK), "--tasks-limit", "8")
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "lm-eval tasks before and after training" in compared.stdout
    [line] = [line for line in compared.stdout.splitlines() if line.startswith("easy_facts acc (lm-eval, 8 rows)")]
    assert line.split()[-2:] == [f"{row['before']:.4f}", f"{row['after']:.4f}"]  # the run's own numbers again

    again = cli("push", str(out), "--repo", "me/copy", env={"HF_ENDPOINT": standin.endpoint, "HF_TOKEN": "hf_test"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(standin.repos["me/copy"]["commits"][0]["files"]) == pushed


def test_a_preempted_run_pushes_nothing(tmp_path, standin, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("HOOK_PREEMPT_AT_STEP", "1")
    with pytest.raises(SystemExit) as stopped:
        load_recipe("sft").main([*SFT, "--push_to_hub", "--hub_model_id", "me/preempted", "--callbacks",
                                 "hooks:PreemptAtStep", "--output_dir", str(out)])
    training._requested["signal"] = None
    assert stopped.value.code == training.EXIT_PREEMPTED
    assert not [call for call in standin.calls if call[0] == "POST"] and not standin.repos
    refused = cli("push", str(out), env={"HF_ENDPOINT": standin.endpoint, "HF_TOKEN": "hf_test"})
    assert refused.returncode != 0 and "stopped for preemption; resume it first" in refused.stderr


def test_served_check_names_what_it_compares_and_why_not(tmp_path, monkeypatch):
    """Which folders vLLM would serve and which was trained; where there is nothing to serve, or no vLLM, the report
    says so rather than calling it checked."""
    from posttrain_dist import report, served

    full, adapter, unmerged, scorer = (tmp_path / n for n in ("full", "adapter", "unmerged", "scorer"))
    for folder, config in ((full, {"architectures": ["LlamaForCausalLM"]}), (adapter / "merged", {}),
                           (scorer, {"architectures": ["LlamaForSequenceClassification"]})):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
    for folder in (adapter, unmerged):
        folder.mkdir(exist_ok=True)
        (folder / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    assert served.folders(str(full)) == (str(full), str(full))
    assert served.folders(str(adapter)) == (str(adapter / "merged"), str(adapter))
    assert "was not merged" in served.folders(str(unmerged))
    assert "a reward model" in served.folders(str(scorer))
    monkeypatch.setattr(served, "available", lambda: False)  # as in this environment (vLLM is in .venv-vllm)
    result = report.served_check(str(full), {})
    assert result == {"checked": False, "why": served.NOT_INSTALLED}
    assert served.summary(result).startswith("Served = trained: not checked: vLLM is not installed here")
    assert served.check(str(full), str(full), ["Hi"]) == result
