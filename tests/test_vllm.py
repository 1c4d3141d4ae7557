"""vLLM for real on this CPU (its CPU build, in .venv-vllm: `make test-vllm`, which CI runs after `make test`).

GRPO with `vllm_mode: colocate` trains two steps with vLLM generating, and after each optimizer step vLLM's
log-probabilities equal the trained model's (`vllm_sync_check`); a stale engine is caught; saved, merged and
GRPO-trained models served by vLLM answer as transformers does, and a changed model does not. The tiny model here has
heads of 32 (vLLM's CPU attention takes no smaller); vLLM computes its float32 checkpoint in bfloat16 under trl
(the engine's dtype comes from the checkpoint), in float32 where the tests say so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from collections import defaultdict

import pytest
import torch

from conftest import PRESETS, RECIPES, ROOT, TINY_OVERRIDES, launch, read_safetensors

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed in this environment: `make test-vllm` runs these in .venv-vllm (vLLM's CPU build)")]

HEAD32 = "tiny-random-llama-head32"
QWEN = RECIPES / "qwen3-8b"

REWARD = '''
def says_target(completions, target, **kwargs):
    """1.0 when the answer holds the row's word, else the share of its letters it uses: varies on random text."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if t in text else len(set(t) & set(text)) / len(set(t)) for text, t in zip(texts, target)]
