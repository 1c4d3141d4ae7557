"""Configs written for alignment-handbook, open-r1 and TRL's CLI, read as they are published.

Those projects' configs use names that transformers 5 and trl 1.x renamed or dropped, and their own
shapes for data mixtures. Before a config is parsed, `migrate(values)` rewrites it into today's names:

- `RENAMED`: a key read under its current name, with a one-line note (`torch_dtype: read as dtype, its
  name since transformers 5`); config.yaml then records the current name.
- `CONVERTED`: keys whose value changes shape on the way (`use_flash_attention_2: true` becomes
  `attn_implementation: flash_attention_2`, the handbook's `truncation_side: left` trl's
  `truncation_mode: keep_end`, a list of `dataset_configs` its first entry).
- `GONE`: keys whose meaning no longer exists (a vLLM device trl now places itself): dropped with a note
  saying why, where keeping them could not change what trains; `REFUSED` ones could, and are refused
  with what to use instead.
- `VALUES`: values trl no longer knows, refused before loading with the value that replaced them.
- Data mixtures: the handbook's `dataset_mixture: {datasets: [{id, config, split, columns, weight}],
  seed, test_split_size}`, its older `dataset_mixer: {name: weight}` with `dataset_splits` (and
  `dataset_configs`), and TRL's `datasets: [{path, name, split, columns, fraction}]` with
  `test_split_size`, all become our `dataset_mixture` list (`eval: true` marks the handbook's test
  splits), `dataset_mixture_seed` and `eval_split_size` (a row count or a fraction).

`posttrain-dist migrate CONFIG [--out NEW]` writes a config in today's names; `plan` lists each change.
Configuration only: nothing here reads data or loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

RENAMED = {
    "torch_dtype": ("dtype", "its name since transformers 5"),
    "max_seq_length": ("max_length", "its name in trl since 0.20"),
    "evaluation_strategy": ("eval_strategy", "its name since transformers 4.46"),
    "warmup_ratio": ("warmup_steps", "transformers 5 takes the fraction there: a value below 1 is a share of the steps"),
    "use_liger": ("use_liger_kernel", "its name since transformers 4.46"),
    "preprocessing_num_workers": ("dataset_num_proc", "trl's name for the data preparation processes"),
    "per_gpu_train_batch_size": ("per_device_train_batch_size", "its name since transformers 4"),
    "per_gpu_eval_batch_size": ("per_device_eval_batch_size", "its name since transformers 4"),
    "no_cuda": ("use_cpu", "its name since transformers 4.38"),
    "hub_model_revision": ("hub_revision", "the training arguments' own name for it"),
    "text_column": ("dataset_text_field", "trl's name for it"),
    "dataset_config_name": ("dataset_config", "trl's name for it"),
}


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def _attention(value):
    return "flash_attention_2" if value else None


def _truncation(value):
    modes = {"left": "keep_end", "right": "keep_start"}
    if value not in modes and value is not None:
        raise ConfigError(f"`truncation_side: {value}`: it is `left` or `right` (read as trl's `truncation_mode`).")
    return modes.get(value)


# old key: (new key, function of the old value -> new value (None: leave unset), note)
CONVERTED = {
    "use_flash_attention_2": ("attn_implementation", _attention, "attention is chosen by name since transformers 4.36"),
    "truncation_side": ("truncation_mode", _truncation, "trl keeps the start or the end (left -> keep_end)"),
    "dataset_configs": ("dataset_config", _first, "one configuration per data set (its first entry is used)"),
}

GONE = {
    "vllm_device": "trl places vLLM itself since 0.16 (`vllm_mode: colocate` or `server`)",
    "auto_insert_empty_system_msg": "the chat template decides about system messages",
    "overwrite_hub_revision": "open-r1 pushes revisions itself; here `hub_revision` names the branch",
    "push_to_hub_revision": "open-r1 pushes revisions itself; here `hub_revision` names the branch",
    "ignore_bias_buffers": "a DDP detail of TRL's scripts that trl's trainers handle",
    "model_code_revision": "only `model_revision` is read",
    "code_eval_test_batch_size": "a setting of open-r1's code-execution rewards, which do not run here",
    "parallel_code_exec_per_proc": "a setting of open-r1's code-execution rewards, which do not run here",
    "e2b_router_url": "a setting of open-r1's code-execution rewards, which do not run here",
    "morph_router_url": "a setting of open-r1's code-execution rewards, which do not run here",
    "code_provider": "a setting of open-r1's code-execution rewards, which do not run here",
    "ioi_provider": "a setting of open-r1's code-execution rewards, which do not run here",
    "num_processes": "an accelerate setting: give it to `accelerate launch` or `posttrain-dist plan --gpus-per-node`",
}

REFUSED = {
    "tokenizer_name_or_path": "the tokenizer is the model's own here; save the tokenizer you want with the model",
    "dataset_streaming": "data is read whole here (for the checks before loading): drop it, or `max_train_samples`",
    "streaming": "data is read whole here (for the checks before loading): drop it, or `max_train_samples`",
    "benchmarks": "open-r1 runs lighteval benchmarks after training; `eval_prompts` and `perplexity_dataset` measure "
                  "before and after here",
}

# (key, old value): the value that replaced it
VALUES = {("packing_strategy", "ffd"): "bfd", ("packing_strategy", "fixed"): "wrapped"}

# open-r1's environment-style fields: the loggers read them from the environment
TO_ENVIRONMENT = {"wandb_entity": "WANDB_ENTITY", "wandb_project": "WANDB_PROJECT"}


@dataclass
class Change:
    old: str
    new: str | None  # None: dropped
    why: str

    def line(self) -> str:
        if self.new is None:
            return f"{self.old}: dropped ({self.why})"
        return f"{self.old}: read as {self.new}, {self.why}"


def migrate(values: dict, where: str) -> tuple[dict, list[Change], dict]:
    """(values in today's names, the changes made, environment variables to set) for one config's mapping."""
    out, changes, environment = {}, [], {}
    for key, value in values.items():
        if key in ("dataset_configs", "dataset_splits") and "dataset_mixer" in values:
            out[key] = value  # read with the mixer below
        elif key in RENAMED:
            new, why = RENAMED[key]
            _set(out, new, value, key, where)
            changes.append(Change(key, new, why))
        elif key in CONVERTED:
            new, convert, why = CONVERTED[key]
            converted = convert(value)
            if converted is not None:
                _set(out, new, converted, key, where)
            changes.append(Change(key, new if converted is not None else None, why))
        elif key in GONE:
            changes.append(Change(key, None, GONE[key]))
        elif key in REFUSED:
            if value in (None, False, [], ""):
                changes.append(Change(key, None, "unset"))
                continue
            raise ConfigError(f"`{key}` in {where} has no equivalent here: {REFUSED[key]}.")
        elif key in TO_ENVIRONMENT:
            if value is not None:
                environment[TO_ENVIRONMENT[key]] = str(value)
            changes.append(Change(key, f"${TO_ENVIRONMENT[key]}", "the logger reads it from the environment"))
        else:
            _set(out, key, value, key, where)
    for (key, old), new in VALUES.items():
        if out.get(key) == old:
            raise ConfigError(f"`{key}: {old}` in {where} is a value trl no longer knows; its replacement is "
                              f"`{key}: {new}`.")
    _mixtures(out, changes, where)
    return out, changes, environment


def _set(out: dict, key: str, value, old: str, where: str) -> None:
    if key in out and out[key] != value:
        raise ConfigError(f"{where} sets both `{old}` and `{key}` (its current name); keep `{key}`.")
    out[key] = value


def _mixtures(out: dict, changes: list[Change], where: str) -> None:
    mixture = out.get("dataset_mixture")
    if isinstance(mixture, dict):  # the handbook's (and open-r1's) shape
        unknown = sorted(set(mixture) - {"datasets", "seed", "test_split_size", "streaming"})
        if unknown or not isinstance(mixture.get("datasets"), list):
            raise ConfigError(f"`dataset_mixture` in {where} is a mapping, so it should be alignment-handbook's "
                              "{datasets: [{id, config, split, columns, weight}], seed, test_split_size}"
                              + (f"; it has {unknown}" if unknown else "; its `datasets` is not a list") + ".")
        entries = []
        for i, entry in enumerate(mixture["datasets"]):
            if not isinstance(entry, dict) or "id" not in entry:
                raise ConfigError(f"`dataset_mixture.datasets[{i}]` in {where} must be a mapping with an `id`.")
            extra = sorted(set(entry) - {"id", "config", "split", "columns", "weight", "data_files", "data_dir"})
            if extra:
                raise ConfigError(f"`dataset_mixture.datasets[{i}]` in {where} has unknown keys {extra}; allowed: id, "
                                  "config, split, columns, weight, data_files, data_dir.")
            entries.append(_entry(entry.get("id"), entry.get("config"), entry.get("split", "train"),
                                  entry.get("columns"), entry.get("weight"), entry.get("data_files"), entry.get("data_dir")))
        out["dataset_mixture"] = entries
        _mixture_extras(out, mixture, changes, "dataset_mixture")
        changes.append(Change("dataset_mixture", "dataset_mixture", f"alignment-handbook's shape: {len(entries)} entries "
                                                                    "(id -> path, config -> name)"))
    if "dataset_mixer" in out:  # the handbook's older shape
        mixer = out.pop("dataset_mixer")
        splits = out.pop("dataset_splits", ["train", "test"])
        configs = out.pop("dataset_configs", None) or [None] * len(mixer or {})
        if not isinstance(mixer, dict) or not isinstance(splits, list):
            raise ConfigError(f"`dataset_mixer` in {where} should map data set names to fractions, with "
                              "`dataset_splits` a list of split names.")
        entries = []
        for (name, fraction), config in zip(mixer.items(), configs):
            for split in splits:
                if "train" in split:
                    entries.append(_entry(name, config, split, None, fraction))
                elif "test" in split:
                    entries.append({**_entry(name, config, split, None, None), "eval": True})
                else:
                    raise ConfigError(f"`dataset_splits` in {where}: {split!r} holds neither 'train' nor 'test', so it "
                                      "is neither training nor evaluation data (the handbook's rule).")
        out["dataset_mixture"] = entries
        changes.append(Change("dataset_mixer", "dataset_mixture", "the handbook's older shape, with dataset_splits: "
                                                                 "'train' splits train, 'test' splits evaluate"))
    if "datasets" in out:  # TRL's CLI shape
        entries = []
        for i, entry in enumerate(out.pop("datasets") or []):
            if not isinstance(entry, dict) or "path" not in entry:
                raise ConfigError(f"`datasets[{i}]` in {where} must be a mapping with a `path` (TRL's DatasetConfig).")
            entries.append(_entry(entry["path"], entry.get("name"), entry.get("split", "train"), entry.get("columns"),
                                  entry.get("fraction"), entry.get("data_files"), entry.get("data_dir")))
        out["dataset_mixture"] = entries
        _mixture_extras(out, out, changes, "datasets", pop=True)
        changes.append(Change("datasets", "dataset_mixture", "TRL's DatasetMixtureConfig (fraction -> weight)"))


def _entry(path, name, split, columns, weight, data_files=None, data_dir=None) -> dict:
    entry = {"path": path, "split": split}
    for key, value in (("name", name), ("columns", columns), ("weight", weight), ("data_files", data_files),
                       ("data_dir", data_dir)):
        if value is not None:
            entry[key] = value
    return entry


def _mixture_extras(out: dict, source: dict, changes: list[Change], what: str, pop: bool = False) -> None:
    take = source.pop if pop else source.get
    if take("streaming", None):
        raise ConfigError(f"`{what}` asks for streaming: {REFUSED['streaming']}.")
    seed, test = take("seed", None) if what != "datasets" else None, take("test_split_size", None)
    if seed is not None:
        out["dataset_mixture_seed"] = seed
    if test is not None:
        out["eval_split_size"] = test
        changes.append(Change(f"{what}.test_split_size", "eval_split_size", "held out of the mixed rows (a count or a "
                                                                           "fraction)"))


def argv(arguments: list[str]) -> tuple[list[str], list[Change]]:
    """Command-line flags under their old names (`--torch_dtype bfloat16`), renamed; the other kinds of change apply
    to config files (a flag is typed by hand, and gets the did-you-mean of unknown options)."""
    out, changes = [], []
    for token in arguments:
        if token.startswith("--"):
            key, sep, value = token[2:].partition("=")
            if key.replace("-", "_") in RENAMED:
                new, why = RENAMED[key.replace("-", "_")]
                changes.append(Change(key, new, why))
                token = f"--{new}{sep}{value}"
        out.append(token)
    return out, changes
