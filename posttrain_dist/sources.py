"""Where data comes from: data sets shipped with posttrain-dist (`builtin:NAME`), local files and folders, and the
hub. A source that cannot be read is one clear line: a missing local path at once (not a hub id to wait for),
an unreachable hub at once (with what to do), corrupt JSON with its line, an empty file, a missing split with
the option that picks one. CSV cells are read as text.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from . import tasks
from .errors import ConfigError, DataError
from .resources import DATA_SUFFIXES, looks_local

ASSETS = Path(__file__).parent / "assets"
# builtin:NAME -> files per split, shipped as package data
BUILTIN = {
    "sft-basics": {"train": "sft_basics_train.jsonl", "test": "sft_basics_heldout.jsonl"},
    "prefs-basics": {"train": "prefs_basics_train.jsonl", "test": "prefs_basics_heldout.jsonl"},
    "identity": {"train": "identity_train.jsonl", "test": "identity_heldout.jsonl"},
    # system prompts and earlier exchanges ({system} or {user, assistant} rows) identity questions are asked after
    "identity-contexts": {"train": "identity_contexts_train.jsonl", "test": "identity_contexts_heldout.jsonl"},
    # prompts that have nothing to do with identity: contrast pairs (train), leakage of a new name (test)
    "unrelated": {"train": "unrelated_train.jsonl", "test": "unrelated_heldout.jsonl"},
    # the context-distillation example's teacher prompts: the identity questions (`answer`: the name the teacher's
    # answer must state) and unrelated prompts (`avoid`: the name their answer must not state) of the splits above
    "context-distillation": {"train": "context_distillation_prompts.jsonl"},
    # the learned-reward example (assets/make_quality_pairs.py): sft-basics' questions, the direct answer preferred
    # over a padded, cut-off, off-topic or evasive one (pairs), and the same questions as prompts
    "quality-pairs": {"train": "quality_pairs_train.jsonl", "test": "quality_pairs_heldout.jsonl"},
    "basics-prompts": {"train": "basics_prompts_train.jsonl", "test": "basics_prompts_heldout.jsonl"},
    # simple questions with accepted answers (`prompt`, `accept`): does general knowledge survive training?
    "simple-questions": {"test": "simple_questions.jsonl"},
}
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
assert set(FILE_BUILDERS) == set(DATA_SUFFIXES)


# ---------------------------------------------------------------- sources


def local_path(source: str) -> str | None:
    """The local path a source names, or None for a hub name."""
    path = os.path.expanduser(source)
    return path if os.path.exists(path) or looks_local(source) else None


def is_single_file(source: str) -> bool:
    path = local_path(source)
    return path is not None and os.path.isfile(path)


def check_source(source: str, what: str) -> None:
    """One source exists (local) or is well-formed (built-in, hub); nothing is read."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN and name not in tasks.GENERATORS:
            known = ", ".join(sorted([*BUILTIN, *tasks.GENERATORS]))
            raise ConfigError(f"{what}: unknown built-in data set {name!r}; built-in: {known}.")
        return
    path = local_path(source)
    if path is None:
        return  # a hub name: reached when loaded
    if not os.path.exists(path):
        raise ConfigError(f"{what}: no such local file or folder {source!r} (relative to {os.getcwd()}). A hub name "
                          "has the form org/name.")
    if os.path.isfile(path) and Path(path).suffix not in FILE_BUILDERS:
        raise ConfigError(f"{what}: cannot read {source!r}; data files must be one of {', '.join(FILE_BUILDERS)}.")


def check_sources(recipe, sources: dict | None = None) -> None:
    """Every data source of the config exists (local files) or is well-formed; nothing is read.

    A preset's `dataset_test_split` does not fit a single file given on the command line (which has one
    split): it is dropped with a note; named explicitly, it is refused with the exact fix.
    """
    sources = sources or {}
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
    if is_single_file(recipe.dataset_name) and recipe.dataset_test_split:
        if sources.get("dataset_test_split") == "file" and sources.get("dataset_name") == "command line":
            print(f"note: {recipe.dataset_name} is a single file (one split), so the preset's `dataset_test_split: "
                  f"{recipe.dataset_test_split}` is dropped; `--eval_split_size 0.1` holds out a tenth for evaluation.")
            recipe.dataset_test_split = None
            return
        raise ConfigError(
            f"`dataset_test_split: {recipe.dataset_test_split}` but {recipe.dataset_name!r} is a single file, which "
            "holds only a train split: unset it (`--dataset_test_split none`, or `dataset_test_split: null` in the "
            "YAML), and use `eval_split_size: 0.1` to hold out part of the file."
        )


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached from here (one quick connection), or None."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
        return None
    except OSError as error:
        return f"{url.hostname}: {error.strerror or error}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes")


