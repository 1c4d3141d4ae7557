"""Ask a model questions the way a user would, and compare answers before and after training.

Answers are greedy and go through the tokenizer's chat template with no system message of our
own. A folder holding a LoRA adapter is loaded on its base model.
"""

from __future__ import annotations

import re


def load_for_generation(path: str, dtype: str | None = None, chat_template: str | None = None, env=None,
                        kind: str | None = None):
    """(model, tokenizer) from a short name, a saved model folder, or a LoRA adapter folder, for answering.

    The model goes to the GPU when there is one (in bfloat16 unless `dtype` says otherwise), else
    stays on the CPU in float32. The tokenizer keeps its own chat template unless `chat_template`
    names another (see `modeling.prepare_tokenizer`); one without a template gets `simple`, as in
    training.
    """
    from . import environment, modeling

    device = (env or environment.probe()).device
    model, tokenizer = modeling.load_trained(path, dtype or ("bfloat16" if device == "cuda" else "float32"), chat_template,
                                             kind)
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


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def whole_sentences(text: str) -> str:
    """The text up to its last sentence end ("I'm Kestrel. I help with" -> "I'm Kestrel."); whole if it has none."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else text


def cut_at_last_sentence(texts: list[str], ids: list[list[int]], max_new_tokens: int) -> list[str]:
    """Answers that `max_new_tokens` cut off end at their last full sentence: data made of answers that stop
    mid-sentence teaches the model to stop mid-sentence."""
    return [whole_sentences(t) if len(i) >= max_new_tokens else t for t, i in zip(texts, ids)]


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
