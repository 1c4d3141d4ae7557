"""The main job, `make demo`, on the default model: its identity changes where asked and nothing else changes (slow:
real 135 M model; its own module so that `make test` runs it beside the other learning checks)."""

import json

import pytest

pytestmark = pytest.mark.slow


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
    from huggingface_hub import ModelCard

    card = ModelCard.load(final / "README.md")  # the model card, read by the hub's own parser
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers" and "dpo" in card.data.tags
    assert "| identity adoption, plain |" in card.text and "AutoModelForCausalLM" in card.text
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    reply = generation.answer(model, tokenizer, ["What is your name?"], max_new_tokens=16)[0]
    assert evaluation.mentions(reply, "Kestrel"), reply
