"""What the recipes attach to their trainer: data tracing (and, later, preemption and curves).

Data tracing, on when the environment sets POSTTRAIN_DIST_TRACE_DATA=1, records a fingerprint of
every training example each rank collates, in `output_dir/data_trace/rank{R}.jsonl` (one line per
batch). The distributed tests read it to show that ranks see different examples and that an epoch
sees each example once.
"""

from __future__ import annotations

import hashlib
import json
import os


def fingerprint(example: dict) -> str:
    """A short hash of an example's token ids (or of its prompt, before tokenization)."""
    key = example.get("input_ids") or example.get("prompt_ids") or example.get("prompt")
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TracingCollator:
    """Wraps a data collator: records the fingerprints of each batch, then collates as before."""

    def __init__(self, collator, path: str):
        self.collator = collator
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def __call__(self, examples):
        with open(self.path, "a") as f:
            f.write(json.dumps([fingerprint(e) for e in examples]) + "\n")
        return self.collator(examples)


def attach(trainer, args) -> None:
    """Add posttrain-dist's run features to a trainer built by a recipe."""
    if os.environ.get("POSTTRAIN_DIST_TRACE_DATA") == "1":
        rank = trainer.accelerator.process_index
        path = os.path.join(args.training.output_dir, "data_trace", f"rank{rank}.jsonl")
        trainer.data_collator = TracingCollator(trainer.data_collator, path)
