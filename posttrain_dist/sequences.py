"""SFT data as the model trains on it: token ids and labels, made once per data set and config, before any model loads.

A conversation is trained in one pass: it is rendered once through the chat template, tokenized once
(with character offsets), and each token is in the loss exactly when it falls in an assistant turn's
completion, where the per-turn split would put it (`per_turn`: each assistant turn its own example,
its prompt every turn before it). Most templates need no `{% generation %}` markers for this:

- the completion of a turn is found in the rendered text as head + content + tail, where head and tail
  are what the template puts around an answer after its generation prompt (`<|im_end|>\\n` for ChatML),
  read once per template from a probe conversation;
- the probe (a system message, three exchanges, reasoning in an earlier answer) is also rendered turn
  by turn; a template whose fast spans differ there, or that renders an earlier turn differently once
  later ones follow (Qwen3 drops earlier reasoning), is handled turn by turn instead: exactly (prefix
  renders) where that gives the same text, else (`multi_turn: auto`) as per-turn examples for that row.

Rows are truncated to `max_length` (unless packing), and rows with no trained token left are dropped and
counted before the model loads. The result is cached in the output folder (`prepared/<fingerprint>/`):
the main process prepares it, every other rank (every node: the output folder is shared) and the next
attempt after a requeue read it. `dataset_num_proc` runs the tokenization in that many processes.
"""

from __future__ import annotations

import hashlib
import json
import os

from . import formats
from .errors import DataError, warn

PROBE = [
    {"role": "system", "content": "PROBE system message."},
    {"role": "user", "content": "PROBE question one?"},
    {"role": "assistant", "content": "<think>\nPROBE earlier reasoning.\n</think>\n\nPROBE answer one."},
    {"role": "user", "content": "PROBE question two?"},
    {"role": "assistant", "content": "PROBE answer two."},
    {"role": "user", "content": "PROBE question three?"},
    {"role": "assistant", "content": "PROBE answer three."},
]


def _kwargs_of(row: dict) -> dict:
    kwargs = {k: v for k, v in (row.get("chat_template_kwargs") or {}).items() if v is not None}
    tools = row.get("tools")
    if tools:
        kwargs["tools"] = json.loads(tools) if isinstance(tools, str) else tools
    return kwargs


