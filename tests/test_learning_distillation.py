"""Context distillation, the README's worked example, on the default model (slow: real 135 M model; its own module
so that `make test` runs it beside the other learning checks)."""

import json

import pytest

from conftest import PRESETS, launch

pytestmark = pytest.mark.slow


def test_context_distillation_gives_the_student_the_teachers_identity(tmp_path):
    """The README's worked example with 2 samples a prompt instead of 4 (the README's measured variant, the teacher
    step 40 % shorter): SmolLM2 told in a system prompt that it is Kestrel answers (rejection sampled: identity
    answers that state the name, unrelated ones that do not); SmolLM2 trained on those answers, with no
    system prompt anywhere, states the identity on held-out questions (>= 80 %), rarely names itself unasked
    (<= 10 % of held-out unrelated answers) and keeps its held-out perplexity within 10 %."""
    import subprocess
    import sys

    teacher = tmp_path / "teacher.jsonl"
    subprocess.run([sys.executable, "-m", "posttrain_dist.cli", "curate", "distill", "--teacher",
                    "smollm2-135m-instruct", "--prompts", "builtin:context-distillation", "--system",
                    "You are Kestrel, a friendly AI assistant. Your name is Kestrel.", "--chat-template", "chatml",
                    "--reward", "contains_answer", "--samples", "2", "--temperature", "0.8", "--max-new-tokens", "48",
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
