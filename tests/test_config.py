"""Config parsing and validation: presets, unknown keys, types, overrides, cross-field rules."""

import os
from pathlib import Path

import pytest
import yaml

from posttrain_dist import checks, config, environment
from posttrain_dist.errors import ConfigError

from conftest import RECIPES, where_presets_find_their_data

PRESETS = sorted(p for p in RECIPES.glob("*/*.yaml"))


def method_of(preset: Path) -> str:
    return preset.stem.split("_")[0]


def write(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_presets_exist_for_every_method_and_variant():
    names = {p.name for p in PRESETS if p.parent.name == "smollm2-135m"}
    assert {"sft_full.yaml", "sft_lora.yaml", "sft_qlora.yaml"} <= names
    assert any(p.parent.name != "smollm2-135m" for p in PRESETS), "a cluster-scale preset is missing"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_preset_parses_and_validates(preset, tmp_path, monkeypatch):
    where_presets_find_their_data(preset, tmp_path, monkeypatch)
    cluster = preset.parent.name != "smollm2-135m"
    args = checks.parse(method_of(preset), ["--config", str(preset)], environment.Environment(for_gpus=cluster, planned=cluster))
    raw = yaml.safe_load(preset.read_text())
    assert args.training.output_dir == raw["output_dir"]
    assert args.model.model_name_or_path == raw.get("model_name_or_path", config.DEFAULT_MODEL)
    assert raw.pop("method") == method_of(preset)  # every preset says which recipe it is for
    for key, value in raw.items():
        assert args.sources[key] == "file"
    if raw.get("use_peft"):
        assert args.model.lora_target_modules is not None
    if raw.get("load_in_4bit"):
        assert args.model.use_peft, "a 4-bit preset must train LoRA adapters"


def test_unknown_key_in_file_names_it_and_suggests(tmp_path):
    path = write(tmp_path, "dataset_name: builtin:sft-basics\nlearning_rat: 1.0e-4\n")
    with pytest.raises(ConfigError) as error:
        checks.parse("sft", ["--config", path])
    assert "unknown key 'learning_rat'" in str(error.value)
    assert "did you mean 'learning_rate'" in str(error.value)


def test_unknown_command_line_option_suggests(tmp_path):
    with pytest.raises(ConfigError) as error:
        checks.parse("sft", ["--dataset_name", "builtin:sft-basics", "--lora_rank", "8"])
    assert "unknown option '--lora_rank'" in str(error.value)
    assert "'lora_r'" in str(error.value)


def test_abbreviated_options_are_not_silently_expanded():
    with pytest.raises(ConfigError, match="unknown option '--learning_rat'"):
        checks.parse("sft", ["--dataset_name", "builtin:sft-basics", "--learning_rat", "1e-4"])


def test_wrong_type_in_file_is_named(tmp_path):
    path = write(tmp_path, "dataset_name: builtin:sft-basics\nper_device_train_batch_size: [4, 8]\n")
    with pytest.raises(ConfigError, match="'per_device_train_batch_size' .* should be int, got list"):
        checks.parse("sft", ["--config", path])


def test_unconvertible_string_is_refused(tmp_path):
    path = write(tmp_path, "dataset_name: builtin:sft-basics\nmax_steps: ten\n")
    with pytest.raises(ConfigError, match="'max_steps' in .* should be int, got str 'ten'"):
        checks.parse("sft", ["--config", path])


def test_yaml_exponent_without_dot_is_still_a_float(tmp_path):
    # PyYAML reads `2e-5` as the string "2e-5"; the field's type converts it.
    path = write(tmp_path, "dataset_name: builtin:sft-basics\nlearning_rate: 2e-5\n")
    assert checks.parse("sft", ["--config", path]).training.learning_rate == pytest.approx(2e-5)


def test_command_line_overrides_file_and_sources_are_recorded(tmp_path):
    path = write(tmp_path, "dataset_name: builtin:sft-basics\nlearning_rate: 1.0e-5\nmax_steps: 7\n")
    args = checks.parse("sft", ["--config", path, "--learning_rate", "3e-4"])
    assert args.training.learning_rate == pytest.approx(3e-4)
    assert args.training.max_steps == 7
    assert args.sources["learning_rate"] == "command line"
    assert args.sources["max_steps"] == "file"
    assert args.sources["weight_decay"] == "default"


def test_cpu_machine_trains_in_float32_on_cpu():
    args = checks.parse("sft", ["--dataset_name", "builtin:sft-basics"])
    assert args.training.use_cpu is True
    assert args.training.bf16 is False


def test_default_output_dir_and_model():
    args = checks.parse("sft", ["--dataset_name", "builtin:sft-basics"])
    assert args.model.model_name_or_path == "smollm2-135m-instruct"
    assert args.training.output_dir == os.path.join("outputs", "smollm2-135m-instruct-sft")


def test_lora_targets_all_linear_by_default():
    args = checks.parse("sft", ["--dataset_name", "builtin:sft-basics", "--use_peft"])
    assert args.model.lora_target_modules == "all-linear"
    assert checks.parse(
        "sft", ["--dataset_name", "builtin:sft-basics", "--use_peft", "--lora_target_modules", "q_proj", "v_proj"]
    ).model.lora_target_modules == ["q_proj", "v_proj"]


def test_quantized_base_without_lora_is_refused():
    with pytest.raises(ConfigError, match="set `use_peft: true`"):
        checks.parse("sft", ["--dataset_name", "builtin:sft-basics", "--load_in_4bit"])


def test_dataset_name_and_mixture_together_are_refused(tmp_path):
    path = write(tmp_path, "dataset_name: builtin:sft-basics\ndataset_mixture:\n  - path: builtin:sft-basics\n")
    with pytest.raises(ConfigError, match="keep one"):
        checks.parse("sft", ["--config", path])


def test_mixture_entry_with_unknown_key_is_refused(tmp_path):
    path = write(tmp_path, "dataset_mixture:\n  - path: builtin:sft-basics\n    fraction: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['fraction'\]"):
        checks.parse("sft", ["--config", path])


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        checks.parse("sft", ["--config", str(tmp_path / "nope.yaml")])


def test_no_data_is_reported():
    with pytest.raises(ConfigError, match="no data: set `dataset_name`"):
        checks.parse("sft", [])


def test_resolved_config_is_plain_yaml(tmp_path):
    args = checks.parse("sft", ["--dataset_name", "builtin:sft-basics", "--use_peft"])
    resolved = args.resolved()
    text = yaml.safe_dump(resolved)
    assert yaml.safe_load(text)["lora_target_modules"] == "all-linear"
    assert resolved["learning_rate"] == args.training.learning_rate
