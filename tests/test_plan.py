"""`posttrain-dist plan`: every shipped preset planned, and the memory estimate's arithmetic checked by hand."""

import math
import re

import pytest

from posttrain_dist import cli, data, methods, planning, resources

from conftest import PRESETS, RECIPES, ROOT, where_presets_find_their_data

# Each preset with the accelerate config it is meant for (the cluster presets: 8 GPUs a node).
SHIPPED = [(p, "cpu", 1, None) for p in sorted(PRESETS.glob("*.yaml"))] + [
    (p, "zero3", 2 if "vllm_server" in p.name else 1, 8) for p in sorted((RECIPES / "qwen3-8b").glob("*.yaml"))]


@pytest.mark.parametrize("preset,accelerate,nodes,gpus", SHIPPED, ids=lambda v: getattr(v, "name", str(v)))
def test_plan_every_shipped_preset(preset, accelerate, nodes, gpus, capsys, no_model_loading, tmp_path, monkeypatch):
    where_presets_find_their_data(preset, tmp_path, monkeypatch)
    argv = ["plan", resources.display(str(preset)), "--accelerate", accelerate, "--nodes", str(nodes)]
    cli.main(argv + (["--gpus-per-node", str(gpus)] if gpus else []))
    out = capsys.readouterr().out
    world = nodes * (gpus or 1)
    assert f"processes: {world} " in out
    assert "global batch:" in out and "optimizer steps:" in out
    assert re.search(r"accelerate launch --config_file \S*accelerate_configs/", out)
    if nodes > 1:
        assert f"--num_machines {nodes} --machine_rank 0 --num_processes {world}" in out
    assert "[file]" in out  # values from the preset say so
    assert f"Memory estimate per {'GPU' if gpus else 'CPU process'}" in out
    for part in ("weights", "gradients", "optimizer", "activations", "logits", "total", "Left out of the estimate"):
        assert part in out, part


def plan(preset, accelerate="cpu", nodes=1, gpus=None, *overrides):
    method = preset.split("/")[-1].split("_")[0]
    return planning.make(method, str(ROOT / "recipes" / preset), str(ROOT / "accelerate_configs" / f"{accelerate}.yaml"),
                         nodes, gpus, list(overrides))


def parts(p) -> dict:
    return {name: value for name, value, _ in p.estimate.rows}


def test_full_training_memory_by_hand():
    p = plan("smollm2-135m/sft_full.yaml")
    n = p.shapes.parameters
    assert 134e6 < n < 136e6  # SmolLM2-135M, embeddings tied
    got = parts(p)
    assert got["weights"] == n * 4 and got["gradients"] == n * 4  # float32 on CPU
    assert got["optimizer"] == n * 8  # AdamW: two float32 states
    tokens = p.args.training.per_device_train_batch_size * p.args.training.max_length
    # trl's fused LM head: one tile of min(tokens, 4096) x min(vocabulary, 32768) float32 logits, forward and backward
    assert got["logits"] == 2 * min(tokens, 4096) * 32768 * 4
    assert got["CPU process"] == planning.CPU_PROCESS
    # gradients appear as backward frees the activations: the total holds the larger, not both
    held = got["weights"] + got["optimizer"] + max(got["gradients"], got["activations"] + got["logits"]) + got["CPU process"]
    assert p.estimate.total == pytest.approx(held)


def test_zero3_shards_weights_gradients_and_optimizer():
    one = parts(plan("qwen3-8b/sft_full.yaml", "zero3", 1, 1))
    eight = parts(plan("qwen3-8b/sft_full.yaml", "zero3", 1, 8))
    for part in ("weights", "gradients", "optimizer"):
        assert eight[part] == pytest.approx(one[part] / 8)
    assert eight["activations"] == one["activations"]
    assert one["optimizer"] == pytest.approx(8.19e9 * 12, rel=0.01)  # bf16 under DeepSpeed: fp32 master + 2 states
    zero2 = parts(plan("qwen3-8b/sft_full.yaml", "zero2", 1, 8))
    assert zero2["weights"] == one["weights"] and zero2["gradients"] == pytest.approx(one["gradients"] / 8)
    offload = parts(plan("qwen3-8b/sft_full.yaml", "zero3_offload", 1, 8))
    assert offload["optimizer"] == 0 and offload["weights"] == 0


