"""A trainer callback the GPU kit adds to its runs (`--callbacks gpu_hooks:PeakMemory`): peak GPU memory, and
tokens per second after the first two steps (compilation and allocation warm-up), in output_dir/peak_memory.json."""

import json
import os
import time

from transformers import TrainerCallback


class PeakMemory(TrainerCallback):
    def __init__(self):
        self.marks = []  # (time, tokens seen) at each logged step

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.marks.append((time.perf_counter(), float(logs["num_tokens"])))

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        result = {}
        if torch.cuda.is_available():
            result["peak_allocated_GiB"] = torch.cuda.max_memory_allocated() / 1024**3
            result["peak_reserved_GiB"] = torch.cuda.max_memory_reserved() / 1024**3
        if len(self.marks) > 3:
            (t0, n0), (t1, n1) = self.marks[2], self.marks[-1]
            result["tokens_per_second_after_warmup"] = (n1 - n0) / (t1 - t0) if t1 > t0 else None
        if state.is_world_process_zero:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, "peak_memory.json"), "w") as f:
                json.dump(result, f)
