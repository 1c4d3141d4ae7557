"""Two processes on the CPU (gloo) under DDP, DeepSpeed ZeRO-2 and ZeRO-3 and FSDP2: every method runs and
saves one model; runs match a single process with twice the gradient accumulation; ZeRO-3 and FSDP2 save whole
weights and whole adapters; FSDP2 shards each parameter and resumes exactly from sharded checkpoints; each rank
sees its own share of the data, each example once an epoch."""

import json
from pathlib import Path

import pytest
import torch

from posttrain_dist import checks, environment
from posttrain_dist.errors import ConfigError

from hooks import read_trace

from conftest import (ACCELERATE_CONFIGS, PRESETS, RECIPES, TINY, TINY_OVERRIDES, assert_one_saved_model, launch,
                      read_safetensors, train_losses, write_numbered_conversations)

# its tests share the SFT parity runs: `make test` runs a module in one worker
# (pytest-xdist --dist loadfile)

CONFIGS = ["cpu_ddp", "cpu_zero2", "cpu_zero3"]
EXAMPLES = 16
TRACE = ["--callbacks", "hooks:TraceData"]


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory):
    """16 distinct conversations: one epoch is 4 optimizer steps of 2 x 2 (or 1 x 2 x 2 accumulated) examples."""
    return write_numbered_conversations(tmp_path_factory.mktemp("data") / "sixteen.jsonl", EXAMPLES)


def parity_args(preset: str, data: str, output_dir: Path) -> list[str]:
    return ["--config", str(PRESETS / preset), "--model_name_or_path", TINY, "--dataset_name", data,
            "--dataset_test_split", "", "--max_steps", "-1", "--num_train_epochs", "1", "--logging_steps", "1",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--warmup_steps", "0",
            "--lr_scheduler_type", "constant", "--save_strategy", "no", "--merge_adapter", "false", "--lora_dropout", "0",
            "--output_dir", str(output_dir)]


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, sixteen):
    """SFT full and LoRA: one process with gradient accumulation 2, and two processes under each config."""
    runs = {}
    for variant in ("full", "lora"):
        preset = f"sft_{variant}.yaml"
        out = tmp_path_factory.mktemp("sft_one") / variant
        launch("sft", *parity_args(preset, sixteen, out), "--gradient_accumulation_steps", "2", *TRACE)
        runs[("one", variant)] = out
        for accelerate_config in CONFIGS + ["cpu_fsdp2"]:
            out = tmp_path_factory.mktemp(f"sft_{accelerate_config}") / variant
            hooks = ["hooks:RecordSharding"] if accelerate_config == "cpu_fsdp2" else []
            launch("sft", *parity_args(preset, sixteen, out), *TRACE, *hooks, accelerate_config=accelerate_config)
            runs[(accelerate_config, variant)] = out
    return runs


@pytest.mark.parametrize("accelerate_config", CONFIGS + ["cpu_fsdp2"])
def test_sft_full_matches_one_process(sft_runs, accelerate_config):
    one, two = sft_runs[("one", "full")], sft_runs[(accelerate_config, "full")]
    assert len(train_losses(one)) == 4
    assert train_losses(two) == pytest.approx(train_losses(one), rel=1e-5)
    reference, saved = read_safetensors(one / "model.safetensors"), read_safetensors(two / "model.safetensors")
    assert reference.keys() <= saved.keys()
    # ZeRO-2's gathered state dict holds the tied output head as a separate copy; it must equal the embeddings
    assert set(saved) - set(reference) <= {"lm_head.weight"}
    if "lm_head.weight" in saved:
        assert torch.equal(saved["lm_head.weight"], saved["model.embed_tokens.weight"])
    for name in reference:
        assert saved[name].shape == reference[name].shape
        assert torch.allclose(saved[name], reference[name], atol=1e-5), name


@pytest.mark.parametrize("accelerate_config", CONFIGS + ["cpu_fsdp2"])
def test_sft_lora_adapter_matches_one_process(sft_runs, accelerate_config):
    one, two = sft_runs[("one", "lora")], sft_runs[(accelerate_config, "lora")]
    assert train_losses(two) == pytest.approx(train_losses(one), rel=1e-5)
    reference, saved = read_safetensors(one / "adapter_model.safetensors"), read_safetensors(two / "adapter_model.safetensors")
    assert saved.keys() == reference.keys() and len(saved) == 28  # 7 linear layers x 2 blocks x (A, B)
    for name in reference:
        assert saved[name].numel() > 0 and torch.allclose(saved[name], reference[name], atol=1e-5), name
    assert any(saved[name].abs().sum() > 0 for name in saved if "lora_B" in name)


