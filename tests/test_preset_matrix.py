"""The preset matrix: every cluster preset as shipped runs 2 steps on two CPU processes, under the CPU twin of the
accelerate config it is meant for (FSDP2's twin sharding for real), with its own settings (bf16, activation
checkpointing, LoRA targets, packing, the reference model, GRPO's groups of generations and gradient accumulation) on
a tiny Qwen3 of the presets' architecture. The substitutions a
CPU forces are the one table below; the scale (model, steps, lengths, local copies of the hub data) the other.
The smollm2-135m presets are meant for one CPU process: tests/test_sft.py, test_dpo.py and test_grpo.py run them.
"""

import json
import math
from pathlib import Path

import datasets
import pytest

from posttrain_dist import methods

from conftest import RECIPES, assert_one_saved_model, launch, read_safetensors

# preset -> the accelerate config it is meant for (as its header says)
MEANT = {
    "sft_full.yaml": "zero3",
    "sft_lora.yaml": "zero3",
    "sft_qlora.yaml": "ddp",
    "dpo_full.yaml": "zero3",
    "dpo_lora.yaml": "zero3",
    "grpo_countdown_colocate.yaml": "zero3",
    "grpo_countdown_vllm_server.yaml": "zero3",
    "reward_full.yaml": "zero3",
    "kto_full.yaml": "zero3",
    "rloo_countdown_colocate.yaml": "zero3",
    "distillation.yaml": "zero3",
    "grpo_tools_calculator.yaml": "zero3",
}
# presets also meant for FSDP2 (their headers say so): they run under its twin too, sharded for real
ALSO_UNDER = {"sft_full.yaml": "fsdp2", "sft_qlora.yaml": "fsdp2"}
CASES = sorted([*MEANT.items(), *ALSO_UNDER.items()])
CPU_TWIN = {"zero3": "cpu_zero3", "zero2": "cpu_zero2", "ddp": "cpu_ddp", "fsdp2": "cpu_fsdp2"}
# What a CPU cannot do, and what runs instead, where a preset sets it. Nothing else of a preset changes: bf16 weights
# and bf16 mixed precision stay (this CPU computes in bf16, AVX-512 BF16), and so do QLoRA's bf16 compute and storage.
CPU_FORCES = {
    "attn_implementation": "sdpa",  # flash-attention -> PyTorch's sdpa
    "use_vllm": "false",  # vLLM (colocated or a server) -> transformers' generate
}
# The scale: the tiny model of the same architecture, two steps, short sequences, the hub data as local copies
# in the same layouts (train and test splits); methods that generate take fewer rollouts a device
# (smallest_generation_batch).
SCALE = {"model_name_or_path": "tiny-random-qwen3", "max_steps": "2", "max_length": "64", "max_completion_length": "16",
         "dataset_config": "none"}
HUB_DATA = {"HuggingFaceTB/smoltalk": "smoltalk", "trl-lib/ultrafeedback_binarized": "ultrafeedback",
            "openai/gsm8k": "gsm8k"}
# a second model a preset names (the distillation teacher): the tiny one, as the model itself
SCALE_OTHERS = {"teacher_model_name_or_path": "tiny-random-qwen3"}
# the tiny Qwen3's tokenizer carries SmolLM2's template, not Qwen3's (which renders tools): a preset with tools gets
# Qwen3's template as trl ships it, what Qwen3-8B's own tokenizer brings (and the report's held-out rollouts, 8)
SCALE_TOOLS = {"chat_template": "trl:qwen3", "reward_eval_size": "8"}
HOOKS = ["--callbacks", "hooks:RecordCheckpointing", "hooks:ExitTime", "hooks:RecordPrecision", "hooks:RecordSharding"]


def turn(role, text):
    return {"role": role, "content": text}


@pytest.fixture(scope="module")
def hub_copies(tmp_path_factory):
    """Local folders in the layouts of the hub data the presets name (data/{split}-00000-of-00001.parquet)."""
    root = tmp_path_factory.mktemp("hub")
    chats = [{"messages": [turn("system", "Be brief."), turn("user", f"Name a number above {i}."),
                           turn("assistant", f"{i + 1}.")]} for i in range(48)]
    pairs = [{"chosen": [turn("user", f"What is {i} plus one?"), turn("assistant", f"{i + 1}.")],
              "rejected": [turn("user", f"What is {i} plus one?"), turn("assistant", f"{i + 2}.")],
              "score_chosen": 9.0, "score_rejected": 2.0} for i in range(48)]
    questions = [{"question": f"Tom has {i} apples and buys 3 more. How many now?", "answer": f"... #### {i + 3}"}
                 for i in range(48)]
    folders = {}
    for name, rows in (("smoltalk", chats), ("ultrafeedback", pairs), ("gsm8k", questions)):
        (root / name / "data").mkdir(parents=True)
        for split, part in (("train", rows[:40]), ("test", rows[40:])):
            datasets.Dataset.from_list(part).to_parquet(str(root / name / "data" / f"{split}-00000-of-00001.parquet"))
        folders[name] = str(root / name)
    return folders


