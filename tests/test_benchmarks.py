"""The benchmark harness on the tiny model: both sides of the overhead comparison do the same work, and the
measurements it reads are there. (The figures themselves live in benchmarks/results/, never in tests.)"""

import json
import subprocess
import sys

from conftest import ROOT, TINY

sys.path.insert(0, str(ROOT / "benchmarks"))
import run as bench  # noqa: E402


def measure(*argv):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "measure.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCHMARK ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("BENCHMARK "):])


def test_recipe_and_plain_trl_do_identical_work(tmp_path, tiny_model_path):
    data_file = bench._prompt_completion_file(str(tmp_path))
    settings = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "64",
                "--learning_rate", "1e-4", "--lr_scheduler_type", "linear", "--warmup_steps", "0", *bench.QUIET]
    ours = measure("recipe", "sft", "--model_name_or_path", TINY, "--dataset_name", data_file,
                   "--output_dir", str(tmp_path / "ours"), *settings)
    plain = measure("plain-sft", tiny_model_path, data_file, str(tmp_path / "plain"), *settings)
    assert ours["steps"] == plain["steps"] == 2
    assert ours["tokens"] == plain["tokens"] > 0
    assert abs(ours["train_loss"] - plain["train_loss"]) < 1e-6
    for result in (ours, plain):
        assert result["training_peak_rss"] > result["baseline_rss"] > 0
        assert result["rss_at_training_start"] > result["baseline_rss"]


def test_skewed_data_is_mostly_short(tmp_path):
    rows = [json.loads(line) for line in open(bench._skewed_file(str(tmp_path)))]
    words = sorted(len(r["completion"].split()) for r in rows)
    long = [w for w in words if w >= 250]
    assert 0.05 < len(long) / len(rows) < 0.15 and words[len(words) // 2] <= 30


def test_both_sides_of_the_preparation_benchmark_prepare_the_same_tokens(tmp_path):
    """benchmarks/run.py sft-preparation, at 40 rows: each side runs (as its own process does) and they hold the
    same tokens per epoch; ours trains the assistant tokens only, trl (no generation markers) every token."""
    import preparation

    path = preparation.conversations(str(tmp_path / "c.jsonl"), 40)
    ours, trl = preparation._run_side("ours", path), preparation._run_side("trl", path)
    assert ours["rows"] == trl["rows"] == 40
    assert ours["tokens"] == trl["tokens"] > 0
    assert 0 < ours["trained_tokens"] < trl["trained_tokens"] == trl["tokens"]


# ---------------------------------------------------------------- the GPU kit, on what a CPU can run of it

import gpu  # noqa: E402


def test_flops_per_token_by_hand_for_qwen3_0_6b():
    """Qwen3-0.6B: hidden 1024, 28 layers, 16 query and 8 key/value heads of 128, MLP 3072, vocabulary 151936."""
    config = gpu.qwen3_config("qwen3-0.6b")
    attention = 1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024  # q, k and v, o
    mlp = 3 * 1024 * 3072  # gate, up, down
    matmul_params = 28 * (attention + mlp) + 1024 * 151936  # + the LM head (tied, but it still multiplies)
    assert matmul_params == 595_984_384
    assert gpu.flops_per_token(config, 4096) == 6 * 595_984_384 + 12 * 28 * 16 * 128 * 4096 == 6_394_478_592

    import torch
    from transformers import Qwen3ForCausalLM

    with torch.device("meta"):  # the same count from the model transformers builds
        model = Qwen3ForCausalLM(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert linear == matmul_params


def test_kit_models_load_and_answer_through_the_byte_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gpu.build_model("qwen3-0.6b", str(tmp_path / "m"), hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert model.config.vocab_size == 151936 and model.config.num_hidden_layers == 2
    text = tokenizer.apply_chat_template([{"role": "user", "content": "héllo"}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    out = model.generate(torch_tensor(ids), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == len(ids) + 3


def torch_tensor(ids):
    import torch

    return torch.tensor([ids])


def test_kit_tables_merge_parts_and_say_when_there_is_no_gpu(tmp_path):
    gpu.write("speed", [{"tokens": 4096, "tokens/s": 12345.6, "MFU": 0.512}], {"bf16 matmul peak": 700.5}, tmp_path)
    gpu.write("smoke", [{"variant": "sft full", "accelerate": "zero3", "ok": "pass"}], {}, tmp_path)
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert set(results["parts"]) == {"speed", "smoke"}
    md = (tmp_path / "gpu.md").read_text()
    assert "## speed" in md and "| 4096 | 12346 | 0.512 |" in md and "## smoke" in md and "| sft full | zero3 | pass |" in md
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "gpu", "smoke"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "needs a CUDA GPU" in proc.stderr