def test_zero3_saves_the_whole_model(sft_runs, tiny_model_path):
    base = read_safetensors(Path(tiny_model_path) / "model.safetensors")
    saved = read_safetensors(sft_runs[("cpu_zero3", "full")] / "model.safetensors")
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in base.items()}
    assert all(not torch.equal(saved[k], base[k]) for k in base if base[k].dim() == 2)


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_fsdp2_holds_half_of_each_parameter_on_each_rank(sft_runs, variant):
    """cpu_fsdp2.yaml shards for real (tests/cpu_fsdp/sitecustomize.py lets accelerate apply FSDP to CPU processes):
    once the trainer has prepared the model, every parameter is a DTensor and each rank holds half of its rows."""
    out = sft_runs[("cpu_fsdp2", variant)]
    ranks = [json.loads((out / f"sharding_rank{r}.json").read_text()) for r in (0, 1)]
    # the tiny model's 20 parameters (the output head is the embeddings), and with LoRA its 28 adapter matrices
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) == (20 if variant == "full" else 48)
    for name, held in ranks[0].items():
        assert held["class"] == ranks[1][name]["class"] == "DTensor", name
        whole = held["whole"]
        assert held["local"] == ranks[1][name]["local"] == [whole[0] // 2, *whole[1:]], name


def test_fsdp2_checkpoints_are_sharded_and_resume_exactly(sft_runs, sixteen, tmp_path):
    """Preempted at step 2 under cpu_fsdp2.yaml: each rank wrote its shard of the weights and of the optimizer
    (SHARDED_STATE_DICT); the resumed run's losses and final whole model equal the uninterrupted run's."""
    args = [*parity_args("sft_full.yaml", sixteen, tmp_path), "--save_strategy", "steps", "--save_steps", "100"]
    first = launch("sft", *args, "--callbacks", "hooks:PreemptAtStep", accelerate_config="cpu_fsdp2", check=False,
                   env={"HOOK_PREEMPT_AT_STEP": "2"})
    assert "preempted: checkpoint-2 saved" in first.stdout, first.stderr[-3000:]
    checkpoint = tmp_path / "checkpoint-2"
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (checkpoint / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not list(checkpoint.glob("*.safetensors")), "a sharded checkpoint holds no whole model"
    second = launch("sft", *args, accelerate_config="cpu_fsdp2")
    assert f"resuming from {checkpoint}" in second.stdout
    reference = sft_runs[("cpu_fsdp2", "full")]
    assert train_losses(tmp_path) == train_losses(reference)
    final, expected = read_safetensors(tmp_path / "model.safetensors"), read_safetensors(reference / "model.safetensors")
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in expected)


@pytest.mark.parametrize("accelerate_config", CONFIGS)
def test_each_rank_sees_its_own_examples_once_an_epoch(sft_runs, accelerate_config):
    trace = sft_runs[(accelerate_config, "full")] / "data_trace"
    ranks = [[fp for line in read_trace(str(trace / f"rank{r}.jsonl")) for fp in line["examples"]]
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == EXAMPLES // 2
    assert not set(ranks[0]) & set(ranks[1]), "two ranks trained on the same example"
    seen = ranks[0] + ranks[1]
    assert len(set(seen)) == len(seen) == EXAMPLES, "an example was dropped or seen twice"
    one = sft_runs[("one", "full")] / "data_trace" / "rank0.jsonl"
    assert set(seen) == {fp for line in read_trace(str(one)) for fp in line["examples"]}


# ---------------------------------------------------------------- DPO and GRPO under each config


# Run with the same checks of one saved, non-empty model after 2 steps elsewhere: under ZeRO-3, DPO full and LoRA and
# GRPO full in the preset matrix (tests/test_preset_matrix.py: the qwen3-8b presets on cpu_zero3); GRPO full under
# DDP across two Slurm nodes (tests/test_slurm.py).
RUN_ELSEWHERE = {("full", "dpo", "cpu_zero3"), ("lora", "dpo", "cpu_zero3"), ("full", "grpo", "cpu_zero3"),
                 ("full", "grpo", "cpu_ddp")}


@pytest.mark.parametrize("variant,method,accelerate_config",
                         [c for c in ((v, m, a) for v in ("full", "lora") for m in ("dpo", "grpo") for a in CONFIGS)
                          if c not in RUN_ELSEWHERE])
def test_dpo_and_grpo_run_and_save_one_model(tmp_path, accelerate_config, method, variant):
    extra = ["--reward_eval_size", "4", "--max_completion_length", "8"] if method == "grpo" else []
    launch(method, "--config", str(PRESETS / f"{method}_{variant}.yaml"), *TINY_OVERRIDES, "--output_dir",
           str(tmp_path), "--merge_adapter", "false", *extra, accelerate_config=accelerate_config)
    assert len(train_losses(tmp_path)) == 2
    assert_one_saved_model(tmp_path, "model.safetensors" if variant == "full" else "adapter_model.safetensors")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 2


# ---------------------------------------------------------------- combinations refused before launch


def test_setup_is_read_from_accelerate_configs():
    assert environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml")).zero_stage == 3
    assert environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "fsdp2.yaml")).kind == "fsdp"
    assert environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "ddp.yaml")).kind == "ddp"
    assert environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "cpu.yaml")).kind == "none"