def run_preset(preset: Path, hub_copies, output_dir, meant: str) -> dict:
    import yaml

    raw = yaml.safe_load(preset.read_text())
    overrides = {**{k: v for k, v in CPU_FORCES.items() if k in raw}, **SCALE}
    if raw.get("dataset_name") in HUB_DATA:
        overrides["dataset_name"] = hub_copies[HUB_DATA[raw["dataset_name"]]]
    overrides.update({k: v for k, v in SCALE_OTHERS.items() if k in raw})
    if raw.get("environment") or raw.get("tools"):
        overrides.update(SCALE_TOOLS)
    if methods.get(raw["method"]).unit != "prompts":  # methods that generate take a completion length instead
        overrides.pop("max_completion_length")
    else:
        overrides.pop("max_length")
        overrides["per_device_train_batch_size"] = str(smallest_generation_batch(raw))
    argv = ["--config", str(preset), *[x for k, v in overrides.items() for x in (f"--{k}", v)], *HOOKS,
            "--output_dir", str(output_dir)]
    launch(raw["method"], *argv, accelerate_config=CPU_TWIN[meant], timeout=900)
    return raw


def smallest_generation_batch(raw: dict, processes: int = 2) -> int:
    """The scale of a method that generates: the fewest rollouts a device may take (at least 2, so that sequences of
    different lengths share a batch) while its gradient accumulation and the two processes still make whole groups
    of `num_generations` (trl's rule), as the preset's own batch does on its GPUs. A step's generation time grows
    with its rollouts: the preset's 8 per device made the tool-use case 2.5 times slower."""
    group = raw.get("num_generations", 8)
    return max(2, group // math.gcd(group, processes * raw.get("gradient_accumulation_steps", 1)))


@pytest.mark.parametrize("name,meant", CASES)
def test_cluster_preset_runs_on_the_cpu_twin_of_its_accelerate_config(name, meant, hub_copies, tmp_path):
    preset = RECIPES / "qwen3-8b" / name
    raw = run_preset(preset, hub_copies, tmp_path, meant)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 2
    weights = tmp_path / ("adapter_model.safetensors" if raw.get("use_peft") else "model.safetensors")
    assert_one_saved_model(tmp_path, weights.name)

    # bf16 as on the GPUs: every floating-point weight (trained and frozen) in bfloat16 during training (FSDP2 keeps
    # fp32 masters) and saved so; under DDP accelerate's autocast computes in bfloat16 (DeepSpeed runs its own bf16)
    assert raw["dtype"] == "bfloat16" and raw["bf16"] is True
    precision = json.loads((tmp_path / "precision_rank0.json").read_text())
    assert set(precision["trainable"]) | set(precision["frozen"]) == {"torch.bfloat16"} or meant == "fsdp2", precision
    if meant == "ddp":
        assert precision["autocast"] == "torch.bfloat16"
    if meant == "fsdp2":  # FSDP2 computes in bf16 through its mixed-precision policy; the shards hold fp32 masters
        sharding = [json.loads((tmp_path / f"sharding_rank{r}.json").read_text()) for r in (0, 1)]
        assert all(held["class"] == "DTensor" and held["local"][0] * 2 == held["whole"][0]
                   for rank in sharding for held in rank.values())
    saved = [weights] + ([tmp_path / "merged" / "model.safetensors"] if raw.get("merge_adapter") else [])
    assert {str(t.dtype) for path in saved for t in read_safetensors(path).values()} == {"torch.bfloat16"}
    for path in saved:
        config = path.parent / "config.json"
        assert not config.is_file() or json.loads(config.read_text())["dtype"] == "bfloat16"

    # activation checkpointing as trl intends it: reentrant for LoRA/QLoRA under ZeRO-3 (non-reentrant fails in
    # backward on partitioned parameters), PyTorch's recommended non-reentrant otherwise; under FSDP2 FSDP's own
    # (no transformers wrapping) except with LoRA (tests/test_distributed.py says why)
    assert raw["activation_checkpointing"] is True
    expected = None if meant == "fsdp2" and not raw.get("use_peft") else [bool(raw.get("use_peft")) and meant == "zero3"]
    for rank in (0, 1):
        recorded = json.loads((tmp_path / f"checkpointing_rank{rank}.json").read_text())["use_reentrant"]
        assert recorded == expected, (name, rank, recorded)

    # no rank leaves before the main process has written its report (the Slurm step would end and kill it)
    if (tmp_path / "report.md").is_file():
        report_written = (tmp_path / "report.md").stat().st_mtime
        assert float((tmp_path / "exit_rank1.txt").read_text()) >= report_written
