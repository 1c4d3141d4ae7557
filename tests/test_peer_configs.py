"""Configs users bring from alignment-handbook, open-r1 and TRL run as they are published (tests/peer_configs/, each
with its source and commit; changed only in the model, the data paths and pushing to the hub), one optimizer step each
on the tiny model, with small local copies of their data sets in the published layouts (tests/peer_data.py).

What a CPU cannot do is replaced as the preset matrix replaces it, and only that: vLLM generation, Liger's and
flash-attention's GPU kernels (the last falls back to sdpa by itself), float16 weights (no CPU kernels for training),
bitsandbytes' paged optimizers (CUDA memory) and the wandb logger (not installed here). Evaluation passes are switched
off: one training step is what is run. One budget is cut: GRPO completions to 32 tokens (the demo's 64 completions of
up to 1024 tokens take four and a half minutes of this CPU for one step; measured)."""

import json
import os
from pathlib import Path

import pytest
import yaml

from posttrain_dist import methods, migrate, signals

import peer_data
from conftest import load_recipe

PEER = Path(__file__).parent / "peer_configs"
CONFIGS = {  # config: (method, notes the migration must print)
    "handbook_zephyr_sft_full.yaml": ("sft", ["torch_dtype: read as dtype, its name since transformers 5",
                                             "max_seq_length: read as max_length",
                                             "warmup_ratio: read as warmup_steps, transformers 5 takes the fraction"]),
    "handbook_zephyr_sft_qlora.yaml": ("sft", ["torch_dtype: read as dtype"]),
    "handbook_zephyr_dpo_full.yaml": ("dpo", ["dataset_mixture.test_split_size: read as eval_split_size"]),
    "handbook_zephyr_dpo_qlora.yaml": ("dpo", ["dataset_mixer: read as dataset_mixture",
                                              "evaluation_strategy: read as eval_strategy",
                                              "preprocessing_num_workers: read as dataset_num_proc"]),
    "handbook_smollm3_sft.yaml": ("sft", ["dataset_mixture: read as dataset_mixture, alignment-handbook's shape: 25"]),
    "handbook_smollm3_apo.yaml": ("dpo", ["torch_dtype: read as dtype"]),
    "openr1_distill_sft.yaml": ("sft", ["torch_dtype: read as dtype"]),
    "openr1_olympiccoder_sft.yaml": ("sft", ["use_liger: read as use_liger_kernel"]),
    "openr1_grpo_demo.yaml": ("grpo", ["torch_dtype: read as dtype"]),
    "trl_cli_example.yaml": ("sft", []),
}
ONE_STEP = ["--max_steps", "1", "--eval_strategy", "no", "--do_eval", "false"]


def cpu_substitutions(values: dict) -> list[str]:
    """What this machine cannot do, replaced (and nothing else)."""
    values, _, _ = migrate.migrate({k: v for k, v in values.items() if k != "packing_strategy"}, "peer config")
    out = ["--report_to", "none"] if values.get("report_to") not in (None, "none", ["none"], "tensorboard",
                                                                      ["tensorboard"]) else []
    if values.get("use_vllm"):
        out += ["--use_vllm", "false"]
    if values.get("use_liger_kernel"):
        out += ["--use_liger_kernel", "false"]
    if values.get("dtype") == "float16":
        out += ["--dtype", "bfloat16"]
    if str(values.get("optim", "")).startswith("paged_"):
        out += ["--optim", "adamw_torch"]  # bitsandbytes' paged optimizers page through CUDA memory
    if "num_generations" in values:
        out += ["--max_completion_length", "32"]
    return out


@pytest.fixture(autouse=True)
def fresh_signals():
    yield
    signals._requested["signal"] = None


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_published_config_runs_one_step_as_it_is(name, tmp_path, monkeypatch, capsys):
    method, notes = CONFIGS[name]
    monkeypatch.chdir(tmp_path)
    peer_data.write_for(name)
    path = PEER / name
    values = yaml.safe_load(path.read_text())
    argv = ["--config", str(path), *ONE_STEP, *cpu_substitutions(values)]
    if values.get("packing_strategy") == "ffd":  # refused before loading, naming bfd (the next test): the user's fix
        edited = tmp_path / name
        edited.write_text(path.read_text().replace("packing_strategy: ffd", "packing_strategy: bfd"))
        argv[1] = str(edited)
    trainer = load_recipe(method).main(argv)
    err = capsys.readouterr().err
    assert trainer.state.global_step == 1
    for note in notes:
        assert f"note: {note}" in err, (note, err[-2000:])
    out = Path(values.get("output_dir") or f"outputs/{values['model_name_or_path']}-{method}")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert not set(saved) & set(migrate.RENAMED), "config.yaml keeps the old names"
    assert json.loads((out / "finished.json").read_text())["global_step"] == 1


def test_the_smollm3_config_is_refused_before_loading_with_the_value_that_replaced_ffd(tmp_path, monkeypatch, capsys,
                                                                                      no_model_loading):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        load_recipe("sft").main(["--config", str(PEER / "handbook_smollm3_sft.yaml")])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "`packing_strategy: ffd`" in err and "its replacement is `packing_strategy: bfd`" in err
    assert not os.path.exists("data")


def test_the_grpo_demo_system_prompt_reaches_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    peer_data.write_for("openr1_grpo_demo.yaml")
    from posttrain_dist import checks, data, modeling

    values = yaml.safe_load((PEER / "openr1_grpo_demo.yaml").read_text())
    args = checks.parse("grpo", ["--config", str(PEER / "openr1_grpo_demo.yaml"), *cpu_substitutions(values)])
    train, _ = data.load_for(methods.get("grpo"), args.recipe, seed=args.training.seed)
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template)
    rendered = tokenizer.apply_chat_template(train[0]["prompt"], tokenize=False, add_generation_prompt=True)
    assert values["system_prompt"] in rendered and train[0]["prompt"][0]["role"] == "system"
    assert "What is" in train[0]["prompt"][-1]["content"]  # the `problem` column, read as the prompt


def test_migrate_writes_the_config_in_todays_names_and_plan_lists_each_change(tmp_path, monkeypatch, capsys):
    from posttrain_dist import cli

    monkeypatch.chdir(tmp_path)
    peer_data.write_for("handbook_zephyr_dpo_qlora.yaml")
    source = PEER / "handbook_zephyr_dpo_qlora.yaml"
    cli.main(["plan", str(source), "--method", "dpo", "--", "--report_to", "none"])
    shown = capsys.readouterr().out
    assert "## Read under today's names" in shown and "evaluation_strategy: read as eval_strategy" in shown
    cli.main(["migrate", str(source), "--out", str(tmp_path / "today.yaml")])
    capsys.readouterr()
    today = yaml.safe_load((tmp_path / "today.yaml").read_text())
    assert today["dtype"] == "float16" and "torch_dtype" not in today and today["eval_strategy"] == "steps"
    assert today["dataset_mixture"][0] == {"path": "./data/ultrafeedback_binarized", "split": "train_prefs", "weight": 1.0}
    assert today["dataset_mixture"][1]["eval"] is True
    cli.main(["plan", str(tmp_path / "today.yaml"), "--method", "dpo", "--", "--report_to", "none"])
    assert "Read under today's names" not in capsys.readouterr().out  # nothing left to rename
