"""Where things are: the files shipped with the package, and whether a name means a local path.

The recipe scripts, the presets and the accelerate configs live at the top of a checkout
(recipes/, accelerate_configs/) and are shipped inside the package (`posttrain_dist.recipes`,
`posttrain_dist.accelerate_configs`, mapped to those folders by pyproject.toml), so an installed
wheel finds them outside a checkout too.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from .errors import ConfigError

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def looks_local(name: str) -> bool:
    """A name that can only mean a path here: it starts with `.`, `/` or `~`, ends with a data file extension,
    has more than one `/` (hub ids have one), or its first part is a folder here (`data/my_sft` with data/)."""
    first = name.split("/", 1)[0]
    return (name.startswith((".", "/", "~")) or Path(name).suffix in DATA_SUFFIXES or name.count("/") > 1
            or ("/" in name and os.path.isdir(first)))


def shipped(kind: str) -> Path:
    """The folder of shipped `recipes` or `accelerate_configs`."""
    return Path(str(importlib.resources.files(f"posttrain_dist.{kind}")))


def recipe_script(method: str) -> str:
    return str(shipped("recipes") / f"{method}.py")


def accelerate_config(name: str) -> str:
    """An accelerate config: a file path, or the name of a shipped one (zero3, ddp, cpu, ...)."""
    if os.path.isfile(name):
        return name
    path = shipped("accelerate_configs") / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in shipped("accelerate_configs").glob("*.yaml"))
        raise ConfigError(f"accelerate config {name!r} is neither a file nor one of {known}.")
    return str(path)


def preset(path: str) -> str:
    """A recipe preset: a file path, or a shipped one (`recipes/smollm2-135m/sft_lora.yaml`, `smollm2-135m/sft_lora`)."""
    if os.path.isfile(path):
        return path
    relative = path.removeprefix("recipes/")
    candidate = shipped("recipes") / (relative if relative.endswith(".yaml") else f"{relative}.yaml")
    if candidate.is_file():
        return str(candidate)
    raise ConfigError(f"config file {path!r} does not exist (nor as a shipped preset; see "
                      f"{shipped('recipes')}).")


def display(path: str) -> str:
    """A path as short as it can be read: relative to the working directory when it is below it."""
    absolute = os.path.abspath(path)
    return os.path.relpath(absolute) if absolute.startswith(os.getcwd() + os.sep) else path
