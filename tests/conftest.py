"""Shared test helpers: the tiny model, running recipes through `accelerate launch`, reading outputs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

# Under `pytest -n 2` (make test) the two workers share the machine's cores: each of their processes computes on one
# thread, since two processes that each spin a thread per core slow each other down several times over (measured:
# the demo took 14 minutes instead of 4 next to the GRPO learning test). Set before torch starts its thread pool;
# inherited by every run a test starts.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "accelerate_configs"
RECIPES = ROOT / "recipes"
PRESETS = RECIPES / "smollm2-135m"
TINY = "tiny-random-llama"
TESTS = Path(__file__).resolve().parent
# Recipe runs started by the tests (accelerate launch, Slurm jobs) import the test callbacks in tests/hooks.py.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)

# The longest modules first (minutes on this 2-core machine; each learning check is a module of its own): under
# `make test` (xdist --dist loadfile --no-loadscope-reorder) each worker takes whole modules in this order, so the
# long ones run side by side instead of one of them last.
LONGEST_FIRST = ("test_distributed", "test_learning_distillation", "test_slurm", "test_learning_identity",
                 "test_preset_matrix", "test_learning_reward", "test_methods", "test_learning", "test_dpo",
                 "test_grpo", "test_sft")


def pytest_collection_modifyitems(items):
    def rank(item):
        module = item.path.stem
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module and among the other modules stays


# Steps of a tiny-model recipe run in tests: small, deterministic, no before/after answers.
TINY_OVERRIDES = [
    "--model_name_or_path", TINY,
    "--max_steps", "2",
    "--logging_steps", "1",
    "--per_device_train_batch_size", "4",
    "--save_strategy", "no",
    "--report_to", "none",
    "--eval_strategy", "no",
]


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from posttrain_dist.modeling import resolve_model

    return resolve_model(TINY)


@pytest.fixture(scope="session")
def default_model_path() -> str:
    from posttrain_dist.modeling import resolve_model

    return resolve_model("smollm2-135m-instruct")


def free_port() -> int:
    """A port no one listens on now: each multi-process run gets its own, so that the two test workers
    (`pytest -n 2`) never start two process groups on accelerate's default port at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(recipe: str, *args: str, accelerate_config: str = "cpu", check: bool = True, timeout: int = 900,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file accelerate_configs/X.yaml recipes/M.py ARGS` in a subprocess."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ACCELERATE_CONFIGS / f"{accelerate_config}.yaml"), "--main_process_port", str(free_port()),
        str(RECIPES / f"{recipe}.py"), *args,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    if env and "PYTHONPATH" in env:  # keep tests/ (the hooks) importable too
        full_env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], os.environ["PYTHONPATH"]])
    if accelerate_config.startswith("cpu_fsdp"):  # FSDP for real on CPU processes: tests/cpu_fsdp/sitecustomize.py
        full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS / "cpu_fsdp"), full_env["PYTHONPATH"]])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode})\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


def load_recipe(name: str):
    """The recipe script as a module, to call its main(argv) in this process."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_losses(output_dir) -> list[float]:
    history = json.loads((Path(output_dir) / "metrics.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def write_numbered_conversations(path, count: int) -> str:
    """`count` distinct one-turn conversations in a JSONL file (each example recognisable in data traces)."""
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(count)]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def assert_trained_only_the_adapter(output_dir, base_model_path, every_b: bool = True) -> None:
    """An adapter run saved only LoRA A/B weights, trained B (it starts at zero: all of them, or with
    `every_b=False` at least one), and its merged copy keeps the base's norms and embeddings."""
    adapter = read_safetensors(Path(output_dir) / "adapter_model.safetensors")
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    trained = [adapter[k].abs().sum() > 0 for k in adapter if "lora_B" in k]
    assert all(trained) if every_b else any(trained)
    base = read_safetensors(Path(base_model_path) / "model.safetensors")
    merged = read_safetensors(Path(output_dir) / "merged" / "model.safetensors")
    frozen = [k for k in base if "norm" in k or "embed" in k]
    assert frozen and all(torch.equal(base[k], merged[k]) for k in frozen)


def read_safetensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_one_saved_model(folder, filename: str) -> dict:
    """The run saved one model, once (`filename` is the folder's only safetensors file), and no tensor of it is empty
    (a sharded save that gathered nothing); its tensors."""
    folder = Path(folder)
    assert [w.name for w in folder.glob("*.safetensors")] == [filename], "one model, saved once"
    saved = read_safetensors(folder / filename)
    assert saved and all(t.numel() > 0 for t in saved.values()), "saved empty tensors"
    return saved


# Presets that read what an earlier command writes (the README's `curate distill` before sft_distill_identity.yaml,
# the reward model before GRPO against it, the SFT teacher before on-policy distillation): the path, relative to
# where the user runs, and what it is.
MADE_BY_AN_EARLIER_COMMAND = {
    "smollm2-135m/sft_distill_identity.yaml": ("outputs/context-distillation/teacher.jsonl", "data"),
    "smollm2-135m/grpo_learned_reward.yaml": ("outputs/smollm2-135m-reward-full", "reward model"),
    "smollm2-135m/distillation.yaml": ("outputs/smollm2-135m-sft-full", "language model"),
}


def where_presets_find_their_data(preset, tmp_path, monkeypatch) -> None:
    """For a preset that reads what an earlier command writes: work in tmp_path, where it now exists (a few SFT rows
    in the `messages` layout that `curate distill` writes; the tiny model as a reward model or a language model)."""
    made = MADE_BY_AN_EARLIER_COMMAND.get(f"{Path(preset).parent.name}/{Path(preset).name}")
    if not made:
        return
    path, what = made
    monkeypatch.chdir(tmp_path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if what == "data":
        write_numbered_conversations(path, 24)
        return
    import shutil

    from posttrain_dist.modeling import resolve_model

    shutil.copytree(resolve_model(TINY), path, dirs_exist_ok=True)  # copied, not loaded: plan tests forbid loading
    if what == "reward model":  # the same weights read as a sequence classifier with one output (a fresh head)
        config = json.loads((Path(path) / "config.json").read_text())
        config.update(architectures=[config["architectures"][0].replace("ForCausalLM", "ForSequenceClassification")],
                      id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
        (Path(path) / "config.json").write_text(json.dumps(config))


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if any model weights are loaded."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded, but the error should have come first")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", refuse)
