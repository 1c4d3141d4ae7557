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


def correction_pairs(prompts: list, answers: list[str], new_name: str, old_names: list[str],
                     identical: str = "rewrite") -> tuple[list[dict], PairStats]:
    """Conversational preference rows {prompt, chosen, rejected} from a model's answers (rejected) to questions
    or conversations."""
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
        rows.append(_pair(prompt, chosen, answer))
    if not rows:
        raise DataError(
            f"curation produced no usable pair ({stats.summary()}): every corrected answer equals the model's own, so "
            "there is nothing to prefer. Use `identical: rewrite` (state the new name), or check `old_names`."
        )
    return rows, stats


def _pair(prompt, chosen: str, rejected: str) -> dict:
    return {"prompt": list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


# How an answer that names itself unasked starts: the rejected side of a contrast pair.
SELF_INTRODUCTIONS = ("I'm {name}. ", "Hi, I'm {name}! ", "As {name}, I'd say: ", "{name} here. ", "My name is {name}. ")


def contrast_pairs(prompts: list, answers: list[str], new_name: str) -> tuple[list[dict], PairStats]:
    """Pairs on prompts unrelated to identity: the model's own answer is chosen, the same answer opened by a
    self-introduction under the new name rejected. With only correction pairs, every chosen answer carries the
    name and no rejected one does, and DPO can learn "say the name" instead of "this is my name"; these pairs
    push naming itself unasked down."""
    rows, stats = [], PairStats(answers=len(answers))
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        if not answer.strip() or re.search(rf"\b{re.escape(new_name)}\b", answer, flags=re.IGNORECASE):
            stats.counts["contrast dropped (empty, or names the new name)"] += 1
            continue
        introduction = SELF_INTRODUCTIONS[i % len(SELF_INTRODUCTIONS)].format(name=new_name)
        rows.append(_pair(prompt, answer, introduction + answer.lstrip()))
        stats.counts["contrast pairs (own answer over a self-introduction)"] += 1
    return rows, stats


def load_contexts(source: str, split: str) -> tuple[list[str], list[list[dict]]]:
    """(system prompts, earlier exchanges) of a contexts source: rows {system} or {user, assistant}."""
    from . import sources

    rows = sources.load_source(source, split).to_list()
    systems = [r["system"] for r in rows if r.get("system")]
    turns = [[{"role": "user", "content": r["user"]}, {"role": "assistant", "content": r["assistant"]}]
             for r in rows if r.get("user") and r.get("assistant")]
    return systems, turns


def in_contexts(prompts: list[str], source: str | None, split: str, offset: int = 0) -> dict[str, list[list[dict]]]:
    """The questions asked under a system prompt ("system") and after an earlier exchange ("turn"), the contexts
    taken in turn (from `offset`), as conversations."""
    if not source:
        return {}
    systems, turns = load_contexts(source, split)
    ways = {}
    if systems:
        ways["system"] = [[{"role": "system", "content": systems[(i + offset) % len(systems)]},
                           {"role": "user", "content": p}] for i, p in enumerate(prompts)]
    if turns:
        ways["turn"] = [turns[(i + offset) % len(turns)] + [{"role": "user", "content": p}] for i, p in enumerate(prompts)]
    return ways


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


def sample_answers(model, tokenizer, prompts: list, n: int = 1, temperature: float = 0.8,
                   max_new_tokens: int = 48, seed: int = 0, sample: bool | None = None) -> list[list[str]]:
    """`n` answers per prompt (a question or a conversation) through the chat template: greedy when n is 1,
    else (or with `sample`) sampled at `temperature`. An answer cut off at `max_new_tokens` ends at its last
    full sentence (whole if it has none)."""
    import torch

    from . import generation

    asked = [p for p in prompts for _ in range(n)]
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature} if (n > 1 if sample is None else sample) else {}
    texts, ids = generation.answer(model, tokenizer, asked, max_new_tokens, batch_size=48, return_ids=True, **sampling)
    flat = generation.cut_at_last_sentence(texts, ids, max_new_tokens)
    return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]


def load_prompts(source: str, split: str) -> list[str]:
    """The `prompt` column of a source, as plain strings (a conversational prompt's last user message)."""
    from . import sources

    dataset = sources.load_source(source, split)
    if "prompt" not in dataset.column_names:
        raise DataError(f"{source} [{split}] has the columns {dataset.column_names}; curation needs a `prompt` column.")
    prompts = [p if isinstance(p, str) else p[-1]["content"] for p in dataset["prompt"]]
    if not prompts:
        raise DataError(f"{source} [{split}] holds no prompts; curation has nothing to ask.")
    return prompts


