"""Load and mix data sets, check their format for a method, and put them in the form trl trains on.

Sources: a hub name, a local file (.json, .jsonl, .parquet, .csv) or folder, or a data set shipped
with posttrain-dist (`builtin:NAME`, see `BUILTIN`). A weighted mixture lists several sources.

Formats, per method (the columns must be present; other columns are kept for GRPO rewards):

- sft: `messages` (a conversation: a list of {role, content}), `conversations` (ShareGPT: a list
  of {from, value}), `prompt` + `completion`, or `text`.
- dpo: `prompt` + `chosen` + `rejected` (plain strings or conversations), or `chosen` + `rejected`.
- grpo: `prompt` (plain or conversational) plus whatever columns the rewards read (`builtin:arithmetic`
  and `builtin:countdown` are generated locally, see `tasks`).

A wrong format is reported with the columns found and expected, before any model is loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import tasks
from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
# builtin:NAME -> files per split, shipped as package data
BUILTIN = {
    "sft-basics": {"train": "sft_basics_train.jsonl", "test": "sft_basics_heldout.jsonl"},
    "prefs-basics": {"train": "prefs_basics_train.jsonl", "test": "prefs_basics_heldout.jsonl"},
    "identity": {"train": "identity_train.jsonl", "test": "identity_heldout.jsonl"},
}
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

FORMATS = {
    "sft": {
        "messages": ("messages",),
        "conversations": ("conversations",),
        "prompt-completion": ("prompt", "completion"),
        "text": ("text",),
    },
    "dpo": {
        "preference": ("prompt", "chosen", "rejected"),
        "implicit-prompt preference": ("chosen", "rejected"),
    },
    "grpo": {"prompt-only": ("prompt",)},
}

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


# ---------------------------------------------------------------- sources


def _local_path(source: str) -> str | None:
    """The local path a source names, or None for a hub name."""
    path = os.path.expanduser(source)
    if os.path.exists(path):
        return path
    looks_local = source.startswith(("/", "./", "../", "~")) or Path(source).suffix in FILE_BUILDERS
    looks_local = looks_local or source.count("/") > 1
    return path if looks_local else None


def check_source(source: str, what: str) -> None:
    """One source exists (local) or is well-formed (built-in, hub); nothing is read."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN and name not in tasks.GENERATORS:
            known = ", ".join(sorted([*BUILTIN, *tasks.GENERATORS]))
            raise ConfigError(f"{what}: unknown built-in data set {name!r}; built-in: {known}.")
        return
    path = _local_path(source)
    if path is None:
        return  # a hub name: checked when loaded
    if not os.path.exists(path):
        raise ConfigError(f"{what}: data file or folder {source!r} does not exist.")
    if os.path.isfile(path) and Path(path).suffix not in FILE_BUILDERS:
        raise ConfigError(
            f"{what}: cannot read {source!r}; data files must be one of {', '.join(FILE_BUILDERS)}."
        )


def check_sources(recipe) -> None:
    """Every data source named by the config exists (local files) or is well-formed; nothing is read."""
    if recipe.dataset_mixture:
        for i, part in enumerate(recipe.dataset_mixture):
            check_source(str(part["path"]), f"dataset_mixture[{i}]")
        return
    if not recipe.dataset_name:
        raise ConfigError(
            "no data: set `dataset_name` (a hub name, a local .jsonl/.json/.parquet/.csv file or folder, or "
            f"builtin:NAME with NAME in {sorted(BUILTIN)}) or `dataset_mixture`."
        )
    check_source(recipe.dataset_name, "dataset_name")
    path = _local_path(recipe.dataset_name)
    if path is not None and os.path.isfile(path) and recipe.dataset_test_split:
        raise ConfigError(
            f"`dataset_test_split: {recipe.dataset_test_split}` but {recipe.dataset_name!r} is a single file, which "
            "holds only a train split; use `eval_split_size` to hold out part of it."
        )


def load_source(source: str, split: str = "train", name: str | None = None, data_files=None, columns=None):
    """One split of one source as a `datasets.Dataset`."""
    import datasets

    check_source(source, "data")
    try:
        if source.startswith("builtin:") and source.split(":", 1)[1] in tasks.GENERATORS:
            if split not in ("train", "test"):
                raise ConfigError(f"{source} has the splits ['test', 'train'], not {split!r}.")
            dataset = datasets.Dataset.from_list(tasks.GENERATORS[source.split(":", 1)[1]](split=split))
        elif source.startswith("builtin:"):
            files = BUILTIN[source.split(":", 1)[1]]
            if split not in files:
                raise ConfigError(f"{source} has the splits {sorted(files)}, not {split!r}.")
            dataset = datasets.load_dataset("json", data_files=str(ASSETS / files[split]), split="train")
        else:
            path = _local_path(source)
            if path is not None and os.path.isfile(path) and os.path.getsize(path) == 0:
                raise DataError(f"{source} is empty: no rows to train or evaluate on.")
            if path is not None and os.path.isfile(path):
                builder = FILE_BUILDERS[Path(path).suffix]
                dataset = datasets.load_dataset(builder, data_files=path, split="train")
            elif path is not None:
                dataset = datasets.load_dataset(path, name=name, data_files=data_files, split=split)
            else:
                dataset = datasets.load_dataset(source, name=name, data_files=data_files, split=split)
    except (FileNotFoundError, ValueError, ConnectionError, StopIteration) as error:
        if isinstance(error, (ConfigError, DataError)):
            raise
        raise DataError(f"could not load data set {source!r} (split {split!r}): {error}") from None
    if columns:
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise DataError(f"{source}: `columns` asks for {missing}, which it lacks; it has {dataset.column_names}.")
        dataset = dataset.select_columns(list(columns))
    return dataset


