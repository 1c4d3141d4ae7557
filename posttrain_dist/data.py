"""Load and mix data sets, check every row, and put them in the form trl trains on.

Sources: a hub name, a local file (.json, .jsonl, .parquet, .csv) or folder, or a data set shipped
with posttrain-dist (`builtin:NAME`, see `BUILTIN`). A weighted mixture lists several sources.
`dataset_columns` (or a mixture entry's `columns` mapping) renames columns first; then the layout is
recognised, every row is checked and converted (`formats.LAYOUTS`). All of it happens before any
model loads, and each mistake is one line that names the file, the row (the line of a JSONL file)
and what to change.
"""

from __future__ import annotations

import logging

from . import formats
from .errors import ConfigError, DataError, warn
from .sources import is_single_file, load_source, row_name

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- one source, checked and converted


def rename_columns(dataset, mapping: dict | None, source: str, what: str = "dataset_columns"):
    """Apply a `{source_column: target}` renaming; a missing or clashing column is named."""
    if not mapping:
        return dataset
    missing = [c for c in mapping if c not in dataset.column_names]
    if missing:
        raise DataError(f"`{what}` renames {missing}, which {source} lacks; it has {dataset.column_names}.")
    clash = [t for s, t in mapping.items() if t in dataset.column_names and t not in mapping]
    if clash:
        raise DataError(f"`{what}` would replace {source}'s own {clash} column(s); rename or drop those first.")
    return dataset.rename_columns({str(k): str(v) for k, v in mapping.items()})


def check_rows(dataset, layout: formats.Layout, source: str, path: str | None = None) -> None:
    """Every row holds what its layout promises (a batched pass); the first bad row is named, with the count."""

    def problems(batch, indices):
        out = {"row": [], "problem": []}
        for index, values in zip(indices, zip(*batch.values())):
            problem = layout.check(dict(zip(batch.keys(), values)))
            if problem:
                out["row"].append(index)
                out["problem"].append(problem)
        return out

    found = dataset.map(problems, batched=True, with_indices=True, remove_columns=dataset.column_names,
                        keep_in_memory=True, load_from_cache_file=False, desc=f"Checking {source}")
    if len(found):
        first = found[0]
        more = f" ({len(found)} of {len(dataset)} rows have problems)" if len(found) > 1 else ""
        raise DataError(f"{source} {row_name(path or source, first['row'])}: {first['problem']}{more}. Fix the data, or map "
                        f"the columns with `dataset_columns` if this is the wrong column ({layout.name} layout).")


def prepare(dataset, method: str, source: str, keep_conversations: bool = False, columns=None,
            columns_key: str = "dataset_columns", path: str | None = None):
    """Rename, recognise the layout, check every row and convert one source to the method's form.

    `source` names it in messages; `path` is the file it came from, if any (JSONL rows are named by line)."""
    if columns is not None and not isinstance(columns, dict):  # a mixture entry's list: keep only these
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise DataError(f"{source}: `columns` asks for {missing}, which it lacks; it has {dataset.column_names}.")
        dataset = dataset.select_columns(list(columns))
    else:
        dataset = rename_columns(dataset, columns, source, columns_key)
    if len(dataset) == 0:
        raise DataError(f"{source} is empty.")
    layout = formats.detect(dataset.column_names, method, source, columns_key)
    check_rows(dataset, layout, source, path)
    if keep_conversations and layout.name in ("messages", "sharegpt"):  # trl's assistant_only_loss: whole chats
        convert = (lambda b: {"messages": b["messages"]}) if layout.name == "messages" else \
            (lambda b: {"messages": formats._sharegpt(b["conversations"])})
    else:
        convert = layout.convert
    rows = len(dataset)
    keep = [] if method == "grpo" else dataset.column_names
    converted = dataset.map(convert, batched=True, remove_columns=keep, desc=f"Converting {source} ({layout.name})")
    if len(converted) == 0:
        raise DataError(f"{source}: none of the {rows} conversations has an assistant turn after a prompt; "
                        "nothing to learn.")
    if method == "dpo":
        converted = drop_identical_pairs(converted, source)
    return converted


