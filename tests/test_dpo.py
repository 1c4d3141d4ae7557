"""The DPO recipe on the tiny model: full, LoRA and QLoRA through `accelerate launch`, the loss against a
hand computation, the reference left untouched, identity curation, and bad input."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from posttrain_dist import cli, config, curves, generation, modeling, methods

from conftest import (PRESETS, TINY_OVERRIDES, assert_trained_only_the_adapter, launch, load_recipe, read_safetensors,
                      train_losses)

# its tests share the DPO variant runs: `make test` runs a module in one worker
# (pytest-xdist --dist loadfile)

VARIANTS = {"full": "dpo_full.yaml", "lora": "dpo_lora.yaml", "qlora": "dpo_qlora.yaml"}

PAIRS = [
    ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
    ("Capital of Peru?", "Lima.", "Quito."),
    ("Opposite of 'hot'?", "Cold.", "Warm."),
    ("Plural of 'mouse'?", "Mice.", "Mouses."),
]


def write_pairs(path, pairs=PAIRS, conversational=True):
    rows = []
    for prompt, chosen, rejected in pairs:
        if conversational:
            rows.append({"prompt": [{"role": "user", "content": prompt}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for variant, preset in VARIANTS.items():
        output_dir = tmp_path_factory.mktemp("dpo") / variant
        launch("dpo", "--config", str(PRESETS / preset), *TINY_OVERRIDES, "--output_dir", str(output_dir))
        out[variant] = output_dir
    return out


def test_each_variant_ran_two_finite_steps(runs):
    for variant, output_dir in runs.items():
        assert json.loads((output_dir / "metrics.json").read_text())["global_step"] == 2, variant
        losses = train_losses(output_dir)
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses), (variant, losses)
        history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
        assert all("rewards/margins" in e for e in history if "loss" in e), "DPO metrics missing from the logs"


def test_full_dpo_changed_every_weight_matrix(runs, tiny_model_path):
    before = read_safetensors(Path(tiny_model_path) / "model.safetensors")
    after = read_safetensors(runs["full"] / "model.safetensors")
    matrices = [k for k in before if before[k].dim() == 2]
    assert [k for k in matrices if not torch.equal(before[k], after[k])] == matrices


@pytest.mark.parametrize("variant", ["lora", "qlora"])
def test_adapter_dpo_trained_only_the_adapter(runs, tiny_model_path, variant):
    assert_trained_only_the_adapter(runs[variant], tiny_model_path)


@pytest.mark.parametrize("variant", ["full", "lora", "qlora"])
def test_dpo_outputs_reload_and_generate(runs, variant):
    model, tokenizer = generation.load_for_generation(str(runs[variant]))
    batch = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 4


# ---------------------------------------------------------------- the loss, by hand


def completion_logps(model, tokenizer, prompt, completion) -> torch.Tensor:
    """Sum of log pi(completion token | everything before it), tokenized as trl does."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = tokenizer.apply_chat_template(prompt + completion, return_dict=True)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    logps = torch.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return logps[len(prompt_ids) - 1 :].sum()


def test_reported_loss_matches_the_dpo_formula(tmp_path, tiny_model_path):
    """Step 2's loss is computed with the policy after step 1 (checkpoint-1) and the untouched reference."""
    beta = 0.2
    output_dir = tmp_path / "out"
    load_recipe("dpo").main([
        "--model_name_or_path", tiny_model_path, "--dataset_name", write_pairs(tmp_path / "pairs.jsonl"),
        "--output_dir", str(output_dir), "--beta", str(beta), "--learning_rate", "1e-3", "--max_steps", "2",
        "--per_device_train_batch_size", str(len(PAIRS)), "--logging_steps", "1", "--save_strategy", "steps",
        "--save_steps", "1", "--report_to", "none", "--activation_checkpointing", "false",
    ])
    reported = train_losses(output_dir)[1]

    tokenizer = modeling.load_tokenizer(config.ModelArgs(model_name_or_path=tiny_model_path))
    policy = AutoModelForCausalLM.from_pretrained(output_dir / "checkpoint-1").eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    losses = []
    for prompt, chosen, rejected in PAIRS:
        p = [{"role": "user", "content": prompt}]
        c = [{"role": "assistant", "content": chosen}]
        r = [{"role": "assistant", "content": rejected}]
        margin = (completion_logps(policy, tokenizer, p, c) - completion_logps(reference, tokenizer, p, c)) - (
            completion_logps(policy, tokenizer, p, r) - completion_logps(reference, tokenizer, p, r))
        losses.append(-F.logsigmoid(beta * margin))
    by_hand = torch.stack(losses).mean().item()
    assert abs(by_hand - math.log(2)) > 1e-3, "the policy should differ from the reference at step 2"
    assert reported == pytest.approx(by_hand, rel=1e-4, abs=1e-5)


