"""Training curves as one PNG per run (`curves.png` in the output folder), drawn from the logged history.

Each method gets the panels its users look at: SFT the loss and learning rate; DPO the loss,
reward margins and preference accuracy; GRPO the mean reward per reward function, its spread,
and the completion length.
"""

from __future__ import annotations

import math
import os
import re

# method -> panels: (title, y label, [(metric key or regex over keys, line label)])
PANELS = {
    "sft": [
        ("loss", "cross-entropy on response tokens", [("loss", "train"), ("eval_loss", "eval")]),
        ("learning rate", "lr", [("learning_rate", "lr")]),
        ("token accuracy", "share of response tokens predicted", [("mean_token_accuracy", "train"),
                                                                  ("eval_mean_token_accuracy", "eval")]),
        ("gradient norm", "norm before clipping", [("grad_norm", "grad norm")]),
    ],
    "dpo": [
        ("loss", "DPO loss", [("loss", "train"), ("eval_loss", "eval")]),
        ("reward margin", "beta * (chosen - rejected) log-ratio", [("rewards/margins", "margin")]),
        ("preference accuracy", "share of pairs with chosen > rejected", [("rewards/accuracies", "accuracy")]),
        ("implicit rewards", "beta * log-ratio to the reference", [("rewards/chosen", "chosen"),
                                                                    ("rewards/rejected", "rejected")]),
        ("learning rate", "lr", [("learning_rate", "lr")]),
    ],
    "grpo": [
        ("mean reward", "reward per completion", [("reward", "total (weighted)"),
                                                  (r"re:rewards/(.+)/mean$", "{}")]),
        ("reward spread", "standard deviation", [("reward_std", "within groups"), (r"re:rewards/(.+)/std$", "{}")]),
        ("completion length", "tokens", [("completions/mean_length", "mean"), ("completions/min_length", "min"),
                                         ("completions/max_length", "max")]),
        ("loss", "GRPO loss", [("loss", "train")]),
        ("learning rate", "lr", [("learning_rate", "lr")]),
    ],
}


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


def plot(history: list[dict], method: str, path: str, title: str = "") -> list[str]:
    """Write the method's panels as one PNG; returns the titles of the panels that had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, ylabel, _lines(history, spec)) for name, ylabel, spec in PANELS[method]]
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
    figure.suptitle(title or f"{method.upper()} training curves")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    figure.savefig(tmp, dpi=90)  # then renamed over `path`: a link planted there is replaced, not written through
    os.replace(tmp, path)
    plt.close(figure)
    return [panel[0] for panel in panels]
