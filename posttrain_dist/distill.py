"""Distillation (the course's first curation method): a teacher model answers prompts, and its answers become SFT
data that a student learns from. `posttrain-dist curate distill`.

- The teacher sees an optional system prompt of its own (context distillation: the student learns to behave as
  the teacher does *with* that prompt, without it); the rows written keep only the prompt and the answer.
- Answers are greedy at temperature 0 (the default), else sampled. Empty answers are never kept; an answer cut
  off at `max_new_tokens` ends at its last full sentence (a student trained on cut answers learns to stop
  mid-sentence).
- With a reward and several samples it is rejection sampling: the teacher's answers are scored (a registered
  reward or `package.module:function`, reading the prompt file's other columns), and the best answer that passes
  (`min_reward`; a reward of None means "does not apply", a pass) is kept; a prompt with none is dropped.
- Work is split in fixed batches of prompts: batch b is always prompts[b*B:(b+1)*B] and sampled with seed + b,
  so the answers do not depend on how many processes share the work. Under `accelerate launch` each process
  takes every world-size-th batch; each writes its finished batches to a shard file as it goes (a crash loses at
  most the batch in progress), a rerun skips the batches already there, and the main process merges the shards
  in prompt order into the output file.
- Generation is batched with transformers; vLLM, when installed and a GPU is present, answers instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import ConfigError, DataError


@dataclass
class DistillStats:
    prompts: int = 0
    kept: int = 0
    no_pass: int = 0

    def summary(self) -> str:
        return (f"{self.prompts} prompts: {self.kept} answers kept"
                + (f", {self.no_pass} prompts without an answer that passes the reward" if self.no_pass else ""))


def load_prompts(source: str, split: str = "train", columns: dict | None = None):
    """The prompts to distill, as conversations, with the source's other columns (what a reward reads)."""
    from . import data, formats, sources

    dataset = data.rename_columns(sources.load_source(source, split), columns, source, "--columns")
    if "prompt" not in dataset.column_names:
        raise DataError(f"{source} [{split}] has the columns {dataset.column_names}; distillation needs a `prompt` "
                        "column (map one with --columns question=prompt).")
    data.check_rows(dataset, formats.PROMPT[0], source, source)
    rows = dataset.to_list()
    for row in rows:
        row["prompt"] = formats.as_turn(row["prompt"], formats.user)
    return rows


def _shard_path(out: str, rank: int) -> str:
    return f"{out}.shard{rank}.jsonl"


def _done(out: str) -> dict[int, list[dict]]:
    """Batches already written by any earlier attempt, by batch index (each shard line is one finished batch)."""
    done = {}
    folder, base = os.path.dirname(os.path.abspath(out)), os.path.basename(out)
    if not os.path.isdir(folder):
        return done
    for name in sorted(os.listdir(folder)):
        if name.startswith(base + ".shard") and name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                for line in f:
                    try:
                        batch = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a crash: that batch is done again
                        continue
                    done[batch["batch"]] = batch["rows"]
    return done


def distill(teacher: str, prompts: list[dict], out: str, system: str | None = None, reward=None, samples: int = 1,
            min_reward: float = 1.0, batch_size: int = 8, max_new_tokens: int = 256, temperature: float = 0.0,
            seed: int = 0, chat_template: str | None = None, progress: bool = True) -> DistillStats:
    """Answer every prompt with the teacher and write SFT rows {"messages": [...prompt, answer]} to `out`, in prompt
    order. Safe to rerun after a crash: finished batches are kept. Returns what was kept."""
    from .environment import distributed_state

    if samples > 1 and reward is None:
        raise ConfigError("--samples above 1 needs --reward to choose among the answers (rejection sampling).")
    if samples > 1 and temperature <= 0:
        raise ConfigError("--samples above 1 needs --temperature above 0: greedy answers would all be the same.")
    state = distributed_state()
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    done = _done(out)
    mine = [b for b in range(len(batches)) if b % state.num_processes == state.process_index and b not in done]
    if mine:
        answer = _answerer(teacher, chat_template, max_new_tokens, temperature)
        with open(_shard_path(out, state.process_index), "a") as shard, _progress(len(prompts), progress, state) as bar:
            bar.update(sum(len(batches[b]) for b in range(len(batches)) if b in done))
            for b in mine:
                rows = _answer_batch(batches[b], answer, system, reward, samples, min_reward, seed + b)
                shard.write(json.dumps({"batch": b, "rows": rows}) + "\n")
                shard.flush()
                os.fsync(shard.fileno())
                bar.update(len(batches[b]) * state.num_processes)
        del answer
    state.wait_for_everyone()
    stats = DistillStats(prompts=len(prompts))
    if state.is_main_process:
        done = _done(out)
        missing = [b for b in range(len(batches)) if b not in done]
        if missing:
            raise DataError(f"distillation is missing batches {missing[:5]}: run the same command again to finish.")
        kept = [row for b in range(len(batches)) for row in done[b] if row is not None]
        stats.kept, stats.no_pass = len(kept), sum(row is None for b in range(len(batches)) for row in done[b])
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in kept)
        os.replace(tmp, out)
        for rank in range(state.num_processes):
            if os.path.exists(_shard_path(out, rank)):
                os.remove(_shard_path(out, rank))
    state.wait_for_everyone()
    return stats


