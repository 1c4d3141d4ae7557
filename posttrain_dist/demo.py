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


def run(config_path: str, output: str, started_at: float | None = None) -> dict:
    start = started_at or time.time()
    recipe, config = resources.recipe_script("dpo"), resources.preset(config_path)
    output_dir = Path(output)
    if output_dir.exists():
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
