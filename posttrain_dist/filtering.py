"""Filtering (the course's third curation method): keep the high-quality, diverse examples of a large data set.
`posttrain-dist curate filter`.

Rules, each optional, applied in this order (each sees what the ones before kept), each counted:

    exact          the same prompt and response (case and white space folded): the first is kept
    near           near duplicates: MinHash over word 3-shingles with locality-sensitive hashing (datasketch),
                   estimated Jaccard similarity at or above `near_threshold`: the first is kept
    length         prompt and response word counts within the bounds given
    empty          responses with no text, or cut off (not ending a sentence: no closing punctuation)
    refusals       responses with a refusal or boilerplate phrase (`REFUSALS`, extended by the user)
    reward         a reward function's score of the response within [min_score, max_score]
    perplexity     the response's perplexity under a model within [min_perplexity, max_perplexity]
    select         N rows that cover the data: k-center greedy over embeddings (a model's mean hidden state, or
                   hashed bags of words), not the first N

With no rule named, exact and near duplicates are removed. Any SFT layout goes in (`formats`); the kept rows
come out unchanged, in their input order and layout. Every pass is linear in the rows (`select` is rows x N).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

REFUSALS = ["as an ai language model", "i'm sorry, but i can't", "i am sorry, but i cannot", "i cannot help with",
            "i can't help with", "i can't assist with", "i cannot assist with", "i'm unable to", "i am unable to",
            "i'm not able to provide", "i cannot provide", "i can't provide"]
_ENDS_A_SENTENCE = re.compile(r"[.!?)\]}\"'`*…:]\s*$|```\s*$")


@dataclass
class Rules:
    exact: bool = True
    near: bool = True
    near_threshold: float = 0.8
    min_prompt_words: int | None = None
    max_prompt_words: int | None = None
    min_response_words: int | None = None
    max_response_words: int | None = None
    drop_empty_or_truncated: bool = False
    refusals: list[str] | None = None  # None: not applied; [] : the default list only
    reward: object = None
    min_score: float | None = None
    max_score: float | None = None
    perplexity_model: str | None = None
    min_perplexity: float | None = None
    max_perplexity: float | None = None
    select: int | None = None
    embedding_model: str = "hashing"
    seed: int = 0
    removed: dict = field(default_factory=dict)


def texts(dataset) -> list[tuple[str, str]]:
    """(prompt text, response text) of each row, whatever its SFT layout: the user and system turns, and the
    assistant turns, of each example the row becomes."""
    from . import formats

    layout = formats.detect(dataset.column_names, formats.CONVERSATION, "the data", "filtering")
    out = []
    for row in dataset.to_list():
        converted = layout.convert({k: [v] for k, v in row.items()})
        if "text" in converted:
            out.append(("", " ".join(converted["text"])))
            continue
        messages = [m for conversation in converted["messages"] for m in conversation]
        prompts = [m["content"] for m in messages if m["role"] != "assistant"]
        responses = [m["content"] for m in messages if m["role"] == "assistant"]
        out.append((" ".join(prompts), " ".join(responses)))
    return out


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def exact_duplicates(keep: list[int], pairs) -> list[int]:
    seen, kept = set(), []
    for i in keep:
        key = (_fold(pairs[i][0]), _fold(pairs[i][1]))
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept


def near_duplicates(keep: list[int], pairs, threshold: float = 0.8, num_perm: int = 64) -> list[int]:
    """MinHash LSH over word 3-shingles of prompt and response: a row is dropped when an earlier kept row is
    estimated at `threshold` Jaccard similarity or above. Linear in the rows."""
    from datasketch import MinHash, MinHashLSH

    lsh, kept = MinHashLSH(threshold=threshold, num_perm=num_perm), []
    for i in keep:
        words = _words(pairs[i][0] + " " + pairs[i][1])
        shingles = {" ".join(words[j : j + 3]).encode() for j in range(max(1, len(words) - 2))}
        signature = MinHash(num_perm=num_perm, seed=1)
        signature.update_batch(list(shingles))
        if not lsh.query(signature):
            lsh.insert(i, signature)
            kept.append(i)
    return kept


def _within(value, low, high) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def embed(pairs, indices: list[int], model: str = "hashing", dims: int = 1024):
    """Unit vectors for the rows: a model's mean last hidden state over the prompt and response (a short name, a
    folder or a hub id), or `hashing`: hashed bags of words (no model)."""
    import numpy as np

    if model == "hashing":
        import zlib

        vectors = np.zeros((len(indices), dims), dtype=np.float32)
        for row, i in enumerate(indices):
            for word in _words(pairs[i][0] + " " + pairs[i][1]):
                vectors[row, zlib.crc32(word.encode()) % dims] += 1.0
    else:
        import torch

        from . import generation

        lm, tokenizer = generation.load_for_generation(model)
        out = []
        with torch.no_grad():
            for start in range(0, len(indices), 16):
                batch = [pairs[i][0] + "\n" + pairs[i][1] for i in indices[start : start + 16]]
                enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=256).to(lm.device)
                hidden = lm(**enc, output_hidden_states=True).hidden_states[-1].float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu().numpy())
        vectors = np.concatenate(out)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def k_center(vectors, n: int, seed: int = 0) -> list[int]:
    """Positions of `n` rows chosen by k-center greedy: each next row is the one farthest from all chosen so far,
    so every region of the data gets a row before any region gets a second one."""
    import numpy as np

    first = int(np.random.default_rng(seed).integers(len(vectors)))
    chosen = [first]
    distance = 1.0 - vectors @ vectors[first]
    for _ in range(min(n, len(vectors)) - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, 1.0 - vectors @ vectors[nxt])
    return sorted(chosen)


def apply(dataset, rules: Rules) -> tuple[list[int], list[tuple[str, int, int]]]:
    """Indices of the rows kept, in input order, and a table of (rule, rows removed, rows left)."""
    pairs = texts(dataset)
    keep, table = list(range(len(pairs))), []

    def step(name: str, kept: list[int]) -> None:
        nonlocal keep
        table.append((name, len(keep) - len(kept), len(kept)))
        keep = kept

    if rules.exact:
        step("exact duplicates", exact_duplicates(keep, pairs))
    if rules.near:
        step(f"near duplicates (Jaccard >= {rules.near_threshold})", near_duplicates(keep, pairs, rules.near_threshold))
    bounds = (rules.min_prompt_words, rules.max_prompt_words, rules.min_response_words, rules.max_response_words)
    if any(b is not None for b in bounds):
        step("length", [i for i in keep if _within(len(_words(pairs[i][0])), *bounds[:2])
                        and _within(len(_words(pairs[i][1])), *bounds[2:])])
    if rules.drop_empty_or_truncated:
        step("empty or truncated responses", [i for i in keep if pairs[i][1].strip()
                                              and _ENDS_A_SENTENCE.search(pairs[i][1].strip())])
    if rules.refusals is not None:
        phrases = [p.lower() for p in REFUSALS + list(rules.refusals)]
        step("refusals and boilerplate", [i for i in keep if not any(p in pairs[i][1].lower() for p in phrases)])
    if rules.reward is not None:
        rows = dataset.select(keep).to_list()
        columns = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
        scores = rules.reward(prompts=[pairs[i][0] for i in keep], completions=[pairs[i][1] for i in keep], **columns)
        step(f"reward score in [{rules.min_score}, {rules.max_score}]",
             [i for i, s in zip(keep, scores) if s is not None and _within(s, rules.min_score, rules.max_score)])
    if rules.perplexity_model:
        step(f"perplexity in [{rules.min_perplexity}, {rules.max_perplexity}]",
             [i for i, p in zip(keep, _perplexities(pairs, keep, rules.perplexity_model))
              if _within(p, rules.min_perplexity, rules.max_perplexity)])
    if rules.select is not None and len(keep) > rules.select:
        positions = k_center(embed(pairs, keep, rules.embedding_model), rules.select, rules.seed)
        step(f"select {rules.select} that cover the data (k-center, {rules.embedding_model} embeddings)",
             [keep[p] for p in positions])
    return keep, table


def _perplexities(pairs, keep: list[int], model: str) -> list[float]:
    import datasets

    from . import evaluation, generation

    lm, tokenizer = generation.load_for_generation(model)
    values = []
    for i in keep:
        row = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": pairs[i][0] or " "}],
                                           "completion": [{"role": "assistant", "content": pairs[i][1]}]}])
        values.append(evaluation.perplexity(lm, tokenizer, row))
    return values


def render(table: list[tuple[str, int, int]], total: int) -> str:
    from .generation import text_table

    rows = [{"rule": name, "removed": str(removed), "left": str(left)} for name, removed, left in table]
    return f"{total} rows in\n" + text_table(rows, ("rule", "removed", "left"), width=70)