def _progress(total: int, enabled: bool, state):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="distilling", unit="prompt", disable=not enabled or not state.is_main_process)


def _answer_batch(batch: list[dict], answer, system, reward, samples: int, min_reward: float, seed: int) -> list:
    """The kept row for each prompt of one batch (None where no answer passes)."""
    asked = [([{"role": "system", "content": system}] if system else []) + row["prompt"] for row in batch]
    answers = answer(asked, samples, seed)  # samples answers per prompt
    kept = []
    for i, row in enumerate(batch):
        options = [a for a in answers[i * samples : (i + 1) * samples] if a.strip()]  # an empty answer teaches nothing
        if not options:
            kept.append(None)
            continue
        if reward is not None:
            columns = {k: [v] * len(options) for k, v in row.items() if k != "prompt"}
            scores = reward(prompts=[row["prompt"]] * len(options), completions=options, **columns)
            passing = [(s, a) for s, a in zip(scores, options) if s is None or s >= min_reward]
            if not passing:
                kept.append(None)
                continue
            best = max(passing, key=lambda x: -1e9 if x[0] is None else x[0])[1]
        else:
            best = options[0]
        kept.append({"messages": row["prompt"] + [{"role": "assistant", "content": best}]})
    return kept


def _answerer(teacher: str, chat_template: str | None, max_new_tokens: int, temperature: float):
    """A function (conversations, samples, seed) -> answers: vLLM where it is installed on a GPU, else
    transformers' batched generate (greedy at temperature 0, else sampled)."""
    import importlib.util

    import torch

    from . import generation

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        from . import modeling
        from transformers import AutoTokenizer

        tokenizer = modeling.prepare_tokenizer(AutoTokenizer.from_pretrained(modeling.resolve_model(teacher)),
                                               chat_template)
        return _vllm_answerer(teacher, tokenizer, max_new_tokens, temperature)
    model, tokenizer = generation.load_for_generation(teacher, chat_template=chat_template)

    def answer(conversations, samples, seed):
        torch.manual_seed(seed)
        asked = [c for c in conversations for _ in range(samples)]
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        texts, ids = generation.answer(model, tokenizer, asked, max_new_tokens, batch_size=len(asked), return_ids=True,
                                       **sampling)
        return generation.cut_at_last_sentence(texts, ids, max_new_tokens)

    return answer


def _vllm_answerer(teacher: str, tokenizer, max_new_tokens: int, temperature: float):
    """vLLM's offline engine on the teacher (the GPU path; not reachable on a CPU machine)."""
    from vllm import LLM, SamplingParams

    from . import generation
    from .modeling import resolve_model

    engine = LLM(model=resolve_model(teacher))

    def answer(conversations, samples, seed):
        params = SamplingParams(n=samples, max_tokens=max_new_tokens, seed=seed, temperature=temperature)
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        outputs = [o for request in engine.generate(texts, params) for o in request.outputs]
        return [generation.whole_sentences(o.text.strip()) if o.finish_reason == "length" else o.text.strip()
                for o in outputs]

    return answer
