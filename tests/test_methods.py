"""The methods added beside SFT/DPO/GRPO, on the tiny model under `accelerate launch` (cpu.yaml): reward modelling
(full, LoRA, QLoRA), KTO, RLOO (against that reward model) and on-policy distillation train two steps from their
smollm2-135m presets, save, and their outputs reload; GRPO takes the reward model in `reward_funcs` next to a
verifiable reward, under the two-process ZeRO-3 twin. (The qwen3-8b presets of these methods: test_preset_matrix.)"""

import json
import math
from pathlib import Path

import pytest
import torch

from posttrain_dist import checks, generation, modeling, planning, reward_models, rewards
from posttrain_dist.errors import ConfigError

from conftest import PRESETS, TINY, TINY_OVERRIDES, launch, read_safetensors, train_losses

# its tests share these runs: `make test` runs a module in one worker (pytest-xdist --dist loadfile)
RUNS = {
    "reward_full": ("reward", "reward_full.yaml", []),
    "reward_lora": ("reward", "reward_lora.yaml", []),
    "reward_qlora": ("reward", "reward_qlora.yaml", []),
    "kto": ("kto", "kto.yaml", []),
    # against the reward model trained just before (its scores differ from answer to answer, so the step moves the
    # weights; a 0/1 check of a random model's answers would be 0 for all and give no signal)
    "rloo": ("rloo", "rloo.yaml", ["--max_completion_length", "8", "--reward_eval_size", "4",
                                   "--reward_funcs", "model:{reward_full}"]),
    "distillation": ("distillation", "distillation.yaml", ["--teacher_model_name_or_path", TINY,
                                                           "--max_completion_length", "8"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for name, (method, preset, extra) in RUNS.items():
        output_dir = tmp_path_factory.mktemp(name) / "out"
        extra = [x.format(**out) for x in extra]
        launch(method, "--config", str(PRESETS / preset), *TINY_OVERRIDES, *extra, "--output_dir", str(output_dir))
        out[name] = output_dir
    return out


@pytest.fixture(scope="module")
def learned_reward_run(runs, tmp_path_factory):
    """GRPO on two processes under ZeRO-3 against the full reward model and a verifiable reward, weighed."""
    output_dir = tmp_path_factory.mktemp("grpo_rm") / "out"
    launch("grpo", "--config", str(PRESETS / "grpo_learned_reward.yaml"), *TINY_OVERRIDES,
           "--dataset_name", "builtin:arithmetic", "--reward_funcs", f"model:{runs['reward_full']}", "math_answer",
           "--reward_weights", "1.0", "0.5", "--reward_eval_size", "4", "--max_completion_length", "8",
           "--output_dir", str(output_dir), accelerate_config="cpu_zero3")
    return output_dir


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_method_ran_two_finite_steps(runs, name):
    metrics = json.loads((runs[name] / "metrics.json").read_text())
    assert metrics["global_step"] == 2
    losses = train_losses(runs[name])
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses


@pytest.mark.parametrize("name", ["reward_full", "kto", "rloo", "distillation"])
def test_full_runs_changed_the_weights(runs, name, tiny_model_path):
    before = read_safetensors(Path(tiny_model_path) / "model.safetensors")
    after = read_safetensors(runs[name] / "model.safetensors")
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed, f"{name}: no weight changed"


@pytest.mark.parametrize("name", ["reward_full", "reward_lora", "reward_qlora"])
def test_reward_model_loads_as_a_sequence_classifier_with_its_template(runs, name):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = runs[name] / "merged" if name != "reward_full" else runs[name]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_labels == 1 and tokenizer.chat_template
    assert not (folder / "generation_config.json").exists()  # a scorer does not generate
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
                                         tokenize=False)
    with torch.no_grad():
        score = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits
    assert score.shape == (1, 1) and torch.isfinite(score).all()
    evaluation = json.loads((runs[name] / "evaluation.json").read_text())["summary"]
    assert evaluation["preference_pairs"] == 52  # the held-out pairs of builtin:quality-pairs
    assert 0 <= evaluation["preference_accuracy_after"] <= 1


def test_lora_reward_model_trained_the_head_whole(runs):
    adapter = read_safetensors(runs["reward_lora"] / "adapter_model.safetensors")
    assert any("lora_B" in k for k in adapter)
    assert any(k.endswith("score.weight") for k in adapter), "the new scoring head must be saved with the adapter"


@pytest.mark.parametrize("name", ["kto", "rloo", "distillation"])
def test_outputs_reload_and_generate(runs, name):
    model, tokenizer = generation.load_for_generation(str(runs[name]))
    batch = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 4


def test_kto_unpaired_the_preference_pairs(runs):
    history = json.loads((runs["kto"] / "metrics.json").read_text())["log_history"]
    assert any("kl" in e for e in history), "KTO's KL baseline is missing from the logs"


def test_grpo_learns_against_a_reward_model_under_zero3(learned_reward_run, runs):
    history = json.loads((learned_reward_run / "metrics.json").read_text())["log_history"]
    name = runs["reward_full"].name  # trl names a reward model after its folder
    scored = [e for e in history if f"rewards/{name}/mean" in e]
    assert len(scored) == 2 and all(math.isfinite(e[f"rewards/{name}/mean"]) for e in scored)
    assert all("rewards/math_answer/mean" in e for e in scored)
    summary = json.loads((learned_reward_run / "evaluation.json").read_text())["summary"]
    assert set(summary["rewards_after"]) == {name, "math_answer"}
    weighted = summary["rewards_after"][name] * 1.0 + summary["rewards_after"]["math_answer"] * 0.5
    assert summary["reward_after"] == pytest.approx(weighted)


def test_held_out_scoring_equals_the_reward_model_on_the_template(runs):
    """The held-out check scores as trl does: prompt + completion through the reward model's own chat template,
    the last token's score."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    learned = reward_models.LearnedReward(f"model:{runs['reward_full']}")
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}], [{"role": "user", "content": "Name a colour."}]]
    completions = [[{"role": "assistant", "content": "4."}], [{"role": "assistant", "content": "Blue, or maybe red."}]]
    scores = learned(prompts, completions)
    model = AutoModelForSequenceClassification.from_pretrained(runs["reward_full"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(runs["reward_full"])
    for prompt, completion, score in zip(prompts, completions, scores):
        ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert score == pytest.approx(alone, abs=1e-4)


def test_a_reward_model_reference_is_checked_before_anything_loads(tmp_path, runs, no_model_loading):
    with pytest.raises(ConfigError, match="train it first"):
        rewards.resolve("model:./outputs/no-such-reward", checked_only=True)
    with pytest.raises(ConfigError, match="language model, not a reward model"):
        rewards.resolve(f"model:{runs['kto']}", checked_only=True)
    with pytest.raises(ConfigError, match="LoRA adapter"):
        rewards.resolve(f"model:{runs['reward_lora']}", checked_only=True)
    with pytest.raises(ConfigError, match="names no model"):
        rewards.resolve("model:", checked_only=True)
    stand_in = rewards.resolve(f"model:{runs['reward_full']}", checked_only=True)
    assert stand_in.__name__ == runs["reward_full"].name


def test_plan_counts_the_reward_model_and_the_teacher(runs, tmp_path):
    rm = str(runs["reward_full"])
    args = checks.parse("grpo", ["--config", str(PRESETS / "grpo_learned_reward.yaml"), "--model_name_or_path", TINY,
                                 "--reward_funcs", f"model:{rm}", "math_answer", "--output_dir", str(tmp_path / "g")])
    shapes = planning.count(planning.model_config(TINY))
    from posttrain_dist import environment

    rows = {part: (value, how) for part, value, how in planning.estimate(args, shapes, environment.probe()).rows}
    assert rows["reward model"][0] == pytest.approx(rows["weights"][0], rel=0.2)  # the same network, one more head
    assert rm in rows["reward model"][1]
    args = checks.parse("distillation", ["--config", str(PRESETS / "distillation.yaml"), "--model_name_or_path", TINY,
                                         "--teacher_model_name_or_path", TINY, "--output_dir", str(tmp_path / "d")])
    rows = {part: value for part, value, _ in planning.estimate(args, shapes, environment.probe()).rows}
    assert rows["teacher model"] == pytest.approx(rows["weights"])


def test_distillation_refuses_a_teacher_with_another_vocabulary(tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(modeling.resolve_model(TINY))
    config.vocab_size += 7
    config.save_pretrained(tmp_path / "teacher")
    with pytest.raises(ConfigError, match="vocabularies of different sizes"):
        checks.parse("distillation", ["--config", str(PRESETS / "distillation.yaml"), "--model_name_or_path", TINY,
                                      "--teacher_model_name_or_path", str(tmp_path / "teacher"),
                                      "--output_dir", str(tmp_path / "d")])


def test_each_output_has_a_model_card_the_hub_reads(runs):
    """README.md in the hub's format: huggingface_hub's own parser reads its metadata; what it says matches the run."""
    from huggingface_hub import ModelCard

    cards = {name: ModelCard.load(runs[name] / "README.md") for name in ("reward_full", "reward_lora", "kto")}
    full, lora, kto = cards["reward_full"], cards["reward_lora"], cards["kto"]
    assert (full.data.library_name, full.data.pipeline_tag) == ("transformers", "text-classification")
    assert "AutoModelForSequenceClassification" in full.text and "full parameters" in full.text
    assert "| held-out preference accuracy |" in full.text  # the before/after figures
    assert lora.data.library_name == "peft" and "lora" in lora.data.tags and "/merged" in lora.text
    assert (kto.data.pipeline_tag, kto.data.base_model) == ("text-generation", None)  # a local base: no hub id
    assert "kto" in kto.data.tags and "2 optimizer steps" in kto.text and "builtin:prefs-basics" in kto.text