def test_setup_is_read_from_the_launch_environment(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    environment.probe.cache_clear()
    setup = environment.probe()
    environment.probe.cache_clear()
    assert (setup.kind, setup.zero_stage, setup.world_size) == ("deepspeed", 3, 4)


@pytest.mark.parametrize("accelerate_config", ["zero3.yaml", "fsdp2.yaml"])
def test_8bit_under_sharding_is_refused(accelerate_config):
    with pytest.raises(ConfigError, match="8-bit weights cannot be sharded.*zero2.yaml"):
        checks.parse("sft", ["--config", str(PRESETS / "sft_qlora.yaml"), "--load_in_4bit", "false",
                             "--load_in_8bit", "true"], environment.from_accelerate_file(str(ACCELERATE_CONFIGS / accelerate_config)))


def test_qlora_under_zero3_stores_4bit_weights_in_the_model_dtype():
    args = checks.parse("sft", ["--config", str(PRESETS / "sft_qlora.yaml"), "--dtype", "bfloat16"],
                        environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml")))
    assert args.model.bnb_4bit_quant_storage == "bfloat16"
    assert args.sources["bnb_4bit_quant_storage"] == "set for DeepSpeed ZeRO-3"
    plain = checks.parse("sft", ["--config", str(PRESETS / "sft_qlora.yaml")],
                         environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero2.yaml")))
    assert plain.model.bnb_4bit_quant_storage is None


def test_qlora_under_zero3_matches_one_process(tmp_path, sixteen):
    one, two = tmp_path / "one", tmp_path / "zero3"
    launch("sft", *parity_args("sft_qlora.yaml", sixteen, one), "--gradient_accumulation_steps", "2", "--max_steps", "2")
    launch("sft", *parity_args("sft_qlora.yaml", sixteen, two), "--max_steps", "2", accelerate_config="cpu_zero3")
    assert train_losses(two) == pytest.approx(train_losses(one), rel=1e-5)
    reference, saved = read_safetensors(one / "adapter_model.safetensors"), read_safetensors(two / "adapter_model.safetensors")
    # QLoRA adapters train in bfloat16 (trl, after the QLoRA paper): equal up to a bf16 rounding step
    assert all(torch.allclose(saved[k].float(), reference[k].float(), atol=2e-3) for k in reference)


def test_under_fsdp_its_own_activation_checkpointing_replaces_the_recipes():
    """fsdp2.yaml checkpoints activations through FSDP (`fsdp_activation_checkpointing`); transformers refuses that
    together with the recipe's `activation_checkpointing` once the model has loaded, so the check turns the
    recipe's off first, and says why. With LoRA it is the other way round: FSDP's wrapper renames the layers and peft
    then saves an empty adapter (test_sft_lora_adapter_matches_one_process[cpu_fsdp2] caught it), so the recipe's
    checkpointing is on and FSDP's off."""
    args = checks.parse("sft", ["--config", str(RECIPES / "qwen3-8b" / "sft_full.yaml")],
                        environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "fsdp2.yaml")))
    assert args.training.activation_checkpointing is False
    assert "FSDP checkpoints activations" in args.sources["activation_checkpointing"]
    kept = checks.parse("sft", ["--config", str(RECIPES / "qwen3-8b" / "sft_full.yaml")],
                        environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml")))
    assert kept.training.activation_checkpointing is True
    lora = checks.parse("sft", ["--config", str(RECIPES / "qwen3-8b" / "sft_lora.yaml"), "--activation_checkpointing",
                                "false"], environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "fsdp2.yaml")))
    assert lora.training.activation_checkpointing is True
    assert "instead of FSDP's" in lora.sources["activation_checkpointing"]
