"""The `posttrain-dist` command: helpers around the recipes.

    posttrain-dist models                      short model names and whether they are built
    posttrain-dist prepare-model [NAME]        build a short-named model into the cache now
    posttrain-dist ask MODEL "question" ...    greedy answers through the chat template
    posttrain-dist compare BEFORE AFTER ...    before/after answers side by side
"""

from __future__ import annotations

import argparse
import sys

from .errors import report_user_errors


def _models(args) -> None:
    from . import modeling

    for name, (description, _) in modeling.SHORT_NAMES.items():
        folder = modeling.cache_dir() / "models" / name
        state = f"built in {folder}" if (folder / "config.json").is_file() else "not built yet (built on first use)"
        print(f"{name:24s} {description}\n{'':24s} {state}")


def _prepare_model(args) -> None:
    from . import modeling

    print(modeling.resolve_model(args.name))


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompts or [])
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        from .errors import ConfigError

        raise ConfigError("no questions: give them as arguments or with --prompts-file (one per line).")
    return prompts


def _ask(args) -> None:
    from . import generation

    model, tokenizer = generation.load_for_generation(args.model)
    prompts = _read_prompts(args)
    for prompt, text in zip(prompts, generation.answer(model, tokenizer, prompts, args.max_new_tokens)):
        print(f"Q: {prompt}\nA: {text}\n")


def _compare(args) -> None:
    from . import generation

    rows = generation.before_after(args.before, args.after, _read_prompts(args), args.max_new_tokens)
    print(generation.markdown_table(rows) if args.markdown else generation.text_table(rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain-dist", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list short model names").set_defaults(func=_models)

    p = sub.add_parser("prepare-model", help="build a short-named model into the cache")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=_prepare_model)

    p = sub.add_parser("ask", help="answer questions with one model")
    p.add_argument("model", help="short name, model folder or LoRA adapter folder")
    p.set_defaults(func=_ask)
    p = sub.add_parser("compare", help="answers of two models side by side (before/after training)")
    p.add_argument("before", help="model before training (short name or folder)")
    p.add_argument("after", help="model after training (folder, or LoRA adapter folder)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.set_defaults(func=_compare)
    for name in ("ask", "compare"):
        p = sub.choices[name]
        p.add_argument("prompts", nargs="*", help="questions")
        p.add_argument("--prompts-file", help="a file with one question per line")
        p.add_argument("--max-new-tokens", type=int, default=64)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.func(args)


if __name__ == "__main__":
    main()
