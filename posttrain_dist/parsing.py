"""A recipe's YAML file and command line, parsed into the dataclasses of `config`.

`--config FILE` gives the values, command-line flags override them. Before anything is built:
unknown keys and options are errors with a "did you mean", values of the wrong type are named
with the file, and a preset made for another method says so. The machine's own defaults come from
the environment (`environment.Environment`), passed in: on a machine without a GPU the run trains
on the CPU in float32 (trl turns bf16 on by default, and transformers refuses bf16 on a CPU unless
`use_cpu` is set; an explicit `bf16: true` is kept), and several CPU processes talk over gloo.
Nothing here reads data, loads a model or looks at the output folder: that is `checks`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import sys
import types
import typing
from typing import Any

import trl
import yaml

from . import config
from . import hub, methods, migrate
from .config import Args, ModelArgs, field_names
from .errors import ConfigError


class _Parser(trl.TrlParser):
    """TrlParser whose errors raise ConfigError instead of printing the whole usage and exiting."""

    def error(self, message):
        raise ConfigError(message)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return "run the recipe with --help to list every key."


def _unwrap_optional(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _type_ok(value, hint, default=None) -> bool:
    """Does a YAML value fit a dataclass field's type hint? A string fits where the field takes text (or an enum,
    which argparse converts), or a number or boolean that it spells (YAML reads `1e-5` as a string); null fits only
    a field that may be None."""
    options = _unwrap_optional(hint)
    if value is None:
        return default is None or len(options) < len(_options_with_none(hint))
    if isinstance(value, str):
        for option in options:
            origin = typing.get_origin(option) or option
            if origin in (str, typing.Any) or (isinstance(origin, type) and issubclass(origin, enum.Enum)):
                return True
            if origin is typing.Literal and value in typing.get_args(option):
                return True
            if origin in (int, float) and _spells_number(value):
                return True
            if origin is bool and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
                return True
        return False
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is typing.Any:
            return True
        if origin is typing.Literal:
            if value in typing.get_args(option):
                return True
            continue
        if origin is bool and isinstance(value, bool):
            return True
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if origin in (list, tuple) and isinstance(value, list):
            return True
        if origin is dict and isinstance(value, dict):
            return True
        if isinstance(origin, type) and not isinstance(value, bool) and isinstance(value, origin):
            return True
        if isinstance(origin, type) and issubclass(origin, enum.Enum) and value in [m.value for m in origin]:
            return True
    return False


# list fields that also take one string meaning something else: peft's `all-linear`
TEXT_OR_LIST = {"lora_target_modules"}
# fields that were one value and are a list in trl 1.x
ONE_BECAME_MANY = ("loss_type",)


def _options_with_none(hint):
    origin = typing.get_origin(hint)
    return list(typing.get_args(hint)) if origin in (typing.Union, types.UnionType) else [hint]


def _spells_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(hint) -> str:
    names = []
    for option in _unwrap_optional(hint):
        names.append(getattr(option, "__name__", str(option)))
    return " or ".join(names)


def parse(method: str, argv: list[str] | None = None, env=None) -> Args:
    """`--config FILE` plus command-line overrides as dataclasses, for the environment `env` (default: this
    process's); each dataclass checks its own values, nothing is loaded."""
    from . import environment

    env = env or environment.probe()
    recipe_cls, training_cls = methods.get(method).recipe_args, methods.get(method).training_args
    if env.planned:  # trl's checks (GRPO's batch arithmetic) count the planned processes, not this one
        training_cls = config.planned_for(training_cls, env.world_size)
    dataclass_types = [recipe_cls, ModelArgs, training_cls]
    argv = list(sys.argv[1:] if argv is None else argv)

    hints: dict[str, Any] = {}
    for cls in dataclass_types:
        cls_hints = typing.get_type_hints(cls)
        for name in field_names(cls):
            if name in hints:
                raise RuntimeError(f"field {name!r} is defined twice among {dataclass_types}")
            hints[name] = cls_hints[name]
    valid = sorted(hints)
    defaults = {f.name: f.default for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}

    config_path, file_values, exported, changes = _read_config_file(argv, method)
    argv, cli_changes = migrate.argv(argv)
    changes += cli_changes
    _note(changes)
    for key in ONE_BECAME_MANY:  # trl 1.x takes a list where older configs name one value (DPO's `loss_type`)
        takes_a_list = typing.get_origin(_unwrap_optional(hints.get(key, str))[0]) is list
        if takes_a_list and isinstance(file_values.get(key), str):
            file_values[key] = [file_values[key]]
            change = migrate.Change(key, key, f"read as [{file_values[key][0]}]: trl takes a list of them now")
            changes.append(change)
            _note([change])
    problems = []
    for key, value in file_values.items():
        if key not in hints:
            problems.append(f"unknown key '{key}' in {config_path}; {_suggest(key, valid)}")
        elif not (_type_ok(value, hints[key], defaults.get(key)) or (key in TEXT_OR_LIST and isinstance(value, str))):
            shown = "null" if value is None else f"{type(value).__name__} {_short(value)}"
            problems.append(f"'{key}' in {config_path} should be {_describe(hints[key])}, got {shown}")

    negatable = {n for n, h in hints.items() if bool in _unwrap_optional(h)}
    cli_keys = []
    for token in argv:
        if not token.startswith("--"):
            continue
        key = token[2:].split("=", 1)[0].replace("-", "_")
        if key == "help":
            continue
        if key.startswith("no_") and key[3:] in negatable:
            key = key[3:]
        if key not in hints:
            problems.append(f"unknown option '--{key}'; {_suggest(key, valid)}")
        cli_keys.append(key)
    if problems:
        raise ConfigError("\n  ".join(["the recipe config has problems:", *problems]))

    parser = _Parser(dataclass_types, allow_abbrev=False)
    parser.set_defaults_with_config(**{**machine_defaults(env), **file_values})
    try:
        recipe, model, training = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ConfigError:
        raise
    except (ValueError, TypeError, AttributeError) as error:  # trl's and transformers' own __post_init__ checks
        raise ConfigError(f"{str(error).splitlines()[0] if str(error) else type(error).__name__} (trl's or "
                          "transformers' check of the values)") from None

    sources = {name: "default" for name in hints}
    sources.update({name: "file" for name in file_values})
    sources.update({name: "command line" for name in cli_keys})
    for change in changes:
        if change.new in sources:
            sources[change.new] += f" (was {change.old})"
    _move_token(training, sources)
    push = hub.hold(training)  # the trainer never pushes: the finished run is pushed once, at the end
    if push is not None and sources["hub_strategy"] == "default":
        push["strategy"] = None  # transformers' default, not a choice of the user's to remark on
    return Args(method, recipe, model, training, sources, config_path, env, exported, changes, push)


def _note(changes) -> None:
    """One line per key read under its current name, or dropped (the main process says it)."""
    if int(os.environ.get("RANK", "0")) == 0:
        for change in changes:
            print(f"posttrain-dist: note: {change.line()}", file=sys.stderr, flush=True)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _move_token(training, sources) -> None:
    """A hub token given as `hub_token` goes to HF_TOKEN in this process's environment (the hub client reads it
    there), never into the arguments that transformers pickles and our config.yaml and report print."""
    token = getattr(training, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = str(token)
        training.hub_token = None
        sources["hub_token"] = "moved to HF_TOKEN (never written)"


def machine_defaults(env) -> dict:
    """Defaults that depend on the machine: train on the CPU in float32 where torch sees no GPU, over gloo."""
    if env.has_accelerator:
        return {}
    defaults = {"use_cpu": True, "bf16": False}  # (also when planning for GPUs: transformers checks this machine)
    if env.world_size > 1 and not env.planned:  # this process is one of several CPU processes
        defaults["ddp_backend"] = "gloo"
    return defaults


def preset_method(path: str) -> str | None:
    """The method a preset declares (`method: sft`), or None; a file that cannot be read is its own error."""
    values = read_yaml(path)
    method = values.get("method")
    return method if isinstance(method, str) else None


def _read_config_file(argv: list[str], method: str) -> tuple[str | None, dict, dict, list]:
    """Take `--config FILE` out of argv and read it: its values in today's names (`migrate`), the `env` block it
    exported (`method` checked), and what was renamed. Every mistake in the file itself is one line: not UTF-8, not
    YAML (with the line), not a mapping, odd keys."""
    if "--config" not in argv:
        return None, {}, {}, []
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise ConfigError("`--config` needs a YAML file after it.")
    config_path = argv[i + 1]
    del argv[i : i + 2]
    file_values = read_yaml(config_path)
    declared = file_values.pop("method", None)
    if declared is not None and declared != method:
        raise ConfigError(f"{config_path} is a {declared} preset (`method: {declared}`); run it with "
                          f"recipes/{declared}.py, not the {method} recipe.")
    file_values, changes, environment = migrate.migrate(file_values, config_path)
    block = file_values.pop("env", None)
    exported = export_env({**environment, **(block or {})} if environment else block, config_path)
    return config_path, file_values, exported, changes


def read_yaml(path: str) -> dict:
    """A config file as a mapping of field names, or one clear ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist.")
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is over {MAX_CONFIG_BYTES // 1024 // 1024} MB: that is no recipe config.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line} is not UTF-8 text (byte {raw[error.start]:#04x}); save it as UTF-8.") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML:{where}: {what}.") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a recipe config.") from None
    values = values if values is not None else {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value; got {type(values).__name__}.")
    odd = [key for key in values if not isinstance(key, str) or not key.isidentifier()]
    if odd:
        raise ConfigError(f"{path} has keys that are no field names: {', '.join(_short(k, 30) for k in odd[:5])} "
                          "(a key is a name such as learning_rate; quote it if YAML read it as a number or boolean).")
    return values


MAX_CONFIG_BYTES = 4 * 1024 * 1024
# What a config's `env:` block may set: thread counts, communication settings, caches and loggers' names. Nothing
# that makes a process load code (PYTHONPATH, LD_PRELOAD, NCCL's plugins, torch's extension folder), and no secret.
ENV_ALLOWED = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM",
               "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_LAUNCH_BLOCKING", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF",
               "TORCH_DISTRIBUTED_DEBUG", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE",
               "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_DOWNLOAD_TIMEOUT",
               "POSTTRAIN_DIST_CACHE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE", "WANDB_RUN_GROUP",
               "WANDB_LOG_MODEL", "TRACKIO_PROJECT", "ACCELERATE_LOG_LEVEL", "TRANSFORMERS_VERBOSITY"}
ENV_PREFIXES = ("NCCL_", "TORCH_NCCL_", "GLOO_")
ENV_NEVER = ("PLUGIN", "CONF_FILE", "TOKEN", "KEY", "SECRET", "PASSWORD", "LIBRARY", "_PATH")


def env_allowed(name: str) -> bool:
    return (name in ENV_ALLOWED or name.startswith(ENV_PREFIXES)) and not any(w in name for w in ENV_NEVER)


def export_env(block, path: str) -> dict:
    """The `env:` block of a config, checked against `ENV_ALLOWED` and exported into this process's environment
    (inherited by what it starts). Returns what was set."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"`env` in {path} must be a mapping of NAME: value; got {type(block).__name__}.")
    refused = [str(k)[:40] for k in block if not isinstance(k, str) or not env_allowed(k)]
    if refused:
        raise ConfigError(f"`env` in {path} sets {', '.join(refused[:5])}, which a config may not "
                          "set: only thread counts, NCCL/gloo settings, caches and logger names are allowed (see "
                          "parsing.ENV_ALLOWED), never what makes a process load code (PYTHONPATH, LD_*) or a secret. "
                          "Set it in your shell instead, if you mean it.")
    exported = {}
    for key, value in block.items():
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"`env.{key}` in {path} must be a plain value; got {_short(value)}.")
        exported[key] = str(value).lower() if isinstance(value, bool) else str(value)
    os.environ.update(exported)
    return exported


def field_helps(method: str) -> dict[str, str]:
    """Each field's help text, for `posttrain-dist plan`."""
    import dataclasses

    helps = {}
    for cls in (methods.get(method).recipe_args, ModelArgs, methods.get(method).training_args):
        for f in dataclasses.fields(cls):
            helps.setdefault(f.name, str(f.metadata.get("help", "")).strip())
    return helps
