"""What the shared modules know of a method: the `Method` record each method module registers.

A shared module never asks which method it serves; it reads this record, handed to it by the recipe or by
an orchestrating module (parsing, checks, planning, report, the command line) that looks it up in the
registry. Hooks take the run's parsed arguments (`config.Args`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


def _rows(args) -> tuple[int | None, str, list[str]]:  # pragma: no cover - replaced by each method
    return None, "not counted", []


def on_the_hub(args) -> tuple | None:
    """`plan_rows`'s answer for hub data, which plan does not read; None when the data is local or built in."""
    from .. import data

    hub = data.hub_sources(args.recipe)
    return (None, f"on the hub ({', '.join(hub)}); plan reads and checks local and built-in data only", []) if hub else None


def count_rows(args, reads, how: str) -> tuple:
    """`plan_rows` through the recipe's own data code: the rows one epoch trains on, every row checked."""
    from .. import data

    hub = on_the_hub(args)
    if hub:
        return hub
    train, _ = data.load_for(reads, args.recipe, seed=args.training.seed)
    return len(train), how, []


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line, for --help and the README
    recipe_args: type  # posttrain-dist's own fields (data, template, evaluation): a config.RecipeArgs
    training_args: type  # trl's config class with our defaults (config.RunDefaults)
    layouts: list = field(default_factory=list)  # the formats.Layout entries its data may come in, first match wins
    after_convert: Callable[[Any, str], Any] | None = None  # (converted rows, source) -> rows (DPO: drop chosen == rejected)
    panels: list = field(default_factory=list)  # curves: (title, y label, [(metric key or "re:pattern", line label)])
    unit: str = "rows"  # what one training example is, in `plan` (GRPO: prompts, each answered num_generations times)
    examples_per_step: Callable[[Any], float] = lambda args: 1.0  # global batch / this = examples per optimizer step
    plan_rows: Callable[[Any], tuple] = _rows  # args -> (rows per epoch or None, how counted, extra lines for `plan`)
    tokens: Callable[[Any], tuple[int, str]] | None = None  # args -> (tokens per micro-batch, how), for the memory
    reference: Callable[[Any], bool] = lambda args: False  # keeps a frozen reference model (memory)
    generation: Callable[[Any], tuple[int, int] | None] = lambda args: None  # (rows, tokens) of a generation cache
    checks: tuple = ()  # args -> None: checks of its own fields that span modules, before anything loads
    evaluators: tuple = ()  # evaluation.Evaluator classes of its own (GRPO: held-out rewards)
    shared_evaluators: bool = True  # also the answers, simple questions, perplexity (not for a model that only scores)
    data_source: Callable[[Any], tuple[Any, str]] | None = None  # args -> (source, note) report.md names
    makes_its_data: Callable[[Any], bool] = lambda args: False  # no data set to check: the run curates its own
    model_kind: str = "causal-lm"  # what it trains: a causal LM, or a "sequence-classifier" (reward models)
    # frozen models it loads besides the trained one and its reference, for `plan`'s memory rows: (part, reference)
    frozen_models: Callable[[Any], list[tuple[str, str]]] = lambda args: []