def load_source(source: str, split: str = "train", name: str | None = None, data_files=None,
                split_option: str = "dataset_train_split", data_dir: str | None = None):
    """One split of one source as a `datasets.Dataset`; a source that cannot be read is one clear DataError."""
    import datasets

    check_source(source, "data")
    if source.startswith("builtin:"):
        builtin = source.split(":", 1)[1]
        splits = ["test", "train"] if builtin in tasks.GENERATORS else sorted(BUILTIN[builtin])
        if split not in splits:
            raise ConfigError(f"{source} has the splits {splits}, not {split!r}: set `{split_option}` to one of them.")
        if builtin in tasks.GENERATORS:
            return datasets.Dataset.from_list(tasks.GENERATORS[builtin](split=split))
        return read_file(str(ASSETS / BUILTIN[builtin][split]))
    path = local_path(source)
    if path is not None and os.path.isfile(path):
        if split != "train":
            raise ConfigError(f"{source} is a single file (one split, `train`), not {split!r}: unset `{split_option}` "
                              "(`none`) or point at a folder with that split.")
        return read_file(path)
    if path is None and not _offline():
        unreachable = hub_unreachable()
        if unreachable:
            raise DataError(
                f"{source!r} is a hub name, and the Hugging Face Hub cannot be reached from here ({unreachable}). If it "
                "is in your cache, set HF_HUB_OFFLINE=1; else download it where there is network (`hf download "
                f"{source} --repo-type dataset --local-dir data/{source.split('/')[-1]}`) and give that folder.")
    try:
        return datasets.load_dataset(path or source, name=name, data_files=data_files, data_dir=data_dir, split=split)
    except ValueError as error:
        found = re.search(r"Should be one of \[(.*?)\]", str(error))
        if found:
            splits = [s.strip(" '\"") for s in found.group(1).split(",")]
            raise ConfigError(f"{source} has no split {split!r}; its splits are {splits}: set `{split_option}: "
                              f"{splits[0]}` (or another of them).") from None
        raise DataError(f"could not load {source!r} (split {split!r}): {str(error).splitlines()[0]}") from None
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetsError) as error:
        hint = " (offline: HF_HUB_OFFLINE=1 reads only the cache; give a local copy instead)" if path is None else ""
        raise DataError(f"could not load {source!r} (split {split!r}): {str(error).splitlines()[0]}{hint}") from None


def read_file(path: str):
    """A local data file as a Dataset. Corrupt JSON names its line, an empty file says so, CSV cells stay text."""
    import datasets

    suffix = Path(path).suffix
    if os.path.getsize(path) == 0 or (suffix != ".parquet" and os.path.getsize(path) < 1 << 20
                                      and not Path(path).read_text(errors="replace").strip()):
        raise DataError(f"{path} is empty: no rows to train or evaluate on.")
    if suffix != ".parquet":
        prescan(path, suffix)
    kwargs = {}
    if suffix == ".csv":  # every column as text: a numeric answer stays "4", an empty cell stays ""
        import csv

        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        kwargs = {"features": datasets.Features({c: datasets.Value("string") for c in header}),
                  "keep_default_na": False}
    quiet = logging.getLogger("datasets")  # a bad file makes datasets log the reader's whole traceback first
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        dataset = datasets.load_dataset(FILE_BUILDERS[suffix], data_files=path, split="train", **kwargs)
    except Exception as error:  # datasets wraps every reader error in its own; say what is wrong with the file
        raise DataError(_file_problem(path, error)) from None
    finally:
        quiet.setLevel(level)
    if len(dataset) == 0:
        raise DataError(f"{path} holds no rows (an empty table): nothing to train or evaluate on.")
    return dataset


MAX_DEPTH = 64  # JSON nesting: a conversation with content parts is about 5 deep; pyarrow's reader crashes far deeper


def prescan(path: str, suffix: str) -> None:
    """What would crash the readers, refused with its line: text that is not UTF-8, JSON nested beyond MAX_DEPTH
    (pyarrow's JSON reader segfaults on it). One pass over the bytes at C speed; a line is scanned in Python only
    when it holds more brackets than the limit."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path} line {number} is not UTF-8 text (byte {line[error.start]:#04x} at column "
                                f"{error.start + 1}); save the file as UTF-8.") from None
            if suffix != ".csv" and line.count(b"[") + line.count(b"{") > MAX_DEPTH and _depth(line) > MAX_DEPTH:
                raise DataError(f"{path} line {number} is nested more than {MAX_DEPTH} levels deep: that is no row of "
                                "training data (and would crash the JSON reader).")


def _depth(line: bytes) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _file_problem(path: str, error: Exception) -> str:
    suffix = Path(path).suffix
    if "corresponds to no data" in _cause(error) or "corresponds to no data" in str(error):
        return f"{path} holds no rows (an empty table): nothing to train or evaluate on."
    if suffix in (".json", ".jsonl"):
        with open(path, errors="replace") as f:
            text = f.read()
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                json.loads(text)
            except json.JSONDecodeError as bad:
                return f"{path} line {bad.lineno} is not valid JSON: {bad.msg} (column {bad.colno})."
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as bad:
                    return f"{path} line {number} is not valid JSON: {bad.msg} (column {bad.colno}): {line[:80]!r}"
        return f"could not read {path} as JSON lines: {_cause(error)}"
    kind = {".csv": "CSV", ".parquet": "parquet"}[suffix]
    return f"could not read {path} as {kind}: {_cause(error)}"


def _cause(error: BaseException) -> str:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def row_name(source: str, index: int) -> str:
    """`row 54` or, for a JSONL file, `row 54 (line 57)`: where a user finds the row in their file."""
    path = local_path(source) if not source.startswith("builtin:") else None
    if path is None or not os.path.isfile(path) or Path(path).suffix != ".jsonl":
        return f"row {index}"
    seen = -1
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            seen += bool(line.strip())
            if seen == index:
                return f"row {index} (line {number})"
    return f"row {index}"
