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


def test_demo_changes_the_identity_of_the_default_model(tmp_path):
    """`make demo`'s job: held-out adoption of the new name rises to at least 80 %, general answers stay coherent."""
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain_dist import generation

    output = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "posttrain_dist.cli", "demo", "--output", str(output)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["new_name"] == "Kestrel"
    assert summary["adoption_before"] <= 0.1
    assert summary["adoption_after"] >= 0.8, summary
    assert summary["perplexity_change"] <= 0.10, summary
    assert "held-out identity prompts" in proc.stdout

    final = output / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    reply = generation.answer(model, tokenizer, ["What is your name?"], max_new_tokens=16)[0]
    assert generation.mentions(reply, "Kestrel"), reply


def test_grpo_raises_held_out_reward_of_the_default_model(tmp_path):
    """The GRPO preset: mean math_answer reward on 100 held-out sums rises by at least 0.2 (it is 0 or 1 each)."""
    output_dir = tmp_path / "grpo"
    launch("grpo", "--config", str(PRESETS / "grpo_full.yaml"), "--output_dir", str(output_dir), timeout=1500)
    summary = json.loads((output_dir / "evaluation.json").read_text())["summary"]
    assert summary["reward_prompts"] == 100
    assert summary["reward_after"] - summary["reward_before"] >= 0.2, summary
    history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
    assert all("rewards/math_answer/mean" in e for e in history if "reward" in e)
