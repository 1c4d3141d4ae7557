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
from .config import METHODS, Args, ModelArgs, field_names
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


def _type_ok(value, hint) -> bool:
    """Does a YAML value fit a dataclass field's type hint? Strings are left to argparse's conversion, except
    where the field takes only numbers (YAML reads `1e-5` as a string; `fast` is no number)."""
    if value is None:
        return True
    if isinstance(value, str):
        numeric = [o for o in _unwrap_optional(hint) if o in (int, float)]
        if numeric and len(numeric) == len(_unwrap_optional(hint)):
            try:
                float(value)
            except ValueError:
                return False
        return True
    for option in _unwrap_optional(hint):
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
        if isinstance(origin, type) and issubclass(origin, enum.Enum):
            return True
    return False


def _describe(hint) -> str:
    names = []
    for option in _unwrap_optional(hint):
        names.append(getattr(option, "__name__", str(option)))
    return " or ".join(names)


def parse(method: str, argv: list[str] | None = None, env=None) -> Args:
    """`--config FILE` plus command-line overrides as dataclasses, for the environment `env` (default: this
    process's); each dataclass checks its own values, nothing is loaded."""
    from . import environment

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    env = env or environment.probe()
    recipe_cls, training_cls = METHODS[method]
    if env.planned and method == "grpo":
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

    config_path, file_values = _read_config_file(argv, method)
    problems = []
    for key, value in file_values.items():
        if key not in hints:
            problems.append(f"unknown key '{key}' in {config_path}; {_suggest(key, valid)}")
        elif not _type_ok(value, hints[key]):
            problems.append(
                f"'{key}' in {config_path} should be {_describe(hints[key])}, got {type(value).__name__} {value!r}"
            )

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
    except ValueError as error:  # trl's and transformers' own __post_init__ checks
        raise ConfigError(str(error)) from None

    sources = {name: "default" for name in hints}
    sources.update({name: "file" for name in file_values})
    sources.update({name: "command line" for name in cli_keys})
    return Args(method, recipe, model, training, sources, config_path, env)


def machine_defaults(env) -> dict:
    """Defaults that depend on the machine: train on the CPU in float32 where torch sees no GPU, over gloo."""
    if env.has_accelerator:
        return {}
    defaults = {"use_cpu": True, "bf16": False}  # (also when planning for GPUs: transformers checks this machine)
    if env.world_size > 1 and not env.planned:  # this process is one of several CPU processes
        defaults["ddp_backend"] = "gloo"
    return defaults


def preset_method(path: str) -> str | None:
    """The method a preset declares (`method: sft`), or None."""
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    return values.get("method") if isinstance(values, dict) else None


def _read_config_file(argv: list[str], method: str) -> tuple[str | None, dict]:
    """Take `--config FILE` out of argv and read it: its values (the `env` block is exported, `method` checked)."""
    if "--config" not in argv:
        return None, {}
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise ConfigError("`--config` needs a YAML file after it.")
    config_path = argv[i + 1]
    del argv[i : i + 2]
    if not os.path.isfile(config_path):
        raise ConfigError(f"config file {config_path!r} does not exist.")
    with open(config_path) as f:
        try:
            file_values = yaml.safe_load(f) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{config_path} is not valid YAML: {error}") from None
    if not isinstance(file_values, dict):
        raise ConfigError(f"{config_path} must hold a mapping of key: value; got {type(file_values).__name__}.")
    declared = file_values.pop("method", None)
    if declared is not None and declared != method:
        raise ConfigError(f"{config_path} is a {declared} preset (`method: {declared}`); run it with "
                          f"recipes/{declared}.py, not the {method} recipe.")
    for key, value in (file_values.pop("env", None) or {}).items():
        os.environ[str(key)] = str(value)
    return config_path, file_values


def field_helps(method: str) -> dict[str, str]:
    """Each field's help text, for `posttrain-dist plan`."""
    import dataclasses

    helps = {}
    for cls in (METHODS[method][0], ModelArgs, METHODS[method][1]):
        for f in dataclasses.fields(cls):
            helps.setdefault(f.name, str(f.metadata.get("help", "")).strip())
    return helps
