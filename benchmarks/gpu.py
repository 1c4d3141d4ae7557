"""The GPU kit: `python benchmarks/run.py gpu PART [PART ...]` proves the recipes on one CUDA GPU and measures them.

Parts, each well inside 10 minutes on an H100 (see benchmarks/results/README.md for the GPU machine's setup):

    smoke    every recipe variant (SFT full/LoRA, DPO full/LoRA, GRPO full/LoRA) for 3 steps in bf16 under each
             accelerate config that makes sense with one process (ddp, zero2, zero3, zero3_offload, fsdp2), with
             the cluster presets' own settings (activation checkpointing, packing, LoRA targets): pass/fail
    qlora    SFT QLoRA under ddp, zero2, zero3 and fsdp2 (needs the bitsandbytes wheel: a run of its own)
    speed    bf16 SFT tokens/s and MFU at 2k and 4k tokens packed, with and without activation checkpointing,
             with and without Liger's kernels; DPO step time against SFT on the same tokens; GRPO's share of
             step time in generation and its generated tokens/s (transformers' generate)
    memory   peak GPU memory of full, LoRA and QLoRA training of the same model, next to `plan`'s estimate

Models are built from the published Qwen3 configs with random weights (no download: the machine is offline)
and a byte-level tokenizer with the ChatML template (`byte_tokenizer`). MFU is model FLOPs per second over the
bf16 matmul peak measured in the same run. Results accumulate in benchmarks/results/gpu.json and gpu.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The Qwen3 configs the cluster presets use, from the models' published config.json files; `qwen3-8b-8l` is
# Qwen3-8B with 8 of its 36 layers (the memory of a layer, on one GPU).
SHAPES = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
    "qwen3-8b-8l": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=8, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False),
}
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


# ---------------------------------------------------------------- models, FLOPs, peak


def byte_tokenizer():
    """A tokenizer that needs no files: one token per byte, plus ChatML's special tokens and its template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def qwen3_config(shape: str, **overrides):
    from transformers import Qwen3Config

    tokenizer_ids = {"bos_token_id": 257, "eos_token_id": 256, "pad_token_id": 258}
    return Qwen3Config(**{**SHAPES[shape], "max_position_embeddings": 8192, **tokenizer_ids, **overrides})


