"""The default pretrained model really learns: held-out loss and behaviour change (slow: real 135 M model)."""

import json

import pytest

from conftest import PRESETS, launch

pytestmark = pytest.mark.slow


def test_sft_lowers_held_out_loss_of_the_default_model(tmp_path):
    output_dir = tmp_path / "sft"
    launch("sft", "--config", str(PRESETS / "sft_full.yaml"), "--output_dir", str(output_dir),
           "--max_steps", "8", "--eval_strategy", "steps", "--eval_steps", "8", "--eval_on_start", "true",
           "--eval_prompts", "How many legs does a spider have?", "--eval_max_new_tokens", "24")
    history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    assert [step for step, _ in evals] == [0, 8]
    before, after = evals[0][1], evals[1][1]
    assert after < 0.9 * before, f"held-out loss {before:.3f} -> {after:.3f}"
    report = (output_dir / "report.md").read_text()
    assert "| How many legs does a spider have? |" in report


def test_demo_changes_the_identity_of_the_default_model_and_nothing_else(tmp_path):
    """`make demo`'s job, on held-out prompts: the new name is adopted when asked plainly (>= 90 %), under a system
    prompt and as a later turn (>= 80 % each); it does not leak into unrelated answers (<= 2 %); simple questions
    are answered right as before (at most one fewer); held-out perplexity rises by at most 5 %."""
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain_dist import evaluation, generation

    output = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "posttrain_dist.cli", "demo", "--output", str(output)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["new_name"] == "Kestrel"
    assert summary["adoption_before"] <= 0.1
    assert summary["adoption_after"] >= 0.9, summary
    assert summary["adoption_system_after"] >= 0.8 and summary["adoption_turn_after"] >= 0.8, summary
    assert summary["leakage_after"] <= 0.02 and summary["unrelated_prompts"] >= 50, summary
    assert summary["right_after"] >= summary["right_before"] - 1, summary
    assert summary["perplexity_change"] <= 0.05, summary
    assert "identity adoption, under a system prompt" in proc.stdout and "leakage" in proc.stdout

    final = output / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    reply = generation.answer(model, tokenizer, ["What is your name?"], max_new_tokens=16)[0]
    assert evaluation.mentions(reply, "Kestrel"), reply


def test_context_distillation_gives_the_student_the_teachers_identity(tmp_path):
    """The README's worked example: SmolLM2 told in a system prompt that it is Kestrel answers (rejection sampled:
    identity answers that state the name, unrelated ones that do not); SmolLM2 trained on those answers, with no
    system prompt anywhere, states the identity on held-out questions (>= 80 %), rarely names itself unasked
    (<= 10 % of held-out unrelated answers) and keeps its held-out perplexity within 10 %."""
    import subprocess
    import sys

    teacher = tmp_path / "teacher.jsonl"
    subprocess.run([sys.executable, "-m", "posttrain_dist.cli", "curate", "distill", "--teacher",
                    "smollm2-135m-instruct", "--prompts", "builtin:context-distillation", "--system",
                    "You are Kestrel, a friendly AI assistant. Your name is Kestrel.", "--chat-template", "chatml",
                    "--reward", "contains_answer", "--samples", "4", "--temperature", "0.8", "--max-new-tokens", "48",
                    "--batch-size", "16", "--out", str(teacher)], check=True, capture_output=True, timeout=1200)
    rows = [json.loads(line) for line in teacher.read_text().splitlines()]
    assert len(rows) >= 80 and not any(m["role"] == "system" for r in rows for m in r["messages"])
    student = tmp_path / "student"
    launch("sft", "--config", str(PRESETS / "sft_distill_identity.yaml"), "--dataset_name", str(teacher),
           "--output_dir", str(student), "--identity_contexts", "none", "--general_questions", "none", timeout=1800)
    summary = json.loads((student / "evaluation.json").read_text())["summary"]
    assert summary["adoption_before"] <= 0.1 and summary["adoption_after"] >= 0.8, summary
    assert summary["leakage_after"] <= 0.1, summary
    assert abs(summary["perplexity_change"]) <= 0.10, summary


def test_grpo_raises_held_out_reward_of_the_default_model(tmp_path):
    """The GRPO preset, its first 16 of 24 steps: mean math_answer reward on 100 held-out sums rises by at least 0.2
    (it is 0 or 1 each; measured: 0.15 -> 0.65 after 16 steps, 0.91 after 24)."""
    output_dir = tmp_path / "grpo"
    launch("grpo", "--config", str(PRESETS / "grpo_full.yaml"), "--output_dir", str(output_dir), "--max_steps", "16",
           timeout=1500)
    summary = json.loads((output_dir / "evaluation.json").read_text())["summary"]
    assert summary["reward_prompts"] == 100
    assert summary["reward_after"] - summary["reward_before"] >= 0.2, summary
    history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
    assert all("rewards/math_answer/mean" in e for e in history if "reward" in e)
