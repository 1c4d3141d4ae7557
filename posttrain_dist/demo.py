"""The main job (`make demo`): change a real model's stated identity with DPO, on a CPU, end to end.

Runs `recipes/dpo.py` with the identity preset: the recipe curates pairs from the model's own answers,
trains, saves the model to `OUTPUT/final/` and evaluates before and after. This wrapper times the
whole thing and writes `OUTPUT/summary.json`: the new name, the adoption rates, the perplexity of
held-out general answers before and after, and the seconds since the demo started.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def run(config_path: str, output: str, started_at: float | None = None) -> dict:
    start = started_at or time.time()
    recipe = ROOT / "recipes" / "dpo.py"
    config = Path(config_path) if Path(config_path).is_file() else ROOT / config_path
    if not recipe.is_file() or not config.is_file():
        raise ConfigError(f"the demo runs from a checkout of posttrain-dist: {recipe} or {config} is missing.")
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
    print(
        f"\ndemo: {summary['new_name']!r} adopted on {summary['adoption_before']:.0%} -> {summary['adoption_after']:.0%} "
        f"of held-out identity prompts; perplexity of held-out general answers {summary['perplexity_before']:.2f} -> "
        f"{summary['perplexity_after']:.2f} ({summary['perplexity_change']:+.1%}); {summary['seconds']:.0f} s in all.\n"
        f"demo: model in {final} (loads with from_pretrained), summary in {output_dir / 'summary.json'}"
    )
    return summary