def build_model(shape: str, folder: str, device: str = "cpu", **overrides) -> str:
    """A random-weight Qwen3 of `shape` in bf16 with the byte tokenizer, saved where the recipes load it from."""
    import torch
    from transformers import GenerationConfig, Qwen3ForCausalLM

    config = qwen3_config(shape, **overrides)
    tokenizer = byte_tokenizer()
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    for key, value in ids.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token (forward and backward): 6 x the parameters that multiply (every linear layer and
    the LM head; not the embedding lookup), plus attention's 12 x layers x heads x head dim x sequence length
    (the PaLM paper's count, appendix B, without halving for the causal mask)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    heads, kv, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    attention = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    mlp = 3 * h * config.intermediate_size
    matmul_params = layers * (attention + mlp) + h * config.vocab_size
    return 6 * matmul_params + 12 * layers * heads * head_dim * seq_len


def matmul_peak(size: int = 8192, repeats: int = 50) -> float:
    """Measured bf16 matmul FLOP/s of this GPU (what MFU divides by)."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


# ---------------------------------------------------------------- runs


def data_file(folder: str, rows: int = 512, words: int = 600) -> str:
    """Conversations long enough to fill packed rows of 4k tokens (bytes are tokens here)."""
    import random

    rng = random.Random(0)
    vocabulary = ["alpha", "river", "stone", "quiet", "orbit", "maple", "signal", "harbor", "lantern", "meadow"]
    path = os.path.join(folder, "chat.jsonl")
    with open(path, "w") as f:
        for i in range(rows):
            text = " ".join(rng.choice(vocabulary) for _ in range(words))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Story {i}?"},
                                             {"role": "assistant", "content": text}]}) + "\n")
    return path


def recipe(method: str, accelerate: str, preset: str, *overrides: str, timeout: int = 900) -> dict:
    """One recipe run under an accelerate config with one process; its metrics, peak memory and outcome."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "accelerate_configs" / f"{accelerate}.yaml"), "--num_processes", "1",
               str(ROOT / "recipes" / f"{method}.py"), "--config", str(preset), *overrides,
               "--callbacks", "gpu_hooks:PeakMemory", "--report_to", "none", "--save_strategy", "no",
               "--eval_strategy", "no", "--output_dir", os.path.join(out, "run")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        result = {"ok": proc.returncode == 0, "seconds": round(time.time() - start, 1)}
        run_dir = Path(out) / "run"
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
            result.update(final=metrics["final"], steps=metrics["global_step"])
        if (run_dir / "peak_memory.json").is_file():
            result.update(json.loads((run_dir / "peak_memory.json").read_text()))
        if not result["ok"]:
            result["error"] = (proc.stderr or proc.stdout)[-1500:]
        return result


# ---------------------------------------------------------------- results


def machine() -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for package in ("torch", "transformers", "trl", "accelerate", "peft", "deepspeed", "bitsandbytes", "liger-kernel",
                    "flash-attn"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"gpu": gpu, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions}


def write(part: str, rows: list[dict], figures: dict, folder: Path = RESULTS) -> None:
    """Merge one part's rows and figures into gpu.json, and write gpu.md from all parts there."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gpu.json"
    results = json.loads(path.read_text()) if path.is_file() else {"parts": {}}
    results["parts"][part] = {"machine": machine(), "rows": rows, "figures": figures}
    path.write_text(json.dumps(results, indent=1))
    lines = ["# GPU benchmarks", "", "Written by `python benchmarks/run.py gpu PART`; each part's machine and versions "
             "are in gpu.json.", ""]
    for name, result in results["parts"].items():
        info = result["machine"]
        lines += [f"## {name}", "", f"{info['gpu']}, {info['date']}; "
                  + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v), ""]
        if result["rows"]:
            columns = list(result["rows"][0])
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in result["rows"]]
            lines.append("")
        lines += [f"- **{k}**: {_cell(v)}" for k, v in result["figures"].items()] + [""]
    (folder / "gpu.md").write_text("\n".join(lines))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:120]


# ---------------------------------------------------------------- the parts


VARIANTS = {  # recipe variant -> (method, cluster preset): the presets' own settings, on a smaller model
    "sft full": ("sft", "sft_full.yaml"), "sft lora": ("sft", "sft_lora.yaml"),
    "dpo full": ("dpo", "dpo_full.yaml"), "dpo lora": ("dpo", "dpo_lora.yaml"),
    "grpo full": ("grpo", "grpo_countdown_colocate.yaml"), "grpo lora": ("grpo", "grpo_countdown_colocate.yaml"),
}
ONE_PROCESS_CONFIGS = ("ddp", "zero2", "zero3", "zero3_offload", "fsdp2")


def _scaled(method: str, model: str, chat: str, prefs: str) -> list[str]:
    """The presets at smoke scale: a smaller model, 3 steps, short sequences, local data; the rest as shipped."""
    common = ["--model_name_or_path", model, "--max_steps", "3", "--logging_steps", "1", "--dataset_config", "none",
              "--attn_implementation", _attention(), "--dataset_test_split", "none"]
    if method == "sft":
        return common + ["--dataset_name", chat, "--max_length", "1024", "--per_device_train_batch_size", "2"]
    if method == "dpo":
        return common + ["--dataset_name", prefs, "--max_length", "512", "--per_device_train_batch_size", "2"]
    return common + ["--use_vllm", "false", "--max_completion_length", "64", "--max_prompt_length", "1024",
                     "--per_device_train_batch_size", "8", "--num_generations", "8", "--gradient_accumulation_steps",
                     "1", "--reward_eval_size", "8"]


def _attention() -> str:
    import importlib.util

    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def _prefs_file(folder: str) -> str:
    path = os.path.join(folder, "prefs.jsonl")
    with open(path, "w") as f:
        for i in range(256):
            f.write(json.dumps({"prompt": f"What is {i} plus one?", "chosen": f"{i} plus one is {i + 1}.",
                                "rejected": f"{i} plus one is {i + 2}."}) + "\n")
    return path


def smoke(work: str, variants=VARIANTS, configs=ONE_PROCESS_CONFIGS, shape: str = "qwen3-0.6b") -> list[dict]:
    model = build_model(shape, os.path.join(work, shape), device="cuda")
    chat, prefs = data_file(work, rows=64, words=200), _prefs_file(work)
    rows = []
    for variant, (method, preset) in variants.items():
        for accelerate in configs:
            overrides = _scaled(method, model, chat, prefs)
            overrides += ["--use_peft", "true"] if "lora" in variant or "qlora" in variant else []
            if "qlora" in variant:
                overrides += ["--load_in_4bit", "true", "--bnb_4bit_quant_type", "nf4"]
            result = recipe(method, accelerate, ROOT / "recipes" / "qwen3-8b" / preset, *overrides)
            rows.append({"variant": variant, "accelerate": accelerate, "ok": "pass" if result["ok"] else "FAIL",
                         "seconds": result["seconds"], "peak_GiB": result.get("peak_allocated_GiB"),
                         "error": result.get("error", "")[-200:]})
            print(rows[-1], flush=True)
    return rows


def speed(work: str, shape: str = "qwen3-1.7b") -> tuple[list[dict], dict]:
    import importlib.util

    model = build_model(shape, os.path.join(work, shape), device="cuda")
    chat = data_file(work, rows=256, words=1200)
    peak = matmul_peak()
    config = qwen3_config(shape)
    rows = []
    liger = [False, True] if importlib.util.find_spec("liger_kernel") else [False]
    for tokens in (2048, 4096):
        for checkpointing in (True, False):
            for use_liger in liger:
                overrides = ["--model_name_or_path", model, "--dataset_name", chat, "--dataset_test_split", "none",
                             "--dataset_config", "none", "--max_length", str(tokens), "--packing", "true",
                             "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
                             "--max_steps", "12", "--logging_steps", "1", "--attn_implementation", _attention(),
                             "--activation_checkpointing", str(checkpointing).lower(),
                             "--use_liger_kernel", str(use_liger).lower()]
                result = recipe("sft", "ddp", ROOT / "recipes" / "qwen3-8b" / "sft_full.yaml", *overrides)
                tokens_per_s = result.get("tokens_per_second_after_warmup")
                rows.append({"tokens": tokens, "activation checkpointing": checkpointing, "liger": use_liger,
                             "ok": result["ok"], "tokens/s": tokens_per_s,
                             "MFU": tokens_per_s * flops_per_token(config, tokens) / peak if tokens_per_s else None,
                             "peak_GiB": result.get("peak_allocated_GiB"), "error": result.get("error", "")[-200:]})
                print(rows[-1], flush=True)
    best = max((r["MFU"] for r in rows if r["MFU"]), default=None)
    return rows, {"bf16 matmul peak (TFLOP/s, measured)": peak / 1e12, f"best MFU, {shape}, packed": best}


def memory(work: str, shape: str = "qwen3-1.7b") -> tuple[list[dict], dict]:
    from posttrain_dist import planning

    model = build_model(shape, os.path.join(work, shape), device="cuda")
    chat = data_file(work, rows=64, words=1200)
    rows = []
    for variant, extra in (("full", []), ("lora", ["--use_peft", "true"]),
                           ("qlora", ["--use_peft", "true", "--load_in_4bit", "true"])):
        overrides = ["--model_name_or_path", model, "--dataset_name", chat, "--dataset_test_split", "none",
                     "--dataset_config", "none", "--max_length", "2048", "--packing", "true",
                     "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--max_steps", "4",
                     "--attn_implementation", _attention(), *extra]
        preset = ROOT / "recipes" / "qwen3-8b" / "sft_full.yaml"
        plan = planning.make("sft", str(preset), str(ROOT / "accelerate_configs" / "ddp.yaml"), 1, 1,
                             [*overrides, "--output_dir", os.path.join(work, "plan")])
        result = recipe("sft", "ddp", preset, *overrides)
        measured = result.get("peak_allocated_GiB")
        estimate = plan.estimate.total / 1024**3
        rows.append({"variant": variant, "ok": result["ok"], "measured_GiB": measured, "estimate_GiB": estimate,
                     "estimate/measured": estimate / measured if measured else None,
                     "error": result.get("error", "")[-200:]})
        print(rows[-1], flush=True)
    by = {r["variant"]: r for r in rows}
    ratio = (by["qlora"]["measured_GiB"] / by["full"]["measured_GiB"]
             if by["qlora"]["measured_GiB"] and by["full"]["measured_GiB"] else None)
    return rows, {f"QLoRA / full peak memory, {shape} (target <= 0.35)": ratio}


def run(parts: list[str]) -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/run.py gpu needs a CUDA GPU, and torch sees none here. On a GPU machine: bring "
                         "the wheels (../shared/gpu/README.md) and run it there; on CPU see `benchmarks/run.py all`.")
    with tempfile.TemporaryDirectory() as work:
        for part in parts:
            if part == "smoke":
                write("smoke", smoke(work), {})
            elif part == "qlora":
                write("qlora", smoke(work, {"sft qlora": ("sft", "sft_qlora.yaml")}, ("ddp", "zero2", "zero3", "fsdp2")),
                      {})
            elif part == "speed":
                write("speed", *speed(work))
            elif part == "memory":
                write("memory", *memory(work))
            else:
                raise SystemExit(f"unknown part {part!r}: smoke, qlora, speed, memory")