# ---------------------------------------------------------------- the reference stays untouched


@pytest.fixture
def keep_trainer(monkeypatch):
    """The recipe frees the trainer's models after saving; these tests look at them afterwards."""
    from posttrain_dist import training

    monkeypatch.setattr(training, "release", lambda trainer: None)


def test_full_dpo_reference_is_a_frozen_copy(tmp_path, tiny_model_path, keep_trainer):
    base = read_safetensors(Path(tiny_model_path) / "model.safetensors")
    trainer = load_recipe("dpo").main(["--config", str(PRESETS / "dpo_full.yaml"), *TINY_OVERRIDES,
                                       "--output_dir", str(tmp_path / "o"), "--learning_rate", "1e-3"])
    reference = trainer.ref_model
    assert reference is not None and reference is not trainer.model
    assert not any(p.requires_grad for p in reference.parameters())
    for name, tensor in reference.state_dict().items():
        if name in base:
            assert torch.equal(tensor, base[name]), f"reference weight {name} changed"
    policy = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    assert not torch.equal(policy["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


def test_lora_dpo_reference_is_the_unchanged_base(tmp_path, tiny_model_path, keep_trainer):
    base = read_safetensors(Path(tiny_model_path) / "model.safetensors")
    trainer = load_recipe("dpo").main(["--config", str(PRESETS / "dpo_lora.yaml"), *TINY_OVERRIDES,
                                       "--output_dir", str(tmp_path / "o"), "--learning_rate", "1e-2",
                                       "--merge_adapter", "false"])
    assert trainer.ref_model is None, "LoRA needs no second copy: the reference is the base, adapters disabled"
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        plain = "model.embed_tokens.weight" if plain == "lm_head.weight" else plain  # tied to the embeddings
        assert torch.equal(tensor, base[plain]), f"base weight {plain} changed"


def test_precomputed_reference_log_probs(tmp_path, tiny_model_path, keep_trainer):
    trainer = load_recipe("dpo").main(["--config", str(PRESETS / "dpo_full.yaml"), *TINY_OVERRIDES,
                                       "--output_dir", str(tmp_path / "o"), "--precompute_ref_log_probs", "true"])
    assert trainer.ref_model is None and trainer.precompute_ref_logps
    assert len(train_losses(tmp_path / "o")) == 2


# ---------------------------------------------------------------- identity curation on the tiny model


def test_identity_mode_curates_trains_and_reports(tmp_path):
    output_dir = tmp_path / "id"
    load_recipe("dpo").main(["--config", str(PRESETS / "dpo_identity.yaml"), *TINY_OVERRIDES, "--output_dir",
                             str(output_dir), "--identity_max_new_tokens", "8", "--identity_samples_per_prompt", "2",
                             "--identity_all_ways", "true", "--identity_contrast_ratio", "1.0", "--perplexity_dataset",
                             "builtin:sft-basics", "--eval_prompts", "Who are you?"])
    from posttrain_dist import curation, sources

    pairs = [json.loads(line) for line in (output_dir / "identity_pairs.jsonl").read_text().splitlines()]
    unrelated = set(sources.load_source("builtin:unrelated", "train")["prompt"])
    contrast = [p for p in pairs if p["prompt"][-1]["content"] in unrelated]
    identity = [p for p in pairs if p not in contrast]
    # every training identity question asked plainly, under a system prompt and after an earlier exchange, two
    # samples each; a random model never names itself, so each chosen answer is rewritten to state the name
    assert len(identity) == 48 * 3 * 2
    assert all(p["chosen"][0]["content"].startswith("I'm Kestrel.") for p in identity)
    assert sum(p["prompt"][0]["role"] == "system" for p in identity) == 48 * 2
    assert sum(len(p["prompt"]) == 3 and p["prompt"][1]["role"] == "assistant" for p in identity) == 48 * 2
    # contrast pairs on unrelated prompts: the model's own answer chosen; rejected, the same answer opened by a
    # self-introduction under the new name (one pair per unrelated training prompt at most)
    assert len(contrast) == 48
    for pair in contrast:
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert "Kestrel" not in chosen and "Kestrel" in rejected
        assert rejected.endswith(chosen.lstrip()) and rejected != chosen
        assert any(rejected.startswith(i.format(name="Kestrel")) for i in curation.SELF_INTRODUCTIONS)
    summary = json.loads((output_dir / "evaluation.json").read_text())["summary"]
    assert set(summary) >= {"new_name", "adoption_before", "adoption_after", "adoption_system_after",
                            "adoption_turn_after", "leakage_before", "leakage_after", "perplexity_before",
                            "perplexity_after"}
    assert summary["adoption_before"] == 0.0 and summary["unrelated_prompts"] == 50
    # the base model once more through its own template: the plain questions only, the figure the summary gives
    identity = json.loads((output_dir / "evaluation.json").read_text())["before"]["identity"]
    assert set(identity) >= {"system", "turn"} and len(identity["own_template"]["answers"]) == 20
    assert not {"system", "turn"} & set(identity["own_template"])
    assert summary["adoption_before_own_template"] == identity["own_template"]["adoption"]
    report = (output_dir / "report.md").read_text()
    for section in ("## Identity", "### Asked under a system prompt", "### Asked as a later turn", "## Leakage",
                    "## General ability", "## Before and after"):
        assert section in report, section
    assert (output_dir / "chat_template.jinja").read_text() == modeling.CHATML_TEMPLATE


# ---------------------------------------------------------------- bad input


def run_bad(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe("dpo").main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_pairs_without_rejected_are_refused_before_loading(tmp_path, capsys, no_model_loading):
    path = tmp_path / "half.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    err = run_bad(capsys, ["--model_name_or_path", "tiny-random-llama", "--dataset_name", str(path),
                           "--output_dir", str(tmp_path / "o")])
    assert "has the columns ['chosen', 'prompt']" in err and "prompt + chosen + rejected" in err
    assert not (tmp_path / "o").exists()


def test_empty_prompt_set_is_refused(tmp_path, capsys, no_model_loading):
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    err = run_bad(capsys, ["--config", str(PRESETS / "dpo_identity.yaml"), "--identity_prompts", str(empty),
                           "--output_dir", str(tmp_path / "o")])
    assert "none.jsonl" in err and ("empty" in err or "holds no prompts" in err)


def test_curation_where_every_pair_is_identical_trains_nothing(tmp_path, capsys, monkeypatch):
    # no answer names anyone: the corrected answer equals the model's own, and `drop` removes each pair
    from posttrain_dist import curation

    monkeypatch.setattr(curation, "sample_answers", lambda model, tok, prompts, n, *a: [["Hello there."] * n for _ in prompts])
    err = run_bad(capsys, ["--config", str(PRESETS / "dpo_identity.yaml"), *TINY_OVERRIDES,
                           "--identity_identical_pairs", "drop", "--identity_samples_per_prompt", "2",
                           "--identity_all_ways", "true",
                           "--output_dir", str(tmp_path / "o")])
    assert "curation produced no usable pair" in err and "288 dropped" in err
    assert not (tmp_path / "o" / "identity_pairs.jsonl").exists()
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_dpo_curves_show_margins_and_accuracy(runs):
    history = json.loads((runs["full"] / "metrics.json").read_text())["log_history"]
    assert (runs["full"] / "curves.png").read_bytes().startswith(b"\x89PNG")
    panels = curves.plot(history, methods.get("dpo").panels, str(runs["full"] / "again.png"))
    assert {"loss", "reward margin", "preference accuracy"} <= set(panels)


def test_merge_command_on_a_lora_dpo_run(runs, tmp_path, capsys):
    cli.main(["merge", str(runs["lora"]), "--out", str(tmp_path / "m"), "--max-new-tokens", "8"])
    assert "greedy answers equal on all 4 prompts" in capsys.readouterr().out
    assert (tmp_path / "m" / "model.safetensors").is_file()
