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
from typing import Callable, NamedTuple

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


# Columns that trl's trainers read per row (the chat template's arguments, the tools a conversation may call): kept
# through conversion, so that the template renders each row as its data set says (smoltalk2's `enable_thinking`).
CARRIED = ("chat_template_kwargs", "tools")


class Reads(NamedTuple):
    """What a reader of data takes: its name (in messages), the layouts it reads, what it does after converting.
    A method's record (`methods.Method`) has these; `CONVERSATIONS` is SFT's form for the shared evaluations."""

    name: str
    layouts: list
    after_convert: Callable | None = None


CONVERSATIONS = Reads("conversations", formats.CONVERSATION)


def prepare(dataset, reads, source: str, columns=None, columns_key: str = "dataset_columns",
            path: str | None = None, prompt_column: str = "prompt", system_prompt: str | None = None):
    """Rename, recognise the layout, check every row and convert one source to the form `reads` (a method) takes.

    `source` names it in messages; `path` is the file it came from, if any (JSONL rows are named by line).
    `prompt_column` (open-r1's `dataset_prompt_column`) is read as `prompt`; `system_prompt` opens every prompt
    that has no system message of its own."""
    if columns is not None and not isinstance(columns, dict):  # a mixture entry's list: keep only these
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise DataError(f"{source}: `columns` asks for {missing}, which it lacks; it has {dataset.column_names}.")
        dataset = dataset.select_columns(list(columns))
    else:
        dataset = rename_columns(dataset, columns, source, columns_key)
    if prompt_column != "prompt" and prompt_column in dataset.column_names:
        dataset = rename_columns(dataset, {prompt_column: "prompt"}, source, "dataset_prompt_column")
    if len(dataset) == 0:
        raise DataError(f"{source} is empty.")
    layout = formats.detect(dataset.column_names, reads.layouts, source, reads.name, columns_key)
    check_rows(dataset, layout, source, path)
    rows = len(dataset)
    keep = [] if layout.keeps_columns else [c for c in dataset.column_names if c not in CARRIED]
    converted = dataset.map(layout.convert, batched=True, remove_columns=keep, desc=f"Converting {source} ({layout.name})")
    if system_prompt:
        column = "messages" if "messages" in converted.column_names else "prompt"
        if column in converted.column_names:
            converted = converted.map(lambda b: {column: [formats.with_system(m, system_prompt) for m in b[column]]},
                                      batched=True, desc=f"Adding the system prompt to {source}")
    if "messages" in converted.column_names:  # conversations: those with no answer to learn are counted and dropped
        kept = converted.filter(lambda b: [bool(formats.trained_turns(m)) for m in b["messages"]], batched=True)
        if len(kept) == 0:
            raise DataError(f"{source}: none of the {rows} conversations has an assistant turn after a prompt; "
                            "nothing to learn.")
        if len(kept) < len(converted):
            warn(f"{source}: dropped {len(converted) - len(kept)} of {len(converted)} conversations with no assistant "
                 "turn after a prompt (nothing to learn).")
        converted = kept
    return reads.after_convert(converted, source) if reads.after_convert else converted


def load_eval_source(source: str):
    """A held-out set in SFT form, one example per answer (prompt/completion, or text): the `test` split where the
    source has one, else all of it."""
    try:
        dataset = load_source(source, "test")
    except (DataError, ConfigError):
        dataset = load_source(source, "train")
    prepared = prepare(dataset, CONVERSATIONS, source)
    if "messages" not in prepared.column_names:
        return prepared
    return prepared.map(lambda b: formats.per_turn(b["messages"]), batched=True, remove_columns=prepared.column_names)


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


def _take(dataset, weight: float, seed: int, source: str):
    """`weight` times the rows of `dataset`: whole repeats above 1, then a seeded sample of the fraction (rounded
    down, as alignment-handbook and open-r1 take it: a share that rounds to no row contributes none, with a note)."""
    import datasets

    whole, fraction = int(weight), weight - int(weight)
    parts = [dataset] * whole
    rows = int(fraction * len(dataset))
    if rows:
        parts.append(dataset.shuffle(seed=seed).select(range(rows)))
    if not parts:
        warn(f"{source}: weight {weight:g} of {len(dataset)} rows rounds to no row; it contributes none.")
        return None
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def load_for(method, recipe, seed: int = 42):
    """The (train, eval) data of a run of `method` (its record: the layouts it reads); eval is None unless a test
    split, an evaluation entry of the mixture or `eval_split_size` is set.

    Under several processes the main process loads and converts first, writing the datasets cache;
    the others wait, then read the cache instead of doing the work again.
    """
    from .environment import distributed_state

    with distributed_state().main_process_first():
        return _load_for(method, recipe, seed)