def load_eval_source(source: str):
    """A held-out set in SFT form: the `test` split where the source has one, else all of it."""
    try:
        dataset = load_source(source, "test")
    except (DataError, ConfigError):
        dataset = load_source(source, "train")
    return prepare(dataset, "sft", source)


# ---------------------------------------------------------------- formats


def detect_format(dataset, method: str, source: str = "data") -> str:
    """The name of the method's format that the dataset's columns match, or a DataError saying why not."""
    columns = set(dataset.column_names)
    for fmt, needed in FORMATS[method].items():
        if set(needed) <= columns:
            return fmt
    expected = " | ".join(" + ".join(cols) for cols in FORMATS[method].values())
    raise DataError(
        f"{source} has the columns {sorted(columns)}, but {method} expects one of: {expected}. "
        "Rename the columns, or pick the `columns` of a mixture entry."
    )


def _is_conversation(value, keys=("role", "content")) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and all(k in m for k in keys) for m in value)


def _check_rows(dataset, fmt: str, source: str, rows: int = 50) -> None:
    """Look at the first rows: each field must hold what the format promises."""
    for i, row in enumerate(dataset.select(range(min(rows, len(dataset))))):
        if fmt == "messages" and not _is_conversation(row["messages"]):
            raise DataError(f"{source} row {i}: `messages` must be a list of {{role, content}}; got {row['messages']!r:.200}")
        if fmt == "conversations" and not _is_conversation(row["conversations"], ("from", "value")):
            raise DataError(
                f"{source} row {i}: `conversations` must be a list of {{from, value}} (ShareGPT); "
                f"got {row['conversations']!r:.200}"
            )
        columns = {
            "prompt-completion": ("prompt", "completion"),
            "preference": ("prompt", "chosen", "rejected"),
            "implicit-prompt preference": ("chosen", "rejected"),
            "prompt-only": ("prompt",),
            "text": ("text",),
        }.get(fmt, ())
        for column in columns:
            value = row[column]
            if not (isinstance(value, str) and value.strip()) and not _is_conversation(value):
                raise DataError(
                    f"{source} row {i}: `{column}` must be non-empty text or a list of {{role, content}} messages; "
                    f"got {value!r:.200}"
                )


def _sharegpt_to_messages(example):
    return {"messages": [{"role": SHAREGPT_ROLES.get(m["from"], m["from"]), "content": m["value"]} for m in example["conversations"]]}


def _conversations_to_turns(batch):
    """One prompt/completion example per assistant turn: the prompt is the conversation before it."""
    out = {"prompt": [], "completion": []}
    for messages in batch["messages"]:
        for i, message in enumerate(messages):
            if message["role"] == "assistant" and i > 0:
                out["prompt"].append(messages[:i])
                out["completion"].append([message])
    return out


def to_sft(dataset, fmt: str, keep_conversations: bool = False):
    """SFT data in a form where trl masks the prompt: conversations become prompt/completion turns.

    Each assistant turn becomes one example whose prompt is everything before it, so the loss
    falls on every assistant answer once and on no prompt token, with any chat template. With
    `keep_conversations` (trl's `assistant_only_loss`), `messages` are kept whole instead.
    """
    if fmt == "conversations":
        dataset = dataset.map(_sharegpt_to_messages, remove_columns=dataset.column_names)
        fmt = "messages"
    if fmt == "messages" and not keep_conversations:
        rows = len(dataset)
        dataset = dataset.map(_conversations_to_turns, batched=True, remove_columns=dataset.column_names)
        if len(dataset) == 0:
            raise DataError(f"none of the {rows} conversations has an assistant turn after a prompt; nothing to learn.")
        fmt = "prompt-completion"
    keep = {"messages": ["messages"], "prompt-completion": ["prompt", "completion"], "text": None}[fmt]
    if keep is not None:
        dataset = dataset.select_columns(keep)
    return dataset


def to_dpo(dataset, fmt: str):
    """Preference pairs as trl takes them: prompt/chosen/rejected (or chosen/rejected, prompt implicit)."""
    return dataset.select_columns(list(FORMATS["dpo"][fmt]))


def to_grpo(dataset, fmt: str):
    """Prompts, with every other column kept: rewards receive them as keyword lists."""
    return dataset


