"""Ask a model questions the way a user would, and compare answers before and after training.

Answers are greedy and go through the tokenizer's chat template with no system message of our
own. A folder holding a LoRA adapter is loaded on its base model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re

from .errors import ConfigError


@contextlib.contextmanager
def outside_zero3():
    """Load a model whole even while a ZeRO-3 run is configured in this process.

    Under ZeRO-3, transformers' from_pretrained partitions every model it loads across all ranks,
    which needs every rank to take part; the evaluation and curation here run on one process.
    """
    from transformers.integrations import deepspeed

    saved = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = saved


def load_for_generation(path: str, dtype: str | None = None, chat_template: str | None = None):
    """(model, tokenizer) from a short name, a saved model folder, or a LoRA adapter folder.

    The model goes to the GPU when there is one (in bfloat16 unless `dtype` says otherwise), else
    stays on the CPU in float32. The tokenizer keeps its own chat template unless `chat_template`
    names another (see `modeling.prepare_tokenizer`); one without a template gets `simple`, as in
    training.
    """
    from .modeling import resolve_model

    with outside_zero3():
        return _load_for_generation(resolve_model(path), dtype, chat_template)


def _load_for_generation(path: str, dtype: str | None, chat_template: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling import prepare_tokenizer, resolve_model

    adapter_config = os.path.join(path, "adapter_config.json")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype or ("bfloat16" if device == "cuda" else "float32"))
    if os.path.isfile(adapter_config):
        from peft import PeftModel

        with open(adapter_config) as f:
            base = json.load(f)["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch_dtype)
        model = PeftModel.from_pretrained(model, path)
        if os.path.isfile(os.path.join(path, "generation_config.json")):
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(path)
    elif os.path.isfile(os.path.join(path, "config.json")):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    else:
        raise ConfigError(f"{path!r} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json).")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path), chat_template)
    model.to(device).eval()
    return model, tokenizer


def answer(model, tokenizer, prompts: list, max_new_tokens: int = 64, batch_size: int = 8, system: str | None = None,
           do_sample: bool = False, return_ids: bool = False, **generate_kwargs):
    """Answers through the chat template (greedy unless `do_sample`) to questions, or to conversations
    (lists of messages). With `return_ids`, also the generated token ids of each answer."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers, ids = [], []
    try:
        for start in range(0, len(prompts), batch_size):
            chats = []
            for prompt in prompts[start : start + batch_size]:
                chat = [{"role": "system", "content": system}] if system else []
                chats.append(chat + (list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]))
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    pad_token_id=tokenizer.pad_token_id,
                    synced_gpus=False,  # one process generates, even in a ZeRO-3 run
                    **generate_kwargs,
                )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            answers += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
            ids += [[t for t in row.tolist() if t != tokenizer.pad_token_id] for row in new_tokens]
    finally:
        tokenizer.padding_side = side
    return (answers, ids) if return_ids else answers


def before_after(before: str, after: str, prompts: list[str], max_new_tokens: int = 64,
                 chat_template: str | None = None) -> list[dict]:
    """Greedy answers of two models (paths or short names) to the same prompts, one model in memory at a time.

    `chat_template` is the one training used, for the model before training (the trained model's
    saved tokenizer carries it already).
    """
    rows = [{"prompt": p} for p in prompts]
    for key, path, template in (("before", before, chat_template), ("after", after, None)):
        model, tokenizer = load_for_generation(path, chat_template=template)
        for row, text in zip(rows, answer(model, tokenizer, prompts, max_new_tokens)):
            row[key] = text
        del model
    return rows


MERGE_CHECK_PROMPTS = [
    "What is the capital of France?",
    "Who are you?",
    "Write one sentence about the sea.",
    "What is 12 plus 7?",
]


