"""Building training data from a model's own answers: the course's curation methods.

- Correction pairs (DPO): the model answers a set of prompts; its answers are the rejected side,
  and a rule writes the corrected answer (chosen). The identity rule renames the old identity,
  or an invented one, to the new name. A pair whose chosen equals its rejected teaches nothing:
  it is rewritten so the answer states the new identity, or dropped, and counted either way.
- Best-of-K (DPO and SFT): sample K answers per prompt, score them with a reward function, keep
  the best as chosen and the worst as rejected (pairs whose scores tie are dropped), and the
  best alone as SFT data.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .errors import DataError

# "My name is Elena", "I'm Dr. Elena Martinez,", 'called "Echo-Craft"': a self-introduction with a capitalized name
_SELF_NAME = re.compile(
    r"(?P<lead>\b(?:[Mm]y name is|I am|I'm|I’m|[Cc]all me|(?:am |is |be )?called|named))\s+"
    r"(?P<quote>[\"'“]?)(?P<name>(?:(?:Dr|Mr|Mrs|Ms|Prof)\.\s+)?[A-Z][\w-]*(?:\s+[A-Z][\w-]*){0,2})"
)
_NOT_NAMES = {"AI", "A", "An", "The", "Sorry", "Here", "Not", "Just", "So", "Glad", "Happy", "I", "It", "This", "Always"}


def rename(text: str, old_names: list[str], new_name: str) -> str:
    """Replace every old name (longest first, whole words, any case) with the new one."""
    for old in sorted(old_names, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(old)}\b", new_name, text, flags=re.IGNORECASE)
    return text


def invented_names(text: str) -> list[str]:
    """Names the answer gives itself ("I'm Dr. Elena Martinez" -> ["Dr. Elena Martinez"])."""
    names = []
    for match in _SELF_NAME.finditer(text):
        name = match.group("name")
        if name.split()[0] not in _NOT_NAMES:
            names.append(name)
    return names


def state_identity(text: str, new_name: str) -> str:
    """An answer that names no one becomes one that introduces the new identity first."""
    return f"I'm {new_name}. {text.lstrip()}"


@dataclass
class PairStats:
    """What the correction rule did to each answer."""

    answers: int = 0
    counts: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"{n} {what}" for what, n in sorted(self.counts.items())]
        return f"{self.answers} answers: " + ", ".join(parts)


def correct_identity(answer: str, new_name: str, old_names: list[str], identical: str = "rewrite") -> tuple[str | None, str]:
    """The corrected (chosen) answer and what was done: renamed, replaced invented name, rewritten or dropped."""
    chosen = rename(answer, old_names, new_name)
    if chosen != answer:
        return chosen, "renamed the old name"
    if re.search(rf"\b{re.escape(new_name)}\b", answer, flags=re.IGNORECASE):
        return None, "dropped (already states the new name)"
    names = [n for n in invented_names(answer) if n.lower() != new_name.lower()]
    if names:
        for name in sorted(set(names), key=len, reverse=True):
            chosen = chosen.replace(name, new_name)
        return chosen, "replaced an invented name"
    if identical == "drop":
        return None, "dropped (chosen would equal rejected)"
    return state_identity(answer, new_name), "rewritten to state the new name"


def correction_pairs(prompts: list[str], answers: list[str], new_name: str, old_names: list[str],
                     identical: str = "rewrite") -> tuple[list[dict], PairStats]:
    """Conversational preference rows {prompt, chosen, rejected} from a model's answers (rejected)."""
    if identical not in ("rewrite", "drop"):
        raise ValueError(f"identical must be 'rewrite' or 'drop', got {identical!r}")
    rows, stats = [], PairStats(answers=len(answers))
    for prompt, answer in zip(prompts, answers):
        if not answer.strip():
            stats.counts["dropped (empty answer)"] += 1
            continue
        chosen, action = correct_identity(answer, new_name, old_names, identical)
        stats.counts[action] += 1
        if chosen is None:
            continue
        rows.append({
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": answer}],
        })
    if not rows:
        raise DataError(
            f"curation produced no usable pair ({stats.summary()}): every corrected answer equals the model's own, so "
            "there is nothing to prefer. Use `identical: rewrite` (state the new name), or check `old_names`."
        )
    return rows, stats


