"""Standard benchmarks with lm-evaluation-harness (EleutherAI's lm-eval), before and after training.

    posttrain-dist eval MODEL --tasks arc_easy,hellaswag       a short name, a model folder or an adapter folder
    eval_tasks: [arc_easy, path/to/my_task.yaml]              in a recipe: run before and after, in report.md

A task is a name from lm-eval's registry or a task file: lm-eval's own YAML format, e.g. a multiple-choice task
over a local JSONL (`dataset_path: json`, `dataset_kwargs: {data_files: {test: questions.jsonl}}`), which is how
offline clusters and the tests use it; relative data paths in a task file are read from the file's folder.
Names and files are checked before anything loads. The model is loaded the way `posttrain-dist ask` loads it
(a LoRA adapter on its base) and handed to lm-eval's HF model as it is: one process, never ZeRO-3's
partitioned weights. Prompts are scored without a chat template, as lm-eval does by default.
"""

from __future__ import annotations

import difflib
import os

from .errors import ConfigError


def _read_task_file(path: str) -> dict | None:
    """A task file as a config dict, its relative data paths made absolute; None when it holds lm-eval's own YAML
    tags (`!function`), which lm-eval reads from the file's folder itself."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            task = yaml.safe_load(f)
    except yaml.constructor.ConstructorError:
        return None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"eval task file {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(task, dict) or not isinstance(task.get("task"), str):
        raise ConfigError(f"eval task file {path} has no `task: NAME` (lm-eval's task YAML format).")
    files = (task.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        folder = os.path.dirname(os.path.abspath(path))
        task["dataset_kwargs"]["data_files"] = {split: _beside(folder, f) for split, f in files.items()}
    elif isinstance(files, str):
        task["dataset_kwargs"]["data_files"] = _beside(os.path.dirname(os.path.abspath(path)), files)
    return task


def _beside(folder: str, path):
    if isinstance(path, list):
        return [_beside(folder, p) for p in path]
    return path if os.path.isabs(path) or "://" in path else os.path.join(folder, path)


def is_file(entry: str) -> bool:
    return entry.endswith((".yaml", ".yml")) or os.sep in entry


def resolve(entries: list[str]) -> tuple[list, "object", list[str]]:
    """(the tasks as lm-eval takes them: names and config dicts, its TaskManager, the names taken from its
    registry). Files must exist and name a task; names must be in lm-eval's registry (indexing it takes ~10 s,
    done only when some entry is not a file)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("`eval_tasks` and `posttrain-dist eval` need lm-evaluation-harness: `pip install lm_eval`.") from None
    tasks, folders, registry = [], [], []
    for entry in entries:
        if not is_file(entry):
            tasks.append(entry)
            registry.append(entry)
            continue
        if not os.path.isfile(entry):
            raise ConfigError(f"eval task file {entry} does not exist.")
        task = _read_task_file(entry)
        if task is None:  # lm-eval reads it from its folder, by name
            folders.append(os.path.dirname(os.path.abspath(entry)))
            task = _task_name(entry)
        tasks.append(task)
    manager = TaskManager(include_path=folders or None, include_defaults=bool(registry))
    unknown = [n for n in registry if n not in manager.all_tasks]
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        raise ConfigError(f"lm-eval has no task {unknown[0]!r}" + (f"; did you mean {', '.join(close)}?" if close else
                          "; `lm_eval ls tasks` lists them, or give a task YAML file."))
    return tasks, manager, registry


def _task_name(path: str) -> str:
    """The `task:` line of a task file lm-eval reads itself."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("task:"):
                return line.split(":", 1)[1].strip().strip("'\"")
    raise ConfigError(f"eval task file {path} has no `task: NAME` line.")


def check(entries: list[str] | None) -> None:
    """Before anything loads: every task exists; registry tasks need the hub (their data sets) unless offline-cached."""
    if not entries:
        return
    _, _, registry = resolve(entries)
    from . import sources

    unreachable = sources.hub_unreachable() if registry and not sources._offline() else None
    if unreachable:
        raise ConfigError(f"lm-eval task {registry[0]} reads its data set from the hub, which cannot be reached "
                          f"({unreachable}); give a task YAML over a local file, or set HF_DATASETS_OFFLINE=1 where "
                          "the data set is cached.")


def run(model, tokenizer, entries: list[str], limit: int | None = None, batch_size: int = 8) -> dict:
    """{task: {metric: value, metric_stderr: value, "rows": n}} for a loaded model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    tasks, manager, _ = resolve(entries)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=False,
                          verbosity="WARNING")
    results = {}
    for task, values in out["results"].items():
        scores = {}
        for key, value in values.items():
            if "," not in key or not isinstance(value, (int, float)):
                continue
            metric, _filter = key.split(",", 1)
            scores[metric] = float(value)
        scores["rows"] = out["n-samples"].get(task, {}).get("effective")
        results[task] = scores
    return results


def metrics(scores: dict) -> list[str]:
    """The metrics of one task's scores, without their standard errors and row count."""
    return [m for m in scores if m != "rows" and not m.endswith("_stderr")]


def table(results: dict) -> list[dict]:
    return [{"task": task, "metric": m, "value": f"{scores[m]:.4f}",
             "stderr": f"{scores[m + '_stderr']:.4f}" if m + "_stderr" in scores else "", "rows": str(scores["rows"])}
            for task, scores in results.items() for m in metrics(scores)]


def plan_line(recipe) -> str | None:
    tasks = getattr(recipe, "eval_tasks", None)
    if not tasks:
        return None
    limit = f", {recipe.eval_tasks_limit} rows each" if recipe.eval_tasks_limit else ""
    return f"lm-eval before and after training: {', '.join(tasks)}{limit} (main process, the saved model)"