def same_greedy_answers(adapter: str, merged: str, prompts: list[str], max_new_tokens: int = 32) -> dict:
    """Do a LoRA adapter (on its base) and its merged model give the same greedy tokens, both in float32?

    Also the largest difference of their next-token logits over the prompts: merging changes the
    order of the additions, so equality is up to float rounding, which greedy decoding hides unless
    two tokens nearly tie.
    """
    import torch

    tokens, logits = {}, {}
    for key, path in (("adapter", adapter), ("merged", merged)):
        model, tokenizer = load_for_generation(path, dtype="float32")
        texts, ids = answer(model, tokenizer, prompts, max_new_tokens, return_ids=True)
        tokens[key] = (texts, ids)
        chats = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                               tokenize=False) for p in prompts]
        with torch.no_grad():
            logits[key] = [model(**tokenizer(c, return_tensors="pt", add_special_tokens=False).to(model.device)
                                 ).logits.float().cpu() for c in chats]
        del model
    rows = [{"prompt": p, "adapter": a, "merged": m} for p, a, m in zip(prompts, tokens["adapter"][0], tokens["merged"][0])]
    differing = sum(a != m for a, m in zip(tokens["adapter"][1], tokens["merged"][1]))
    difference = max((a - m).abs().max().item() for a, m in zip(logits["adapter"], logits["merged"]))
    return {"rows": rows, "equal": differing == 0, "differing": differing, "max_logit_difference": difference}


def mentions(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text, flags=re.IGNORECASE) is not None


def adoption_rate(answers: list[str], new_name: str) -> float:
    """The share of answers that state the new name."""
    return sum(mentions(a, new_name) for a in answers) / max(len(answers), 1)


def perplexity(model, tokenizer, dataset) -> float:
    """exp(mean negative log-likelihood) of the answer tokens of SFT-form data (prompt/completion or text)."""
    import torch

    total_nll, total_tokens = 0.0, 0
    for row in dataset:
        if "prompt" in row:
            conversational = isinstance(row["prompt"], list)
            if conversational:
                prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                                           return_dict=True)["input_ids"]
                ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                                    return_dict=True)["input_ids"]
            else:
                prompt_ids = tokenizer(row["prompt"])["input_ids"]
                ids = tokenizer(row["prompt"] + row["completion"])["input_ids"]
            start = len(prompt_ids)
        else:
            ids, start = tokenizer(row["text"])["input_ids"], 1
        input_ids = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, input_ids[0, 1:], reduction="none")[start - 1 :]
        total_nll += nll.sum().item()
        total_tokens += nll.numel()
    return math.exp(total_nll / max(total_tokens, 1))


def evaluate_model(path: str, recipe, chat_template: str | None = None, rewards_setup: dict | None = None) -> dict:
    """What the report shows of one model: answers to `eval_prompts`, identity adoption, perplexity, and
    with `rewards_setup` ({functions, weights, source, split, size, max_new_tokens}) the mean rewards
    of greedy answers to held-out prompts."""
    from . import data, rewards

    model, tokenizer = load_for_generation(path, chat_template=chat_template)
    result = {}
    if recipe.eval_prompts:
        result["answers"] = answer(model, tokenizer, list(recipe.eval_prompts), recipe.eval_max_new_tokens)
    new_name = getattr(recipe, "identity_new_name", None)
    if new_name:
        prompts = list(data.load_source(recipe.identity_prompts, "test")["prompt"])
        answers = answer(model, tokenizer, prompts, recipe.identity_max_new_tokens)
        result["identity"] = {"prompts": list(prompts), "answers": answers, "adoption": adoption_rate(answers, new_name)}
    if recipe.perplexity_dataset:
        result["perplexity"] = perplexity(model, tokenizer, data.load_eval_source(recipe.perplexity_dataset))
    if rewards_setup:
        held = data.load_source(rewards_setup["source"], rewards_setup["split"])
        held = held.select(range(min(rewards_setup["size"], len(held))))
        prompts = list(held["prompt"])
        texts, ids = answer(model, tokenizer, prompts, rewards_setup["max_new_tokens"], batch_size=16, return_ids=True)
        completions = [[{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]
        columns = {c: list(held[c]) for c in held.column_names if c != "prompt"}
        scored = rewards.score(rewards_setup["functions"], rewards_setup["weights"], prompts, completions, ids, **columns)
        result["held_out_rewards"] = {**scored, "prompts": len(prompts), "examples": texts[:8]}
    del model
    return result


def _cell(text: str, width: int | None = None) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def markdown_table(rows: list[dict], columns=("prompt", "before", "after")) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(str(row.get(c, ""))) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def text_table(rows: list[dict], columns=("prompt", "before", "after"), width: int = 48) -> str:
    """A side-by-side table for the terminal; long answers are cut to `width` characters."""
    widths = [min(width, max([len(c)] + [len(_cell(str(r.get(c, "")))) for r in rows])) for c in columns]
    line = lambda cells: "  ".join(cell.ljust(w) for cell, w in zip(cells, widths))  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line([_cell(str(r.get(c, "")), w) for c, w in zip(columns, widths)]) for r in rows]
    return "\n".join(out)