class Masker:
    """Token ids and labels of conversations under one tokenizer and chat template."""

    def __init__(self, tokenizer, multi_turn: str = "auto"):
        self.tokenizer, self.multi_turn = tokenizer, multi_turn
        self._template: dict[str, tuple | None] = {}  # kwargs -> (head, tail) of the fast path, or None
        self.counts = {"one_pass": 0, "exact": 0, "per_turn": 0}

    def render(self, messages, kwargs, generation_prompt=False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                                  **kwargs)

    def exact_spans(self, messages, kwargs) -> list[tuple[int, int]] | None:
        """Each trained turn's completion where the per-turn split puts it, by rendering turn by turn; None when
        the template renders an earlier turn differently once later turns follow."""
        full, spans = self.render(messages, kwargs), []
        for i in formats.trained_turns(messages):
            prompt, upto = self.render(messages[:i], kwargs, True), self.render(messages[: i + 1], kwargs)
            if not (full.startswith(upto) and upto.startswith(prompt)):
                return None
            spans.append((len(prompt), len(upto)))
        return spans

    def fast_spans(self, messages, full: str, kwargs) -> list[tuple[int, int]] | None:
        shape = self._shape(kwargs)
        if shape is None:
            return None
        head, tail = shape
        spans, cursor = [], 0
        for i in formats.trained_turns(messages):
            piece = head + messages[i]["content"] + tail
            start = full.find(piece, cursor)
            if start < 0:
                return None
            spans.append((start, start + len(piece)))
            cursor = start + len(piece)
        return spans

    def _shape(self, kwargs) -> tuple | None:
        key = json.dumps(kwargs, sort_keys=True, default=str)
        if key not in self._template:
            self._template[key] = None
            try:
                prompt = self.render(PROBE[:2], kwargs, True)
                completion = self.render(PROBE[:3], kwargs)[len(prompt):]
                answer = PROBE[2]["content"]
                if answer in completion:
                    head, tail = completion.split(answer, 1)
                    shape = (head, tail)
                    self._template[key] = shape
                    full = self.render(PROBE, kwargs)
                    exact = self.exact_spans(PROBE, kwargs)
                    if exact is None or self.fast_spans(PROBE, full, kwargs) != exact:
                        self._template[key] = None
            except Exception:  # a template that cannot render the probe: every row goes the exact way
                self._template[key] = None
        return self._template[key]

    def spans(self, messages, kwargs) -> tuple[str, list | None]:
        """(the rendered text, its trained spans) in one pass, or (text, None): train this row per turn."""
        full = self.render(messages, kwargs)
        if self.multi_turn == "per_turn":
            return full, None
        spans = self.fast_spans(messages, full, kwargs)
        if spans is not None:
            self.counts["one_pass"] += 1
            return full, spans
        spans = self.exact_spans(messages, kwargs)
        if spans is not None:
            self.counts["exact"] += 1
            return full, spans
        if self.multi_turn == "one_pass":
            raise DataError("`multi_turn: one_pass`, but the chat template renders an earlier turn of a conversation "
                            "differently once later turns follow (as Qwen3's drops earlier reasoning): those turns "
                            "would be trained on text the model never sees. Use `multi_turn: auto` or `per_turn`.")
        return full, None

    def batch(self, rows: list[dict], train_everything: bool) -> dict:
        """input_ids and labels (-100 outside the trained spans) of a batch of conversation rows."""
        texts, spans = [], []
        for row in rows:
            kwargs = _kwargs_of(row)
            try:
                full, found = self.spans(row["messages"], kwargs)
            except DataError:
                raise
            except Exception as error:  # the template refuses the conversation (roles that do not alternate, ...)
                raise DataError(f"the chat template cannot render a conversation ({type(error).__name__}: {error}); "
                                f"its first message: {str(row['messages'][0])[:120]}") from None
            if found is not None:
                texts.append(full)
                spans.append(found)
                continue
            for i in formats.trained_turns(row["messages"]):  # this row per turn: one example per answer
                self.counts["per_turn"] += 1
                prompt = self.render(row["messages"][:i], kwargs, True)
                texts.append(self.render(row["messages"][: i + 1], kwargs))
                # the answer starts where the prompt and the rendered turn part (trl's rule: not always at the end
                # of the prompt, when the template renders a last answer with more than its generation prompt)
                spans.append([(len(os.path.commonprefix([prompt, texts[-1]])), len(texts[-1]))])
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        labels = []
        for ids, offsets, trained in zip(encoded["input_ids"], encoded["offset_mapping"], spans):
            labels.append(list(ids) if train_everything else _labels(ids, offsets, trained))
        return {"input_ids": encoded["input_ids"], "labels": labels}


def _labels(ids, offsets, spans) -> list[int]:
    out, j = [], 0
    for token, (start, _) in zip(ids, offsets):
        while j < len(spans) and start >= spans[j][1]:
            j += 1
        out.append(token if j < len(spans) and spans[j][0] <= start < spans[j][1] else -100)
    return out


