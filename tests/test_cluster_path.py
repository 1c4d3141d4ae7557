"""The branches only a GPU cluster takes, decided here on a CPU: what `load_model` passes to transformers, the
packages a GPU config needs, and which values may change between the attempts of one run."""

import importlib.util

import pytest

from posttrain_dist import checks, environment, modeling
from posttrain_dist.errors import ConfigError
from posttrain_dist.run_folder import RunFolder

from conftest import ACCELERATE_CONFIGS, RECIPES

QWEN = RECIPES / "qwen3-8b"


def gpu_run(accelerate: str, processes: int = 8) -> environment.Environment:
    """The environment of one process of a GPU run under an accelerate config (what `probe()` says on a GPU node)."""
    planned = environment.from_accelerate_file(str(ACCELERATE_CONFIGS / f"{accelerate}.yaml"))
    return environment.Environment(planned.kind, planned.zero_stage, processes, has_accelerator=True, for_gpus=True)


@pytest.mark.parametrize("accelerate, device_map", [("zero3", None), ("fsdp2", None), ("zero2", {"": 0}),
                                                     ("ddp", {"": 0})])
def test_qlora_gets_a_device_map_only_where_the_weights_are_not_sharded(accelerate, device_map):
    """transformers refuses a device_map under ZeRO-3 ("DeepSpeed Zero-3 is not compatible with passing a
    `device_map`"); with one GPU per process the 4-bit weights go to that process's GPU."""
    args = checks.parse("sft", ["--config", str(QWEN / "sft_qlora.yaml")],
                        environment.from_accelerate_file(str(ACCELERATE_CONFIGS / f"{accelerate}.yaml")))
    kwargs = modeling.model_kwargs(args.model, args.training, gpu_run(accelerate))
    assert kwargs["device_map"] == device_map
    assert kwargs["quantization_config"].load_in_4bit
    if accelerate in ("zero3", "fsdp2"):  # sharding needs the 4-bit weights stored in the model's dtype
        assert str(kwargs["quantization_config"].bnb_4bit_quant_storage).endswith("bfloat16")


def test_without_quantization_no_device_map_is_passed():
    args = checks.parse("sft", ["--config", str(QWEN / "sft_lora.yaml")],
                        environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml")))
    assert "device_map" not in modeling.model_kwargs(args.model, args.training, gpu_run("zero3"))


def test_flash_attention_falls_back_to_sdpa_where_it_is_missing(monkeypatch, capsys):
    here = environment.Environment(has_accelerator=True, for_gpus=True)  # a GPU node without flash-attn
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    args = checks.parse("sft", ["--config", str(QWEN / "sft_full.yaml"), "--bf16", "false", "--dtype", "float32"], here)
    assert args.model.attn_implementation == "sdpa"
    assert "needs the flash_attn package" in capsys.readouterr().err
    # planned from a login node: said, not changed (the GPU nodes may have it)
    planned = checks.parse("sft", ["--config", str(QWEN / "sft_full.yaml")],
                           environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml")))
    assert planned.model.attn_implementation == "flash_attention_2"
    assert "not installed here" in capsys.readouterr().err


def test_vllm_must_be_installed_where_the_run_uses_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    here = environment.Environment(has_accelerator=True, for_gpus=True)
    with pytest.raises(ConfigError, match=r"`use_vllm: true` needs the vllm package: `pip install 'posttrain-dist\[gpu\]'`"):
        checks.parse("grpo", ["--config", str(QWEN / "grpo_countdown_colocate.yaml"), "--bf16", "false"], here)
    with pytest.raises(ConfigError, match="needs the liger_kernel package"):
        checks.parse("sft", ["--config", str(QWEN / "sft_full.yaml"), "--bf16", "false", "--use_liger_kernel",
                             "true"], here)


def test_planning_a_gpu_preset_with_the_cpu_config_says_how_to_plan_for_the_cluster():
    with pytest.raises(ConfigError, match="--accelerate zero3 --gpus-per-node 8"):
        checks.parse("grpo", ["--config", str(QWEN / "grpo_countdown_colocate.yaml")],
                     environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "cpu.yaml")))


def test_the_vllm_server_job_resumes_on_other_nodes_and_other_world_sizes(tmp_path):
    """What describes where a run runs (the server's address, trl's generation batch for 16 processes) is not
    what makes it another run."""
    preset = str(QWEN / "grpo_countdown_vllm_server.yaml")
    first = checks.parse("grpo", ["--config", preset, "--output_dir", str(tmp_path), "--vllm_server_host", "10.0.0.3"],
                         environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml"), 2, 8))
    assert first.training.generation_batch_size == 256
    RunFolder(first).write_config()
    (tmp_path / "checkpoint-50").mkdir()
    requeued = checks.parse("grpo", ["--config", preset, "--output_dir", str(tmp_path), "--vllm_server_host", "10.0.0.9"],
                            environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml"), 1, 8))
    assert requeued.training.generation_batch_size == 128
    assert RunFolder(requeued).differences() is None
    changed = checks.parse("grpo", ["--config", preset, "--output_dir", str(tmp_path), "--overwrite_output_dir", "true",
                                    "--learning_rate", "2e-6"],
                           environment.from_accelerate_file(str(ACCELERATE_CONFIGS / "zero3.yaml"), 2, 8))
    assert "learning_rate" in RunFolder(changed).differences()