'''


@pytest.fixture(scope="module")
def head32_path() -> str:
    from posttrain_dist.modeling import resolve_model

    return resolve_model(HEAD32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """GRPO full and LoRA with vLLM colocated (sync checked each step), and a plain SFT run; each report runs the
    served = trained check."""
    folder = tmp_path_factory.mktemp("vllm")
    (folder / "my_rewards.py").write_text(REWARD)
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Say the word {w}."}], "target": w}) + "\n"
                            for w in ["apple", "river", "stone", "cloud"] * 4))
    out = {}
    # full: two processes (DDP), each with its own engine, as on a GPU node; LoRA: one process
    for variant, preset, processes in (("grpo_full", "grpo_full.yaml", "cpu_ddp"), ("grpo_lora", "grpo_lora.yaml", "cpu")):
        out[variant] = folder / variant
        proc = launch("grpo", "--config", str(PRESETS / preset), *TINY_OVERRIDES, "--model_name_or_path", HEAD32,
                      "--output_dir", str(out[variant]), "--dataset_name", str(data), "--dataset_test_split", "",
                      "--reward_funcs", "my_rewards:says_target", "--per_device_train_batch_size", "8",
                      "--max_completion_length", "16", "--learning_rate", "1e-2", "--use_vllm", "true",
                      "--vllm_mode", "colocate", "--vllm_sync_check", "1", accelerate_config=processes,
                      env={"PYTHONPATH": str(folder)})
        out[variant + "_stdout"] = proc.stdout
    # the cluster preset that colocates vLLM, as shipped but for the CPU's replacements (sdpa; ZeRO-3's CPU twin) and
    # the scale: bf16, ZeRO-3 gathering each parameter for the copy; a reward that varies, so the weights move
    out["zero3"] = folder / "zero3"
    proc = launch("grpo", "--config", str(QWEN / "grpo_countdown_colocate.yaml"), "--model_name_or_path", HEAD32,
                  "--attn_implementation", "sdpa", "--max_steps", "2", "--logging_steps", "1", "--max_completion_length", "16",
                  "--report_to", "none", "--save_strategy", "no", "--output_dir", str(out["zero3"]),
                  "--dataset_name", str(data), "--dataset_test_split", "", "--reward_funcs", "my_rewards:says_target",
                  "--reward_weights", "1.0", "--learning_rate", "1e-3", "--vllm_sync_check", "1",
                  accelerate_config="cpu_zero3", env={"PYTHONPATH": str(folder)})
    out["zero3_stdout"] = proc.stdout
    out["sft_full"] = folder / "sft_full"
    launch("sft", "--config", str(PRESETS / "sft_full.yaml"), *TINY_OVERRIDES, "--model_name_or_path", HEAD32,
           "--output_dir", str(out["sft_full"]), "--learning_rate", "1e-4")
    return out


@pytest.mark.parametrize("variant", ["grpo_full", "grpo_lora", "zero3"])
def test_grpo_generates_with_vllm_and_its_weights_follow_each_step(runs, variant, head32_path):
    history = json.loads((runs[variant] / "metrics.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 2
    for entry in steps:
        # trl logs how far vLLM's sampling log-probabilities were from the trainer's only when vLLM generated
        assert "sampling/sampling_logp_difference/mean" in entry
        # the sync check ran after each optimizer step, within the tolerance for a bfloat16 engine
        assert entry["vllm_sync/logprob_gap"] < 2e-2
    assert "vllm_sync_check step 2" in runs[variant + "_stdout"]
    assert any(entry["grad_norm"] > 0 for entry in steps)  # the weights moved: the check compared moved weights
    if variant == "zero3":
        assert json.loads((runs[variant] / "config.json").read_text())["dtype"] == "bfloat16"
    elif variant == "grpo_full":
        before = read_safetensors(os.path.join(head32_path, "model.safetensors"))
        after = read_safetensors(runs[variant] / "model.safetensors")
        assert any(not torch.equal(before[k], after[k]) for k in before)
    else:
        adapter = read_safetensors(runs[variant] / "adapter_model.safetensors")
        assert any(adapter[k].abs().sum() > 0 for k in adapter if "lora_B" in k)


@pytest.mark.parametrize("variant", ["grpo_full", "grpo_lora", "zero3", "sft_full"])
def test_the_served_model_answers_as_the_trained_one(runs, variant):
    served = json.loads((runs[variant] / "evaluation.json").read_text())["served"]
    assert served["checked"] and served["equal"], served
    assert served["tokens"] >= served["prompts"]  # answers compared token by token, not empty
    expected = str(runs[variant] / "merged") if variant == "grpo_lora" else str(runs[variant])
    assert served["served"] == expected
    assert "Served = trained: vLLM's greedy answers" in (runs[variant] / "report.md").read_text()


def test_merge_checks_the_merged_model_in_vllm(runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "posttrain_dist.cli", "merge", str(runs["grpo_lora"]), "--out",
                           str(tmp_path / "merged"), "--max-new-tokens", "12"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Served = trained: vLLM's greedy answers to 4 prompts equal transformers'" in proc.stdout


def test_a_changed_model_is_not_passed_as_served(head32_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain_dist import served

    model = AutoModelForCausalLM.from_pretrained(head32_path, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():  # what a broken save or merge might do: every matrix moved a little
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "changed")
    AutoTokenizer.from_pretrained(head32_path).save_pretrained(tmp_path / "changed")
    result = served.check(str(tmp_path / "changed"), head32_path, ["Who are you?", "Name a colour."], 12)
    assert result["checked"] and not result["equal"]
    assert result["differ"][0]["logprob_gap"] > served.NEAR_TIE["float32"]
    assert served.summary(result).startswith("Served != trained")


@pytest.fixture(scope="module")
def engine(head32_path):
    """vLLM in this process (float32, no engine process of its own) beside the same model in transformers."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from transformers import AutoModelForCausalLM
    from vllm import LLM

    from posttrain_dist import config, modeling

    llm = LLM(model=head32_path, dtype="float32", enforce_eager=True, max_model_len=256, seed=0,
              logprobs_mode="processed_logprobs")
    model = AutoModelForCausalLM.from_pretrained(head32_path, dtype=torch.float32)
    tokenizer = modeling.load_tokenizer(config.ModelArgs(model_name_or_path=head32_path), "chatml")
    return llm, model, tokenizer


def fake_trainer(llm, model, tokenizer, last_loaded_step: int):
    """What the sync check reads of trl's GRPOTrainer, around a real engine and model."""
    from posttrain_dist import vllm_sync

    generation = types.SimpleNamespace(mode="colocate", llm=llm)
    generation._iter_named_params = lambda: ((name, p.data) for name, p in model.named_parameters())
    generation.sync_weights = lambda: vllm_sync.reload_on_cpu(generation)
    accelerator = types.SimpleNamespace(autocast=contextlib.nullcontext, device="cpu", is_main_process=True)
    return types.SimpleNamespace(vllm_generation=generation, _last_loaded_step=last_loaded_step, model=model,
                                 accelerator=accelerator, processing_class=tokenizer, _metrics={"train": defaultdict(list)},
                                 train_dataset=[{"prompt": [{"role": "user", "content": "What is 3 plus 4?"}]}])


def test_a_stale_engine_stops_the_run_and_a_synced_one_passes(engine):
    """Only the embeddings move: the model's head is tied to them, which vLLM's CPU build packs apart (the case its
    in-place reload missed before `reload_on_cpu` repacked the head)."""
    from posttrain_dist import vllm_sync

    llm, model, tokenizer = engine
    state = types.SimpleNamespace(global_step=1)
    equal = fake_trainer(llm, model, tokenizer, last_loaded_step=1)
    vllm_sync.SyncCheck(equal, every=1).on_step_end(None, state, None)
    assert equal._metrics["train"]["vllm_sync/logprob_gap"][0] < 1e-6  # float32 in both: the same numbers
    torch.manual_seed(0)
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(1e-2 * torch.randn_like(model.get_input_embeddings().weight))
    stale = fake_trainer(llm, model, tokenizer, last_loaded_step=1)  # the step's weights never copied
    with pytest.raises(RuntimeError, match="the colocated vLLM does not hold the trained weights"):
        vllm_sync.SyncCheck(stale, every=1).on_step_end(None, state, None)
    synced = fake_trainer(llm, model, tokenizer, last_loaded_step=0)  # copies them first, as trl would
    check = vllm_sync.SyncCheck(synced, every=1)
    check.on_step_end(None, state, None)
    assert synced._last_loaded_step == 1 and check.gaps[0]["mean"] < 1e-6
