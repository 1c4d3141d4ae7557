"""The methods, each in one place: its config classes, and (as the registry grows) its data layouts, curve panels,
plan terms and evaluations, registered once in `METHODS`.

Shared modules ask the registry (`get(name)`) instead of naming a method: adding one means its module here, its
recipe script, its presets and its README section.
"""

from __future__ import annotations

from .base import Method


def _registry() -> dict[str, Method]:
    from . import distillation, dpo, grpo, kto, reward, rloo, sft

    return {module.METHOD.name: module.METHOD for module in (sft, dpo, kto, grpo, rloo, reward, distillation)}


METHODS: dict[str, Method] = _registry()


def get(name: str) -> Method:
    from ..errors import ConfigError

    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; the methods are {', '.join(METHODS)}.")
    return METHODS[name]


def names() -> list[str]:
    return list(METHODS)