def _load_for(method: str, recipe, seed: int):
    import datasets

    seed = recipe.dataset_mixture_seed if recipe.dataset_mixture_seed is not None else seed
    options = dict(prompt_column=recipe.dataset_prompt_column, system_prompt=recipe.system_prompt)
    eval_dataset = None
    if recipe.dataset_mixture:
        parts, evals = [], []
        for i, part in enumerate(recipe.dataset_mixture):
            source = f"dataset_mixture[{i}] ({part['path']}" + (f" [{part['split']}]" if part.get("split") else "") + ")"
            loaded = load_source(str(part["path"]), part.get("split", "train"), part.get("name"), part.get("data_files"),
                                 split_option=f"dataset_mixture[{i}].split", data_dir=part.get("data_dir"))
            prepared = prepare(loaded, method, source, part.get("columns"), f"dataset_mixture[{i}].columns",
                               str(part["path"]), **options)
            if part.get("eval"):
                evals.append(prepared)
                continue
            taken = _take(prepared, float(part.get("weight", 1.0)), seed, source)
            if taken is not None:
                parts.append(taken)
        if not parts:
            raise DataError("the mixture's weights leave no training row (each rounds to none).")
        train = _concatenate(parts).shuffle(seed=seed)
        eval_dataset = _concatenate(evals).shuffle(seed=seed) if evals else None
    else:
        source = recipe.dataset_name
        train = prepare(load_source(source, recipe.dataset_train_split, recipe.dataset_config), method,
                        _labelled(source, recipe.dataset_train_split), columns=recipe.dataset_columns, path=source,
                        **options)
        if recipe.dataset_test_split:
            loaded = load_source(source, recipe.dataset_test_split, recipe.dataset_config,
                                 split_option="dataset_test_split")
            eval_dataset = prepare(loaded, method, _labelled(source, recipe.dataset_test_split),
                                   columns=recipe.dataset_columns, **options)
    if recipe.max_train_samples is not None:
        train = train.select(range(min(recipe.max_train_samples, len(train))))
    if recipe.eval_split_size:
        size = recipe.eval_split_size if recipe.eval_split_size < 1 else int(recipe.eval_split_size)
        if size >= 1 and size >= len(train):
            raise DataError(f"`eval_split_size: {size}` holds out {size} rows, and the training data has {len(train)}: "
                            "hold out fewer (or a fraction, e.g. 0.1).")
        split = train.train_test_split(test_size=size, seed=seed)
        train = split["train"]
        eval_dataset = split["test"] if eval_dataset is None else _concatenate([eval_dataset, split["test"]])
    if len(train) == 0:
        raise DataError("no training rows are left after mixing, filtering and splitting.")
    return train, eval_dataset


def _concatenate(parts):
    import datasets

    shapes = {i: sorted(p.column_names) for i, p in enumerate(parts)}
    if len({tuple(c) for c in shapes.values()}) > 1:
        raise DataError(f"the mixture's data sets do not share one form after conversion (columns: {shapes}); "
                        "`text` data cannot be mixed with prompt/answer data.")
    try:
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    except ValueError as error:
        raise DataError(f"the mixture's data sets do not share one form after conversion: {error}") from None


def hub_sources(recipe) -> list[str]:
    """The data sets of a config that are on the hub (not local files or built-in): `plan` does not read those."""
    from .sources import local_path

    named = [str(part["path"]) for part in recipe.dataset_mixture or []] + [recipe.dataset_name or ""]
    return [s for s in named if s and not s.startswith("builtin:") and local_path(s) is None]


def _labelled(source: str, split: str) -> str:
    return source if split == "train" or is_single_file(source) else f"{source} [{split}]"