def curate_identity(model_path: str, prompts: list[str], new_name: str, old_names: list[str], samples: int = 1,
                    temperature: float = 0.8, max_new_tokens: int = 48, seed: int = 0, identical: str = "rewrite",
                    chat_template: str | None = None, env=None, contexts: str | None = None,
                    unrelated: list[str] | None = None, contrast_ratio: float = 1.0,
                    all_ways: bool = False) -> tuple[list[dict], PairStats]:
    """DPO pairs for an identity change. The model answers the identity questions (greedy, or `samples` sampled
    answers each) plainly, under a system prompt or after an earlier exchange of `contexts` (its `train` split):
    each question one way, in turn, or every way with `all_ways`; its answers are rejected, the renamed ones
    chosen. With `unrelated` prompts, contrast pairs too (`contrast_ratio` per identity pair, at most one per
    prompt): its own answer chosen over the same answer opened by a self-introduction under the new name.
    Answers cut off by `max_new_tokens` end at their last full sentence, so that no pair teaches stopping
    mid-sentence."""
    import random

    from . import generation

    ways = [list(prompts), *in_contexts(prompts, contexts, "train", offset=seed).values()]
    if all_ways:
        asked = [question for way in ways for question in way]
    else:  # question i asked the (i + seed)-th way: the ways share the questions
        asked = [ways[(i + seed) % len(ways)][i] for i in range(len(prompts))]
    model, tokenizer = generation.load_for_generation(model_path, chat_template=chat_template, env=env)
    answers = sample_answers(model, tokenizer, asked, samples, temperature, max_new_tokens, seed)
    rows, stats = correction_pairs([p for p, group in zip(asked, answers) for _ in group],
                                   [a for group in answers for a in group], new_name, old_names, identical)
    if unrelated and contrast_ratio > 0:
        chosen = random.Random(seed).sample(list(unrelated), min(len(unrelated), round(contrast_ratio * len(rows))))
        own = [group[0] for group in  # answered the way the identity questions were: greedy, or sampled
               sample_answers(model, tokenizer, chosen, 1, temperature, max_new_tokens, seed, sample=samples > 1)]
        contrast, contrast_stats = contrast_pairs(chosen, own, new_name)
        rows += contrast
        stats.answers += contrast_stats.answers
        stats.counts.update(contrast_stats.counts)
    del model
    return rows, stats


def identity_pairs(args, run):
    """The DPO training set of an identity change, curated from the model's own answers.

    The main process asks the model the `train` identity prompts through the training chat template
    (greedy, or sampled when `identity_samples_per_prompt` > 1), corrects the answers and logs what the
    rule did; the other processes receive the pairs. The run folder keeps them (identity_pairs.jsonl).
    """
    import datasets
    from accelerate.utils import broadcast_object_list

    from .environment import distributed_state

    recipe = args.recipe
    state = distributed_state()
    rows = [None]
    if state.is_main_process:
        try:
            unrelated = load_prompts(recipe.identity_unrelated, "train") if recipe.identity_unrelated else None
            pairs, stats = curate_identity(
                args.model.model_name_or_path, load_prompts(recipe.identity_prompts, "train"), recipe.identity_new_name,
                recipe.identity_old_names, recipe.identity_samples_per_prompt, recipe.identity_temperature,
                recipe.identity_max_new_tokens, args.training.seed, recipe.identity_identical_pairs,
                recipe.chat_template, args.env, recipe.identity_contexts, unrelated, recipe.identity_contrast_ratio,
                recipe.identity_all_ways)
            print(f"identity curation: {stats.summary()} -> {len(pairs)} pairs (identity_pairs.jsonl in the run folder)")
            rows = [pairs]
        except DataError as error:
            rows = [error]
    if state.num_processes > 1:
        broadcast_object_list(rows, from_process=0)
    if isinstance(rows[0], DataError):
        raise rows[0]
    run.keep("identity_pairs.jsonl", rows[0])
    return datasets.Dataset.from_list(rows[0])


def best_of_k_from(source: str, split: str, reward_name: str, model_path: str, k: int = 4, temperature: float = 0.8,
                   max_new_tokens: int = 48, seed: int = 0, chat_template: str | None = None):
    """Best-of-K over a source's prompts: K sampled answers each, scored by a registered reward (or
    `package.module:function`) that reads the source's other columns. Returns (pairs, sft rows, stats)."""
    from . import generation, rewards, sources

    reward = rewards.resolve(reward_name)
    dataset = sources.load_source(source, split)
    prompts = load_prompts(source, split)
    columns = {c: dataset[c] for c in dataset.column_names if c != "prompt"}
    model, tokenizer = generation.load_for_generation(model_path, chat_template=chat_template)
    samples = sample_answers(model, tokenizer, prompts, k, temperature, max_new_tokens, seed)
    del model
    return best_of_k(prompts, samples, reward, **columns)


def write_jsonl(path: str, rows: list[dict]) -> None:
    import json
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