def tokenize(dataset, tokenizer, training, multi_turn: str, source: str):
    """`dataset` (messages or text rows) as input_ids and labels, truncated, rows without a trained token dropped."""
    train_everything = getattr(training, "completion_only_loss", None) is False and \
        not getattr(training, "assistant_only_loss", False)
    num_proc = getattr(training, "dataset_num_proc", None)
    if "messages" in dataset.column_names:
        masker = Masker(tokenizer, multi_turn)

        def encode(batch):
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            return masker.batch(rows, train_everything)
    else:
        eos = tokenizer.eos_token or ""

        def encode(batch):
            ids = tokenizer([t if t.endswith(eos) else t + eos for t in batch["text"]])["input_ids"]
            return {"input_ids": ids, "labels": [list(i) for i in ids]}

    tokenized = dataset.map(encode, batched=True, batch_size=256, remove_columns=dataset.column_names,
                            num_proc=num_proc, desc=f"Tokenizing {source}")
    if training.max_length is not None and not getattr(training, "packing", False):
        keep_end = getattr(training, "truncation_mode", "keep_start") == "keep_end"
        window = slice(-training.max_length, None) if keep_end else slice(None, training.max_length)
        tokenized = tokenized.map(lambda b: {"input_ids": [i[window] for i in b["input_ids"]],
                                             "labels": [label[window] for label in b["labels"]]},
                                  batched=True, num_proc=num_proc, desc=f"Truncating {source} to {training.max_length}")
    kept = tokenized.filter(lambda b: [any(x != -100 for x in label) for label in b["labels"]], batched=True,
                            num_proc=num_proc, desc=f"Dropping rows of {source} with nothing to learn")
    if len(kept) == 0:
        raise DataError(f"{source}: no row has a trained token within max_length={training.max_length} (every answer "
                        "is cut off behind its prompt): raise `max_length` or shorten the prompts.")
    if len(kept) < len(tokenized):
        warn(f"{source}: dropped {len(tokenized) - len(kept)} of {len(tokenized)} rows whose answer lies beyond "
             f"max_length={training.max_length} tokens (nothing of it would be trained).")
    return kept


def fingerprint(dataset, tokenizer, training, multi_turn: str) -> str:
    """What the prepared rows depend on: the rows, the tokenizer and template, and the options that shape them."""
    parts = [getattr(dataset, "_fingerprint", None) or str(len(dataset)), tokenizer.name_or_path, str(len(tokenizer)),
             tokenizer.chat_template or "", str(training.max_length), str(getattr(training, "truncation_mode", "")),
             str(getattr(training, "packing", False)), str(getattr(training, "completion_only_loss", None)),
             str(getattr(training, "assistant_only_loss", False)), multi_turn, "2"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def trainer_args(training):
    """The training arguments trl's SFTTrainer gets: a copy that says the data is prepared (input_ids and labels, the
    masks already applied), so that trl neither tokenizes it again nor asks for generation markers. The run's own
    arguments (config.yaml, the run's hash) stay as the config said."""
    import copy

    args = copy.copy(training)
    args.dataset_kwargs = {**(training.dataset_kwargs or {}), "skip_prepare_dataset": not training.packing}
    args.assistant_only_loss = False
    args.completion_only_loss = None
    return args


def prepare(datasets: dict, tokenizer, args, folder: str) -> dict:
    """{name: dataset} tokenized, through the cache in `folder/prepared/` (made by the main process, read by all)."""
    recipe = args.recipe
    label = recipe.dataset_name or f"the mixture of {len(recipe.dataset_mixture or [])} data sets"
    from datasets import load_from_disk

    from .environment import distributed_state

    out = {}
    state = distributed_state()
    for name, dataset in datasets.items():
        if dataset is None:
            out[name] = None
            continue
        key = fingerprint(dataset, tokenizer, args.training, args.recipe.multi_turn)
        path = os.path.join(folder, "prepared", f"{name}-{key}")
        with state.main_process_first():
            if os.path.isfile(os.path.join(path, "dataset_info.json")):
                out[name] = load_from_disk(path)
                continue
            prepared = tokenize(dataset, tokenizer, args.training, args.recipe.multi_turn, f"{label} ({name})")
            if state.is_main_process:
                _save(prepared, path, folder, name)
            out[name] = prepared
    return out


def _save(prepared, path: str, folder: str, name: str) -> None:
    import shutil

    root = os.path.join(folder, "prepared")
    for old in os.listdir(root) if os.path.isdir(root) else []:
        if old.startswith(f"{name}-") and os.path.join(root, old) != path:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)  # a former config's: not kept around
    tmp = f"{path}.{os.getpid()}.tmp"
    prepared.save_to_disk(tmp)
    os.replace(tmp, path)
