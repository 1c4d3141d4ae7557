"""`package.module:Name` references to the user's own code (callbacks, rewards), checked without running it.

A config names code of its author's (a reward function, a trainer callback); a config is data, so
checking it (`posttrain-dist plan`, the recipe's checks before loading) must not import that code:
`check()` finds the module's file on the import path without executing it (nor its package's
`__init__`), and reads its source for a top-level definition of the name. The standard library and
builtins are refused outright (`os:system`, `builtins:eval`, `subprocess:run`, `shutil:rmtree` pass
any "is it callable" test). Only the recipe itself, when the run starts, imports what passed.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import re
import sys

from .errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def _module_file(module: str) -> str | None:
    """The source file of `module` on sys.path (and the working directory), found without importing anything."""
    path = [os.getcwd(), *sys.path]
    spec = None
    parts = module.split(".")
    for i, part in enumerate(parts):
        spec = importlib.machinery.PathFinder.find_spec(part, path)
        if spec is None:
            return None
        if i < len(parts) - 1:
            if not spec.submodule_search_locations:
                return None
            path = list(spec.submodule_search_locations)
    origin = getattr(spec, "origin", None)
    return origin if origin and origin.endswith(".py") else None


def defined_names(source: str) -> set[str]:
    """Names a module defines at its top level: functions, classes, assignments and imports."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def check(reference, what: str) -> tuple[str, str]:
    """(module, name) of a well-formed reference to a definition in a Python source file that is not the standard
    library's; else a ConfigError saying why. Nothing is imported or run."""
    if not isinstance(reference, str) or not _NAME.match(reference.strip()):
        raise ConfigError(f"{what} {reference!r} is not `package.module:name` (e.g. my_rewards:length_penalty).")
    module, name = reference.strip().split(":")
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "builtins":
        raise ConfigError(f"{what} {reference!r} names the standard library; give a function of your own module "
                          "(`my_module:my_function`), or a registered name.")
    path = _module_file(module)
    if path is None:
        raise ConfigError(f"{what} {reference!r}: no Python module {module!r} on the import path (the working directory "
                          "or PYTHONPATH set in your shell), or it is not a .py file.")
    try:
        with open(path, encoding="utf-8") as f:
            names = defined_names(f.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{what} {reference!r}: cannot read {path} ({type(error).__name__}: {error}).") from None
    if name not in names:
        raise ConfigError(f"{what} {reference!r}: {path} defines no {name!r} at its top level.")
    return module, name


def load(reference: str, what: str):
    """Import what `check` accepted (the run itself, when it starts)."""
    import importlib

    module, name = check(reference, what)
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as error:  # the user's module failed to import
        raise ConfigError(f"{what} {reference!r}: importing {module} failed ({type(error).__name__}: {error}).") from None


def stand_in(reference: str, what: str):
    """A function with the name and parameters the source declares for `reference`, for checks that read a
    signature (the columns a reward needs) without importing the code; calling it is an error."""
    import inspect

    module, name = check(reference, what)
    with open(_module_file(module), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    definition = next((node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and node.name == name), None)
    parameters = [inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                  inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    if definition is not None:
        a = definition.args
        positional = a.posonlyargs + a.args
        defaults = [inspect.Parameter.empty] * (len(positional) - len(a.defaults)) + [0] * len(a.defaults)
        parameters = [inspect.Parameter(p.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
                      for p, d in zip(positional, defaults)]
        if a.vararg:
            parameters.append(inspect.Parameter(a.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
        parameters += [inspect.Parameter(p.arg, inspect.Parameter.KEYWORD_ONLY,
                                         default=inspect.Parameter.empty if d is None else 0)
                       for p, d in zip(a.kwonlyargs, a.kw_defaults)]
        if a.kwarg:
            parameters.append(inspect.Parameter(a.kwarg.arg, inspect.Parameter.VAR_KEYWORD))

    def stand_in_for_reference(*args, **kwargs):
        raise RuntimeError(f"{reference} was checked, not imported: it cannot be called here")

    stand_in_for_reference.__name__ = name
    stand_in_for_reference.__signature__ = inspect.Signature(parameters)
    return stand_in_for_reference
