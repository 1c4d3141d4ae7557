"""Served = trained: the saved model, loaded by vLLM, answers as the trained model does in transformers.

A model is trained in transformers and served by vLLM; nothing else checks that the two are the same model (an
adapter that never reached the merged weights, a merge or a save that changed them, a config or tokenizer vLLM
reads differently). After a run (`report.md`, `evaluation.json` under `served`) and after `posttrain-dist merge`,
where vLLM is installed: greedy answers to a few prompts, token by token, from vLLM on the folder it would serve
(the full model, or the merged adapter) and from transformers on the trained model (the same folder, or the
adapter on its base). Where the two first differ, the trained model's log-probabilities of the two tokens are
compared: within `NEAR_TIE` the tokens tie (rounding decides, in any engine), else the models differ.
vLLM runs in a child process (`python -m posttrain_dist.served`): it starts an engine of its own, on GPUs beside
memory the run may still hold. Where vLLM is not installed the check says so and passes nothing off as checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

# The log-probability gap under which two tokens tie: float32 engines agree to about 1e-5, bfloat16 ones to ~1e-2.
NEAR_TIE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 5e-2}
NOT_INSTALLED = ("not checked: vLLM is not installed here (`make vllm-env` makes .venv-vllm with its CPU build; "
                 "`pip install vllm` on GPU machines)")

DISTRIBUTED = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
               "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def folders(output_dir: str) -> tuple[str, str] | str:
    """(what vLLM would serve, what was trained) for a run's output folder: the folder itself, or for an adapter its
    merged copy and the adapter; else why there is nothing to check."""
    from . import modeling

    if os.path.isfile(os.path.join(output_dir, "adapter_config.json")):
        merged = os.path.join(output_dir, "merged")
        if os.path.isfile(os.path.join(merged, "config.json")):
            return merged, output_dir
        return "not checked: the adapter was not merged (`merge_adapter: false`); `posttrain-dist merge` checks it"
    if modeling.kind_of(output_dir) != "causal-lm":
        return "not checked: a reward model (vLLM serves it for scoring, not for answers)"
    return output_dir, output_dir


def check(served: str, trained: str, prompts: list[str], max_new_tokens: int = 24, timeout: int = 1200) -> dict:
    """Compare in a child process; {"checked": False, "why": ...} where vLLM is missing or does not start."""
    if not available():
        return {"checked": False, "why": NOT_INSTALLED}
    request = {"served": served, "trained": trained, "prompts": prompts, "max_new_tokens": max_new_tokens}
    # a process of its own, outside the run's process group (accelerate's RANK, MASTER_PORT... left out)
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED and not k.startswith("ACCELERATE_")}
    proc = subprocess.run([sys.executable, "-m", "posttrain_dist.served", json.dumps(request)], capture_output=True,
                          text=True, timeout=timeout, env={**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"checked": False, "why": f"not checked: vLLM did not run ({last})"}
    return json.loads(lines[-1])


def summary(result: dict) -> str:
    if not result.get("checked"):
        return f"Served = trained: {result['why']}."
    if result["equal"]:
        ties = f", {result['near_ties']} of them up to a near-tie" if result["near_ties"] else ""
        return (f"Served = trained: vLLM's greedy answers to {result['prompts']} prompts equal transformers' "
                f"({result['tokens']} tokens{ties}; {result['dtype']}).")
    return (f"Served != trained: vLLM answers {len(result['differ'])} of {result['prompts']} prompts differently "
            f"from the trained model ({result['dtype']}); first: {result['differ'][0]}")


def _transformers_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids], device=model.device), max_new_tokens=max_new_tokens,
                             do_sample=False, attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long,
                                                                        device=model.device))
    return out[0, len(prompt_ids):].tolist()


def _gap(model, ids: list[int], a: int, b: int) -> float:
    """The trained model's log-probability of token a minus token b after `ids`."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1].float()
    logprobs = logits.log_softmax(-1)
    return abs((logprobs[a] - logprobs[b]).item())


def compare(served: str, trained: str, prompts: list[str], max_new_tokens: int) -> dict:
    """In the child process: both engines, greedy, on the same prompt token ids (the served folder's template)."""
    from vllm import LLM, SamplingParams

    from . import generation

    with open(os.path.join(served, "config.json"), encoding="utf-8") as f:
        dtype = str(json.load(f).get("dtype") or "float32")
    model, tokenizer = generation.load_for_generation(trained, dtype=dtype)
    eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
              else [model.generation_config.eos_token_id])
    prompt_ids = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                          tokenize=False), add_special_tokens=False)["input_ids"]
                  for p in prompts]
    llm = LLM(model=served, dtype=dtype, max_model_len=max(map(len, prompt_ids)) + max_new_tokens + 8, seed=0,
              enforce_eager=True, gpu_memory_utilization=0.3)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids],
                        SamplingParams(temperature=0.0, max_tokens=max_new_tokens), use_tqdm=False)
    differ, near_ties, tokens = [], 0, 0
    for prompt, ids, out in zip(prompts, prompt_ids, outs):
        by_vllm = list(out.outputs[0].token_ids)
        by_transformers = _transformers_greedy(model, ids, max_new_tokens)
        cut = next((i for i, t in enumerate(by_transformers) if t in eos), None)  # vLLM stops at the end token too
        by_transformers = by_transformers[:cut + 1] if cut is not None else by_transformers
        same = next((i for i, (a, b) in enumerate(zip(by_vllm, by_transformers)) if a != b), None)
        if same is None:
            tokens += len(by_vllm)
            if len(by_vllm) != len(by_transformers):
                differ.append({"prompt": prompt, "vllm": tokenizer.decode(by_vllm),
                               "transformers": tokenizer.decode(by_transformers)})
            continue
        gap = _gap(model, ids + by_vllm[:same], by_vllm[same], by_transformers[same])
        if gap <= NEAR_TIE.get(dtype, NEAR_TIE["bfloat16"]):
            near_ties += 1
            tokens += same + 1
            continue
        differ.append({"prompt": prompt, "at_token": same, "logprob_gap": round(gap, 4),
                       "vllm": tokenizer.decode(by_vllm), "transformers": tokenizer.decode(by_transformers)})
    return {"checked": True, "equal": not differ, "prompts": len(prompts), "tokens": tokens, "near_ties": near_ties,
            "differ": differ, "dtype": dtype, "served": served, "trained": trained}


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    print(json.dumps(compare(request["served"], request["trained"], request["prompts"], request["max_new_tokens"])))
