"""What a run writes about itself when it ends: the before/after comparison (`evaluation`), printed and written
to evaluation.json and report.md, with the config, data, metrics and curves of the run, and the model card;
then, with `push_to_hub`, the finished run goes to the hub (`hub.push_finished`).

The figures table (`figures_table`) is what the terminal, the report and the demo show side by side.
"""

from __future__ import annotations

import json
import time

from . import generation, hub, methods, model_card, served
from .evaluation import chosen, compare


# The summary's before/after figures, as a table: (label, key, format).
FIGURES = [
    ("identity adoption, plain", "adoption", "{:.0%}"),
    ("identity adoption, under a system prompt", "adoption_system", "{:.0%}"),
    ("identity adoption, as a later turn", "adoption_turn", "{:.0%}"),
    ("new name in unrelated answers (leakage)", "leakage", "{:.0%}"),
    ("simple questions answered right", "right", "{}"),
    ("perplexity of held-out answers", "perplexity", "{:.2f}"),
    ("held-out reward", "reward", "{:.3f}"),
    ("held-out preference accuracy", "preference_accuracy", "{:.0%}"),
    ("tool calls per held-out rollout", "tool_calls_per_rollout", "{:.2f}"),
    ("malformed tool calls (share of calls)", "tool_malformed_share", "{:.0%}"),
    ("assistant turns per held-out rollout", "tool_turns_per_rollout", "{:.2f}"),
]


def figure_rows(summary: dict) -> list[dict]:
    """The before/after figures the summary holds: {measure, before, after}, formatted."""
    rows = [{"measure": label, "before": fmt.format(summary[f"{key}_before"]), "after": fmt.format(summary[f"{key}_after"])}
            for label, key, fmt in FIGURES if f"{key}_before" in summary]
    if "questions" in summary:
        for row in rows:
            if row["measure"].startswith("simple questions"):
                row["before"] += f" of {summary['questions']}"
                row["after"] += f" of {summary['questions']}"
    for b in summary.get("benchmarks", []):  # lm-eval tasks (`eval_tasks`)
        after = f"{b['after']:.4f}" if b["after"] is not None else "?"
        rows.append({"measure": f"{b['task']} {b['metric']} (lm-eval, {b['rows']} rows)", "before": f"{b['before']:.4f}",
                     "after": after})
    return rows


def figures_table(summary: dict) -> str:
    """The before/after figures side by side, for the terminal."""
    rows = figure_rows(summary)
    return generation.text_table(rows, ("measure", "before", "after"), width=44) if rows else ""


def write(trainer, run) -> dict:
    """Evaluate before and after, print the comparison, write evaluation.json and report.md (main process)."""
    if not trainer.is_world_process_zero():
        return {}
    args = run.args
    started = time.perf_counter()
    method = methods.get(args.method)
    evaluators = chosen(args, trainer, method.evaluators, method.shared_evaluators)
    result = compare(args, evaluators, args.model.model_name_or_path, args.training.output_dir)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(result.pop("text"), flush=True)
    table = figures_table(result["summary"])
    if table:
        print("\nBefore and after training:\n\n" + table, flush=True)
    if evaluators:
        print(f"(the evaluation before and after took {result['seconds']:.0f} s)", flush=True)
    sections = result.pop("sections")
    if evaluators:
        sections.append(f"The evaluation before and after training ({', '.join(e.name for e in evaluators)}) took "
                        f"{result['seconds']:.0f} s.")
    if args.recipe.served_check:
        result["served"] = served_check(args.training.output_dir, result)
        print(served.summary(result["served"]), flush=True)
        sections += ["## Served = trained", "", served.summary(result["served"]), ""]
    run.write("evaluation.json", json.dumps(result, indent=1))
    run.write("report.md", "\n".join(_header(trainer, run) + (["## Before and after", "", "```", table, "```", ""]
                                                              if table else []) + sections))
    run.write("README.md", model_card.render(run, steps=trainer.state.global_step, data=_data(trainer, run)[0],
                                             figures=figure_rows(result["summary"]), config_table=config_table(run.args)))
    run.mark_finished(trainer.state.global_step, reported=True)
    hub.push_finished(run)  # with `push_to_hub`: the finished run, once
    return result


def served_check(output_dir: str, result: dict) -> dict:
    """vLLM on the saved (or merged) model against the trained one, on the prompts answered before and after (the
    merge check's questions when there were none)."""
    if not served.available():
        return {"checked": False, "why": served.NOT_INSTALLED}
    pair = served.folders(output_dir)
    if isinstance(pair, str):
        return {"checked": False, "why": pair}
    asked = [row["prompt"] for row in result.get("after") or [] if isinstance(row, dict) and isinstance(row.get("prompt"), str)]
    return served.check(*pair, asked[:4] or generation.MERGE_CHECK_PROMPTS)


def _header(trainer, run) -> list[str]:
    args = run.args
    metrics = (run.metrics or {}).get("final", {})
    source, rows = _data(trainer, run)
    return [
        f"# {args.method.upper()} run: {run.path}",
        "",
        f"- model: `{args.model.model_name_or_path}`"
        + (f" with LoRA r={args.model.lora_r}" if args.model.use_peft else " (full parameters)")
        + (" on a 4-bit base (QLoRA)" if args.model.load_in_4bit else ""),
        f"- data: {source}: {rows}",
        f"- config: `{args.config_path}` (every resolved value in config.yaml)",
        f"- optimizer steps: {trainer.state.global_step}",
        "",
        "## Config (values that are not defaults)",
        "",
        config_table(args),
        "",
        "## Final metrics",
        "",
        *[f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()],
        "",
        *(["## Curves", "", "![training curves](curves.png)", ""] if run.has("curves.png") else []),
    ]


def _data(trainer, run) -> tuple[str, str]:
    """What the run trained on (`source` and the method's note) and how many rows."""
    args, recipe = run.args, run.args.recipe
    method = methods.get(args.method)
    source, note = method.data_source(args) if method.data_source else (recipe.dataset_name or recipe.dataset_mixture, "")
    rows_trained = len(trainer.train_dataset) if trainer.train_dataset is not None else "?"
    rows_eval = len(trainer.eval_dataset) if getattr(trainer, "eval_dataset", None) is not None else 0
    return f"`{source}`{note}", f"{rows_trained} training rows" + (f", {rows_eval} evaluation rows" if rows_eval else "")


def config_table(args) -> str:
    """A markdown table of the values that differ from the defaults, with where each came from."""
    values = args.resolved()
    rows = [f"| `{key}` | `{_short(values.get(key))}` | {source} |"
            for key, source in sorted(args.sources.items()) if source != "default" and key in values]
    return "\n".join(["| key | value | from |", "|---|---|---|", *rows])


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