def drop_identical_pairs(dataset, source: str):
    """Pairs whose chosen equals rejected teach nothing: counted and dropped, and all of them refused."""
    kept = dataset.filter(lambda b: [c != r for c, r in zip(b["chosen"], b["rejected"])], batched=True)
    dropped = len(dataset) - len(kept)
    if len(kept) == 0:
        raise DataError(f"all {len(dataset)} pairs of {source} have chosen == rejected: DPO has nothing to prefer.")
    if dropped:
        warn(f"{source}: dropped {dropped} of {len(dataset)} pairs whose chosen answer equals the rejected one.")
    return kept


def load_eval_source(source: str):
    """A held-out set in SFT form: the `test` split where the source has one, else all of it."""
    try:
        dataset = load_source(source, "test")
    except (DataError, ConfigError):
        dataset = load_source(source, "train")
    return prepare(dataset, "sft", source)


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
        print(f"{source}: dropped {dropped} of {len(dataset)} prompts longer than max_prompt_length={max_prompt_length} tokens")
    if len(kept) == 0:
        raise DataError(
            f"{source}: all {len(dataset)} prompts are longer than max_prompt_length={max_prompt_length} tokens; "
            "raise `max_prompt_length` or shorten the prompts."
        )
    return kept


# ---------------------------------------------------------------- a run's data


def _take(dataset, weight: float, seed: int):
    """`weight` times the rows of `dataset`: a seeded sample below 1, repeats above 1."""
    import datasets

    whole, fraction = int(weight), weight - int(weight)
    parts = [dataset] * whole
    rows = round(fraction * len(dataset))
    if rows:
        parts.append(dataset.shuffle(seed=seed).select(range(rows)))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def load_for(method: str, recipe, seed: int = 42, keep_conversations: bool = False):
    """The (train, eval) data of a run; eval is None unless a test split or `eval_split_size` is set.

    Under several processes the main process loads and converts first, writing the datasets cache;
    the others wait, then read the cache instead of doing the work again.
    """
    from .environment import distributed_state

    with distributed_state().main_process_first():
        return _load_for(method, recipe, seed, keep_conversations)


def _load_for(method: str, recipe, seed: int, keep_conversations: bool):
    import datasets

    eval_dataset = None
    if recipe.dataset_mixture:
        parts = []
        for i, part in enumerate(recipe.dataset_mixture):
            source = f"dataset_mixture[{i}] ({part['path']})"
            loaded = load_source(str(part["path"]), part.get("split", "train"), part.get("name"), part.get("data_files"),
                                 split_option=f"dataset_mixture[{i}].split")
            prepared = prepare(loaded, method, source, keep_conversations, part.get("columns"),
                               f"dataset_mixture[{i}].columns", str(part["path"]))
            parts.append(_take(prepared, float(part.get("weight", 1.0)), seed))
        shapes = {i: sorted(p.column_names) for i, p in enumerate(parts)}
        if len({tuple(c) for c in shapes.values()}) > 1:
            raise DataError(f"the mixture's data sets do not share one form after conversion (columns: {shapes}); "
                            "`text` data cannot be mixed with prompt/answer data.")
        try:
            train = datasets.concatenate_datasets(parts).shuffle(seed=seed)
        except ValueError as error:
            raise DataError(f"the mixture's data sets do not share one form after conversion: {error}") from None
    else:
        source = recipe.dataset_name
        train = prepare(load_source(source, recipe.dataset_train_split, recipe.dataset_config), method,
                        _labelled(source, recipe.dataset_train_split), keep_conversations, recipe.dataset_columns,
                        path=source)
        if recipe.dataset_test_split:
            loaded = load_source(source, recipe.dataset_test_split, recipe.dataset_config,
                                 split_option="dataset_test_split")
            eval_dataset = prepare(loaded, method, _labelled(source, recipe.dataset_test_split), keep_conversations,
                                   recipe.dataset_columns)
    if recipe.max_train_samples is not None:
        train = train.select(range(min(recipe.max_train_samples, len(train))))
    if recipe.eval_split_size:
        split = train.train_test_split(test_size=recipe.eval_split_size, seed=seed)
        train, eval_dataset = split["train"], split["test"]
    if len(train) == 0:
        raise DataError("no training rows are left after mixing, filtering and splitting.")
    return train, eval_dataset


def _labelled(source: str, split: str) -> str:
    return source if split == "train" or is_single_file(source) else f"{source} [{split}]"