def drop_long_prompts(dataset, tokenizer, max_prompt_length: int | None, source: str = "data"):
    """Remove prompts longer than `max_prompt_length` tokens (through the chat template), and say how many."""
    if max_prompt_length is None:
        return dataset

    def length(row):
        prompt = row["prompt"]
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        else:
            ids = tokenizer(prompt)["input_ids"]
        return {"prompt_tokens": len(ids)}

    measured = dataset.map(length)
    kept = measured.filter(lambda row: row["prompt_tokens"] <= max_prompt_length).remove_columns("prompt_tokens")
    dropped = len(dataset) - len(kept)
    if dropped:
        logger.warning("%s: dropped %d of %d prompts longer than %d tokens", source, dropped, len(dataset), max_prompt_length)
        print(f"{source}: dropped {dropped} of {len(dataset)} prompts longer than max_prompt_length={max_prompt_length} tokens")
    if len(kept) == 0:
        raise DataError(
            f"{source}: all {len(dataset)} prompts are longer than max_prompt_length={max_prompt_length} tokens; "
            "raise `max_prompt_length` or shorten the prompts."
        )
    return kept


PREPARE = {"sft": to_sft, "dpo": to_dpo, "grpo": to_grpo}


def prepare(dataset, method: str, source: str, **kwargs):
    """Check the format of one source and convert it to the method's training form."""
    if len(dataset) == 0:
        raise DataError(f"{source} is empty.")
    fmt = detect_format(dataset, method, source)
    _check_rows(dataset, fmt, source)
    return PREPARE[method](dataset, fmt, **kwargs)


# ---------------------------------------------------------------- a run's data


def _is_conversational(dataset) -> bool:
    row = dataset[0]
    return any(_is_conversation(row[c]) for c in ("prompt", "messages", "chosen") if c in row)


def _plain_to_conversational(example):
    """Plain prompt/completion (or preference) text as one user turn and one assistant turn."""
    out = {"prompt": [{"role": "user", "content": example["prompt"]}]}
    for column in ("completion", "chosen", "rejected"):
        if column in example:
            out[column] = [{"role": "assistant", "content": example[column]}]
    return out


def _align_formats(parts: list) -> list:
    """In a mixture of chat and plain prompt data, give the plain parts the chat form too."""
    if any(_is_conversational(p) for p in parts) and not all(_is_conversational(p) for p in parts):
        aligned = []
        for part in parts:
            if not _is_conversational(part) and "prompt" in part.column_names:
                logger.warning("mixture: plain prompt data becomes user/assistant turns to match the chat data")
                part = part.map(_plain_to_conversational)
            aligned.append(part)
        return aligned
    return parts


def _take(dataset, weight: float, seed: int):
    """`weight` times the rows of `dataset`: a seeded sample below 1, repeats above 1."""
    import datasets

    whole, fraction = int(weight), weight - int(weight)
    parts = [dataset] * whole
    rows = round(fraction * len(dataset))
    if rows:
        parts.append(dataset.shuffle(seed=seed).select(range(rows)))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def load_for(method: str, recipe, seed: int = 42, **prepare_kwargs):
    """The (train, eval) data of a run; eval is None unless a test split or `eval_split_size` is set.

    Under several processes the main process loads and converts first, writing the datasets cache;
    the others wait, then read the cache instead of doing the work again.
    """
    from accelerate import PartialState

    with PartialState().main_process_first():
        return _load_for(method, recipe, seed, **prepare_kwargs)


def _load_for(method: str, recipe, seed: int = 42, **prepare_kwargs):
    import datasets

    eval_dataset = None
    if recipe.dataset_mixture:
        parts = []
        for i, part in enumerate(recipe.dataset_mixture):
            source = f"dataset_mixture[{i}] ({part['path']})"
            loaded = load_source(
                str(part["path"]), part.get("split", "train"), part.get("name"), part.get("data_files"), part.get("columns")
            )
            parts.append(_take(prepare(loaded, method, source, **prepare_kwargs), float(part.get("weight", 1.0)), seed))
        parts = _align_formats(parts)
        shapes = {i: sorted(p.column_names) for i, p in enumerate(parts)}
        if len({tuple(c) for c in shapes.values()}) > 1:
            raise DataError(f"the mixture's data sets do not share one format after conversion (columns: {shapes}).")
        try:
            train = datasets.concatenate_datasets(parts).shuffle(seed=seed)
        except ValueError as error:
            raise DataError(f"the mixture's data sets do not share one format after conversion: {error}") from None
    else:
        source = recipe.dataset_name
        train = prepare(
            load_source(source, recipe.dataset_train_split, recipe.dataset_config), method, source, **prepare_kwargs
        )
        if recipe.dataset_test_split:
            eval_dataset = prepare(
                load_source(source, recipe.dataset_test_split, recipe.dataset_config),
                method,
                f"{source} [{recipe.dataset_test_split}]",
                **prepare_kwargs,
            )
    if recipe.max_train_samples is not None:
        train = train.select(range(min(recipe.max_train_samples, len(train))))
    if recipe.eval_split_size:
        split = train.train_test_split(test_size=recipe.eval_split_size, seed=seed)
        train, eval_dataset = split["train"], split["test"]
    if len(train) == 0:
        raise DataError("no training rows are left after mixing, filtering and splitting.")
    return train, eval_dataset