def test_lora_and_qlora_shrink_what_full_training_keeps():
    full = parts(plan("smollm2-135m/sft_full.yaml"))
    lora_plan = plan("smollm2-135m/sft_lora.yaml")
    lora, qlora = parts(lora_plan), parts(plan("smollm2-135m/sft_qlora.yaml"))
    adapters = lora_plan.shapes.lora_parameters
    r = lora_plan.args.model.lora_r
    # every linear layer of the 30 decoder layers gets r x (in + out) parameters
    s = lora_plan.shapes
    per_layer = r * ((s.hidden + s.hidden) * 2 + (s.hidden + s.kv_dim) * 2 + (s.hidden + s.intermediate) * 3)
    assert adapters == s.layers * per_layer
    assert lora["gradients"] == adapters * 4 and lora["optimizer"] == adapters * 8
    # on a CPU the 4-bit load keeps the memory-mapped checkpoint it read resident; on GPUs only the 4-bit weights
    assert qlora["weights"] == pytest.approx(full["weights"] + 0.106e9 * 0.52 + 28.3e6 * 4 + adapters * 4, rel=0.02)
    gpu_full = parts(plan("smollm2-135m/sft_full.yaml", "ddp", 1, 1))
    gpu_qlora = parts(plan("smollm2-135m/sft_qlora.yaml", "ddp", 1, 1))
    assert gpu_qlora["weights"] < 0.35 * gpu_full["weights"]
    assert gpu_qlora["weights"] + gpu_qlora["optimizer"] + gpu_qlora["gradients"] < 0.15 * (
        gpu_full["weights"] + gpu_full["optimizer"] + gpu_full["gradients"])


def test_dpo_full_keeps_a_reference_copy_lora_does_not():
    full = parts(plan("smollm2-135m/dpo_full.yaml"))
    assert full["reference model"] == full["weights"]
    assert "reference model" not in parts(plan("smollm2-135m/dpo_lora.yaml"))
    assert "reference model" not in parts(plan("smollm2-135m/dpo_full.yaml", "cpu", 1, None,
                                                "--precompute_ref_log_probs", "true"))


def test_steps_come_from_the_data_when_max_steps_is_unset():
    p = plan("smollm2-135m/sft_full.yaml", "cpu", 1, None, "--max_steps", "-1", "--num_train_epochs", "2",
             "--gradient_accumulation_steps", "2")
    rows = len(data.load_for(methods.get("sft"), p.args.recipe)[0])
    assert p.global_batch == 8 * 2
    assert p.steps == math.ceil(rows * 2 / 16)


def test_planned_world_size_checks_grpo_batches():
    from posttrain_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="does not divide by num_generations 8"):
        plan("qwen3-8b/grpo_countdown_colocate.yaml", "zero3", 1, 3, "--gradient_accumulation_steps", "1",
             "--per_device_train_batch_size", "2")


def test_a_hub_model_is_not_waited_for_where_the_hub_cannot_be_reached(monkeypatch):
    """Planning a GRPO preset of a hub model from a login node without the hub: its tokenizer (for the prompt
    lengths) is read from the local cache only, at once, instead of the hub client's minute of retries."""
    import transformers

    from posttrain_dist import sources

    asked = []

    def from_pretrained(name, **kwargs):
        asked.append((name, kwargs.get("local_files_only")))
        raise OSError(f"{name} is not in the cache")

    monkeypatch.setattr(sources, "hub_unreachable", lambda: "huggingface.co: Name or service not known")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    p = plan("qwen3-8b/grpo_countdown_colocate.yaml", "zero3", 1, 8, "--max_steps", "-1")
    assert asked == [("Qwen/Qwen3-8B", True)]
    assert p.steps is not None and "lengths unchecked" in p.steps_how


def test_identity_curation_counts_its_identity_and_contrast_pairs(tmp_path):
    p = plan("smollm2-135m/dpo_identity.yaml", "cpu", 1, None, "--max_steps", "-1", "--num_train_epochs", "1",
             "--output_dir", str(tmp_path))
    assert p.steps == (48 + 16) // 8  # 48 questions, each one way, greedy; 0.34 contrast pairs per identity pair
    p = plan("smollm2-135m/dpo_identity.yaml", "cpu", 1, None, "--max_steps", "-1", "--num_train_epochs", "1",
             "--output_dir", str(tmp_path), "--identity_all_ways", "true", "--identity_samples_per_prompt", "2", "--identity_contrast_ratio", "1")
    assert p.steps == (48 * 3 * 2 + 48) // 8  # every question three ways, two samples each; contrast: 48 prompts
