"""The `posttrain-dist` command: one module per subcommand, each parsing its arguments and calling the library.

    posttrain-dist demo                        the main job: change SmolLM2's identity with DPO, on a CPU
    posttrain-dist models                      short model names and whether they are built
    posttrain-dist prepare-model [NAME]        build a short-named model into the cache now
    posttrain-dist ask MODEL "question" ...    greedy answers through the chat template
    posttrain-dist compare BEFORE AFTER ...    before/after answers side by side, identity adoption rate
    posttrain-dist curate identity ...         correction pairs: the model's answers vs renamed ones (DPO data)
    posttrain-dist curate best-of-k ...        K sampled answers scored by a reward: pairs and SFT rows
    posttrain-dist tasks arithmetic|countdown  generated verifiable tasks with a seed, to JSONL
    posttrain-dist plan PRESET [--accelerate X] resolved config, data checks, batch and steps, launch command, memory
    posttrain-dist launch METHOD PRESET        start a recipe on this node (one machine, explicit ranks, or Slurm)
    posttrain-dist merge ADAPTER_DIR           merge a LoRA adapter into its base; check greedy answers match
    posttrain-dist migrate CONFIG [--out NEW]  a config from alignment-handbook, open-r1 or TRL in today's names
    posttrain-dist trust CHECKPOINT            sign a checkpoint someone else wrote, so that your runs resume from it
    posttrain-dist eval MODEL --tasks NAMES    lm-evaluation-harness tasks (registry names or task YAML files)
    posttrain-dist push OUTPUT_DIR             push a finished run to the hub (model, tokenizer, card, report)
"""

from __future__ import annotations

import sys

from .. import signals

if sys.argv[1:2] == ["launch"]:  # from the launcher's first moment a preemption signal is held for its recipes
    signals.hold_for_launcher()

import argparse  # noqa: E402

from ..errors import report_user_errors  # noqa: E402
from . import ask, curate, demo, eval, launch, merge, migrate, models, plan, push, tasks, trust  # noqa: E402

SUBCOMMANDS = (demo, models, ask, curate, tasks, launch, plan, merge, migrate, trust, eval, push)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain-dist", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add(sub)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    """Flags after `--` belong to the recipe (`launch`, `plan`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    if args.command != "launch" and sys.argv[1:2] == ["launch"]:  # (main called with other arguments)
        signals.release_held()
    args.recipe_args = recipe_args
    args.func(args)
