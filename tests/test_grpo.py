"""The GRPO recipe on the tiny model: full, LoRA and QLoRA through `accelerate launch` with a reward that
reads a dataset column, plus the checks made before anything loads."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from posttrain_dist import checks, config, curves, data, environment, modeling, methods
from posttrain_dist.methods import grpo
from posttrain_dist.errors import ConfigError, DataError

from conftest import (PRESETS, TINY_OVERRIDES, assert_trained_only_the_adapter, launch, load_recipe, read_safetensors,
                      train_losses)

# its tests share the GRPO variant runs: `make test` runs a module in one worker
# (pytest-xdist --dist loadfile)

VARIANTS = {"full": "grpo_full.yaml", "lora": "grpo_lora.yaml", "qlora": "grpo_qlora.yaml"}

USER_REWARD = '''
def says_target(completions, target, **kwargs):
    """1.0 when the answer contains the row's `target` word, else the share of its letters that it uses."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if t in text else len(set(t) & set(text)) / len(set(t)) for text, t in zip(texts, target)]
'''


@pytest.fixture(scope="module")
def reward_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_rewards")
    (folder / "my_rewards.py").write_text(USER_REWARD)
    return folder


@pytest.fixture(scope="module")
def column_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("grpo_data") / "prompts.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"Say the word {w}."}], "target": w}
            for w in ["apple", "river", "stone", "cloud"] * 4]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, reward_module, column_data):
    out = {}
    for variant, preset in VARIANTS.items():
        output_dir = tmp_path_factory.mktemp("grpo") / variant
        launch("grpo", "--config", str(PRESETS / preset), *TINY_OVERRIDES, "--output_dir", str(output_dir),
               "--dataset_name", column_data, "--dataset_test_split", "",
               "--reward_funcs", "my_rewards:says_target", "think_format", "--reward_weights", "1.0", "0.5",
               "--per_device_train_batch_size", "8", "--max_completion_length", "8", "--learning_rate", "1e-3",
               env={"PYTHONPATH": str(reward_module)})
        out[variant] = output_dir
    return out


def test_each_variant_ran_two_steps_with_named_rewards(runs):
    for variant, output_dir in runs.items():
        history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
        steps = [e for e in history if "reward" in e]
        assert len(steps) == 2, variant
        for entry in steps:
            assert "rewards/says_target/mean" in entry and "rewards/think_format/mean" in entry
            assert math.isfinite(entry["reward"])
            assert entry["reward"] == pytest.approx(
                entry["rewards/says_target/mean"] + 0.5 * entry["rewards/think_format/mean"], abs=1e-5)
        assert len(train_losses(output_dir)) == 2


def test_full_grpo_changed_the_weights(runs, tiny_model_path):
    before = read_safetensors(Path(tiny_model_path) / "model.safetensors")
    after = read_safetensors(runs["full"] / "model.safetensors")
    changed = [k for k in before if before[k].dim() == 2 and not torch.equal(before[k], after[k])]
    assert len(changed) >= len([k for k in before if "proj" in k]), changed


@pytest.mark.parametrize("variant", ["lora", "qlora"])
def test_adapter_grpo_trained_only_the_adapter(runs, tiny_model_path, variant):
    assert_trained_only_the_adapter(runs[variant], tiny_model_path, every_b=False)


def test_cpu_path_never_imports_vllm(tmp_path):
    load_recipe("grpo").main(["--config", str(PRESETS / "grpo_full.yaml"), *TINY_OVERRIDES, "--output_dir",
                              str(tmp_path / "o"), "--per_device_train_batch_size", "8", "--max_completion_length",
                              "4", "--reward_eval_size", "4"])
    assert "vllm" not in sys.modules
    summary = json.loads((tmp_path / "o" / "evaluation.json").read_text())["summary"]
    assert summary["reward_prompts"] == 4 and "math_answer" in summary["rewards_after"]


# ---------------------------------------------------------------- refused before loading


def run_bad(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe("grpo").main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_batch_not_divisible_by_generations_is_refused_with_valid_values(tmp_path, capsys, no_model_loading):
    err = run_bad(capsys, ["--config", str(PRESETS / "grpo_full.yaml"), "--per_device_train_batch_size", "6",
                           "--num_generations", "4", "--output_dir", str(tmp_path / "o")])
    assert "6 completions does not divide by num_generations 4" in err
    assert "num_generations in [2, 3, 6]" in err and "per_device_train_batch_size in [4, 8, 12, 16]" in err
    assert not (tmp_path / "o").exists()


def test_batch_check_counts_processes_and_steps():
    two = environment.Environment(world_size=2, planned=True)
    with pytest.raises(ConfigError, match=r"3 x 2 process\(es\) x 1 step\(s\) per generation = 6 completions"):
        checks.parse("grpo", ["--dataset_name", "builtin:arithmetic", "--per_device_train_batch_size", "3",
                              "--num_generations", "4"], two)
    # two processes of 2 fill a group of 4 that one process of 2 cannot
    assert checks.parse("grpo", ["--dataset_name", "builtin:arithmetic", "--per_device_train_batch_size", "2",
                                 "--num_generations", "4"], two).training.generation_batch_size == 4


def test_unknown_reward_lists_the_registered_ones(tmp_path, capsys, no_model_loading):
    err = run_bad(capsys, ["--config", str(PRESETS / "grpo_full.yaml"), "--reward_funcs", "math_acc",
                           "--output_dir", str(tmp_path / "o")])
    assert "unknown reward 'math_acc'" in err and "math_answer" in err and "think_format" in err


def test_reward_whose_column_is_missing_is_refused_before_loading(tmp_path, capsys, column_data, no_model_loading):
    err = run_bad(capsys, ["--config", str(PRESETS / "grpo_full.yaml"), "--dataset_name", column_data,
                           "--dataset_test_split", "", "--output_dir", str(tmp_path / "o")])
    assert "reward math_answer reads the column 'answer'" in err and "['prompt', 'target']" in err


def test_reward_weights_must_match_rewards(tmp_path, capsys, no_model_loading):
    err = run_bad(capsys, ["--config", str(PRESETS / "grpo_full.yaml"), "--reward_weights", "1.0", "2.0",
                           "--output_dir", str(tmp_path / "o")])
    assert "`reward_weights` has 2 values for 1 rewards" in err


def test_vllm_on_cpu_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="needs GPUs, or on a CPU vLLM's CPU build"):  # not installed here
        checks.parse("grpo", ["--dataset_name", "builtin:arithmetic", "--use_vllm", "true"])
    with pytest.raises(ConfigError, match="`vllm_mode: server` needs GPUs"):  # no weight transfer without CUDA
        checks.parse("grpo", ["--dataset_name", "builtin:arithmetic", "--use_vllm", "true", "--vllm_mode", "server"])
    with pytest.raises(ConfigError, match="needs `use_vllm: true` and `vllm_mode: colocate`"):
        checks.parse("grpo", ["--dataset_name", "builtin:arithmetic", "--vllm_sync_check", "2"])


def test_long_prompts_are_dropped_and_counted(tiny_model_path, capsys):
    import datasets

    tokenizer = modeling.load_tokenizer(config.ModelArgs(model_name_or_path=tiny_model_path))
    rows = [{"prompt": [{"role": "user", "content": "short"}]}, {"prompt": [{"role": "user", "content": "long " * 200}]}]
    kept = data.drop_long_prompts(datasets.Dataset.from_list(rows), tokenizer, 64, "prompts")
    assert len(kept) == 1 and kept[0]["prompt"][0]["content"] == "short"
    assert "dropped 1 of 2 prompts longer than max_prompt_length=64" in capsys.readouterr().out
    with pytest.raises(DataError, match="all 2 prompts are longer than max_prompt_length=2"):
        data.drop_long_prompts(datasets.Dataset.from_list(rows), tokenizer, 2, "prompts")


def test_generated_tasks_repeat_and_hold_out():
    from posttrain_dist import tasks

    train, test = tasks.arithmetic("train"), tasks.arithmetic("test")
    assert train == tasks.arithmetic("train") and len(test) == 100
    as_text = lambda rows: {r["prompt"][0]["content"] for r in rows}  # noqa: E731
    assert not as_text(train) & as_text(test)
    assert tasks.arithmetic("train", seed=1) != train
    from posttrain_dist.rewards import countdown_equation

    puzzles = tasks.countdown("test")
    answers = [f"<answer>{p['solution']}</answer>" for p in puzzles]
    assert countdown_equation(answers, [p["numbers"] for p in puzzles], [p["target"] for p in puzzles]) == [1.0] * 100


def test_grpo_curves_show_each_reward_its_spread_and_lengths(runs):
    output_dir = runs["full"]
    history = json.loads((output_dir / "metrics.json").read_text())["log_history"]
    assert (output_dir / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert curves._lines(history, grpo.PANELS[0][2])[1][0] == "says_target"
    panels = curves.plot(history, methods.get("grpo").panels, str(output_dir / "again.png"))
    assert {"mean reward", "reward spread", "completion length"} <= set(panels)
