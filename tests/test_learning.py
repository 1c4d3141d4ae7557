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


def test_grpo_raises_held_out_reward_of_the_default_model(tmp_path):
    """The GRPO preset, its first 10 of 24 steps: mean math_answer reward on 100 held-out sums rises by at least 0.2
    (it is 0 or 1 each; measured on 2 CPU cores: 0.15 -> 0.51 after 10 steps, 0.65 after 16, 0.91 after 24)."""
    output_dir = tmp_path / "grpo"
    launch("grpo", "--config", str(PRESETS / "grpo_full.yaml"), "--output_dir", str(output_dir), "--max_steps", "10",
           timeout=1500)
    summary = json.loads((output_dir / "evaluation.json").read_text())["summary"]
    assert summary["reward_prompts"] == 100
    assert summary["reward_after"] - summary["reward_before"] >= 0.2, summary
    history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
    assert all("rewards/math_answer/mean" in e for e in history if "reward" in e)
