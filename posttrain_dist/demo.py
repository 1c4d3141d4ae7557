"""The main job (`make demo`): change a real model's stated identity with DPO, on a CPU, end to end.

Runs `recipes/dpo.py` with the identity preset: the recipe curates pairs from the model's own answers,
trains, saves the model to `OUTPUT/final/` and evaluates before and after. This wrapper times the
whole thing and writes `OUTPUT/summary.json`: the new name, its adoption asked three ways, its leakage
into unrelated answers, simple questions answered right, the perplexity of held-out general answers,
before and after, and the seconds since the demo started.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import resources


DEMO_ENTRIES = {"final", "summary.json"}


def check_demo_output(folder: Path) -> None:
    """The demo replaces its own earlier output, and nothing else: a folder holding anything but `final/` (a run
    folder) and summary.json is refused before anything is deleted."""
    from .errors import ConfigError

    if folder.is_symlink() or not folder.is_dir():
        raise ConfigError(f"--output {folder} is not a folder of the demo's; give a new folder.")
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in DEMO_ENTRIES)
    final = folder / "final"
    if final.exists() and (final.is_symlink() or not final.is_dir()):
        foreign.append("final (not a folder)")
    elif final.is_dir() and any(final.iterdir()) and not ((final / "config.yaml").is_file()
                                                           or (final / ".posttrain-dist.lock").is_file()):
        foreign.append("final/ (not a run folder)")
    if foreign:
        raise ConfigError(f"--output {folder} holds what the demo did not write ({', '.join(foreign[:5])}); the demo "
                          "replaces its own output only. Give a new or empty folder.")


def run(config_path: str, output: str, started_at: float | None = None) -> dict:
    start = started_at or time.time()
    recipe, config = resources.recipe_script("dpo"), resources.preset(config_path)
    output_dir = Path(output)
    if output_dir.exists():
        check_demo_output(output_dir)
        print(f"demo: replacing the previous demo output in {output_dir}")
        shutil.rmtree(output_dir)
    final = output_dir / "final"
    cmd = [sys.executable, str(recipe), "--config", str(config), "--output_dir", str(final)]
    print("demo:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)

    evaluation = json.loads((final / "evaluation.json").read_text())
    metrics = json.loads((final / "metrics.json").read_text())
    summary = {
        **evaluation["summary"],
        "seconds": round(time.time() - start, 1),
        "train_seconds": metrics["final"].get("train_runtime"),
        "optimizer_steps": metrics["global_step"],
        "model_dir": str(final),
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from .report import figures_table

    print(f"\ndemo: {summary['new_name']!r}, before and after training, on held-out prompts:\n\n"
          f"{figures_table(summary)}\n\n"
          f"demo: {summary['seconds']:.0f} s in all; model in {final} (loads with from_pretrained), "
          f"summary in {output_dir / 'summary.json'}")
    return summary
