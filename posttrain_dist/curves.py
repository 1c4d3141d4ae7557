"""Training curves as one PNG per run (`curves.png` in the output folder), drawn from the logged history.

Each method gets the panels its users look at (`methods.Method.panels`): SFT the loss and learning
rate; DPO the loss, reward margins and preference accuracy; GRPO the mean reward per reward function,
its spread, and the completion length.
"""

from __future__ import annotations

import math
import os
import re

def _series(history: list[dict], key: str) -> tuple[list, list]:
    points = [(entry["step"], entry[key]) for entry in history
              if key in entry and isinstance(entry[key], (int, float)) and math.isfinite(entry[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _lines(history: list[dict], spec: list[tuple[str, str]]) -> list[tuple[str, list, list]]:
    keys = sorted({k for entry in history for k in entry})
    lines = []
    for pattern, label in spec:
        if pattern.startswith("re:"):
            for key in keys:
                match = re.match(pattern[3:], key)
                if match:
                    lines.append((label.format(match.group(1)), *_series(history, key)))
        else:
            lines.append((label, *_series(history, pattern)))
    return [line for line in lines if line[1]]


def plot(history: list[dict], panels: list, path: str, title: str = "") -> list[str]:
    """Write a method's panels (`methods.Method.panels`: (title, y label, [(metric key or "re:regex", line label)]))
    as one PNG; returns the titles of the panels that had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, ylabel, _lines(history, spec)) for name, ylabel, spec in panels]
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        return []
    columns = 2
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(11, 3.6 * rows), squeeze=False)
    for ax, (name, ylabel, lines) in zip(axes.flat, panels):
        for label, steps, values in lines:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.suptitle(title or "training curves")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    figure.savefig(tmp, dpi=90)  # then renamed over `path`: a link planted there is replaced, not written through
    os.replace(tmp, path)
    plt.close(figure)
    return [panel[0] for panel in panels]
