"""`posttrain-dist models` and `prepare-model`: the short model names, built into the cache on first use."""

from __future__ import annotations


def add(sub) -> None:
    sub.add_parser("models", help="list short model names").set_defaults(func=list_models)
    p = sub.add_parser("prepare-model", help="build a short-named model into the cache")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=prepare)


def list_models(args) -> None:
    from .. import modeling

    for name, (description, _) in modeling.SHORT_NAMES.items():
        folder = modeling.cache_dir() / "models" / name
        state = f"built in {folder}" if (folder / "config.json").is_file() else "not built yet (built on first use)"
        print(f"{name:24s} {description}\n{'':24s} {state}")


def prepare(args) -> None:
    from .. import modeling

    print(modeling.resolve_model(args.name))