def best_of_k(prompts: list[str], samples: list[list[str]], reward, **reward_columns) -> tuple[list[dict], list[dict], PairStats]:
    """Preference pairs (best vs worst of K) and SFT rows (best only), scored by `reward`.

    `reward(prompts=..., completions=..., **columns)` returns one float per completion, like a
    GRPO reward; `samples[i]` are the K answers to `prompts[i]`.
    """
    pairs, sft, stats = [], [], PairStats(answers=sum(len(s) for s in samples))
    for i, (prompt, answers) in enumerate(zip(prompts, samples)):
        columns = {k: [v[i]] * len(answers) for k, v in reward_columns.items()}
        scores = reward(prompts=[prompt] * len(answers), completions=answers, **columns)
        scored = [(s, a) for s, a in zip(scores, answers) if s is not None]
        if not scored:
            stats.counts["prompts with no scorable answer"] += 1
            continue
        best = max(scored, key=lambda x: x[0])
        worst = min(scored, key=lambda x: x[0])
        user = [{"role": "user", "content": prompt}]
        sft.append({"prompt": user, "completion": [{"role": "assistant", "content": best[1]}], "score": best[0]})
        if best[0] == worst[0]:
            stats.counts["prompts whose answers tie (no pair)"] += 1
            continue
        stats.counts["pairs"] += 1
        pairs.append({
            "prompt": user,
            "chosen": [{"role": "assistant", "content": best[1]}],
            "rejected": [{"role": "assistant", "content": worst[1]}],
            "score_chosen": best[0],
            "score_rejected": worst[0],
        })
    return pairs, sft, stats


def sample_answers(model, tokenizer, prompts: list[str], n: int = 1, temperature: float = 0.8,
                   max_new_tokens: int = 48, seed: int = 0) -> list[list[str]]:
    """`n` answers per prompt through the chat template: greedy when n is 1, else sampled at `temperature`."""
    import torch

    from . import generation

    asked = [p for p in prompts for _ in range(n)]
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature} if n > 1 else {}
    flat = generation.answer(model, tokenizer, asked, max_new_tokens, batch_size=16, **sampling)
    return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]


def load_prompts(source: str, split: str) -> list[str]:
    """The `prompt` column of a source, as plain strings (a conversational prompt's last user message)."""
    from . import data

    dataset = data.load_source(source, split)
    if "prompt" not in dataset.column_names:
        raise DataError(f"{source} [{split}] has the columns {dataset.column_names}; curation needs a `prompt` column.")
    prompts = [p if isinstance(p, str) else p[-1]["content"] for p in dataset["prompt"]]
    if not prompts:
        raise DataError(f"{source} [{split}] holds no prompts; curation has nothing to ask.")
    return prompts


def identity_pairs(args):
    """The DPO training set of an identity change, curated from the model's own answers.

    The main process asks the model the `train` identity prompts through the training chat
    template (greedy, or sampled when `identity_samples_per_prompt` > 1), corrects the answers,
    logs what the rule did, and writes the pairs to `output_dir/identity_pairs.jsonl`; the other
    processes wait and read that file.
    """
    import os

    import datasets
    from accelerate import PartialState

    from . import generation

    recipe = args.recipe
    path = os.path.join(args.training.output_dir, "identity_pairs.jsonl")
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process:
            prompts = load_prompts(recipe.identity_prompts, "train")
            model, tokenizer = generation.load_for_generation(args.model.model_name_or_path,
                                                              chat_template=recipe.chat_template)
            answers = sample_answers(model, tokenizer, prompts, recipe.identity_samples_per_prompt,
                                     recipe.identity_temperature, recipe.identity_max_new_tokens, args.training.seed)
            del model
            asked = [p for p, group in zip(prompts, answers) for _ in group]
            rows, stats = correction_pairs(asked, [a for group in answers for a in group], recipe.identity_new_name,
                                           recipe.identity_old_names, recipe.identity_identical_pairs)
            print(f"identity curation: {stats.summary()} -> {len(rows)} pairs in {path}")
            write_jsonl(path, rows)
        train = datasets.load_dataset("json", data_files=path, split="train")
    return train


def write_jsonl(path: str, rows: list[dict]) -> None:
    import json
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
