"""The valid range of every number a recipe config holds, checked before anything loads.

`check(values)` runs first in each config dataclass's `__post_init__` (before trl's and transformers'
own, which loop or allocate on absurd values): every float must be finite, every number within
`MAGNITUDE`, and the fields in `RANGES` within theirs. A value out of range is one line naming the
field, the value and the range. Lists of numbers (`reward_weights`, `loss_weights`) are checked item
by item. Fields where a string would be split into characters are listed in `TEXT_LISTS`.
"""

from __future__ import annotations

import math

from .errors import ConfigError

MAGNITUDE = 10**9  # no count, length, step or size in a post-training config comes near this
BIG = 10**7  # sequence lengths and token budgets
# field: (low, high, low is excluded, high is excluded); None: no bound on that side
RANGES: dict[str, tuple] = {
    # the optimizer and schedule
    "learning_rate": (0, 10, True, False),
    "weight_decay": (0, 10, False, False),
    "adam_beta1": (0, 1, False, True),
    "adam_beta2": (0, 1, False, True),
    "adam_epsilon": (0, 1, True, False),
    "max_grad_norm": (0, 1e6, False, False),
    "warmup_steps": (0, MAGNITUDE, False, False),
    "label_smoothing_factor": (0, 1, False, True),
    # how much and how long
    "per_device_train_batch_size": (1, 65536, False, False),
    "per_device_eval_batch_size": (1, 65536, False, False),
    "gradient_accumulation_steps": (1, 65536, False, False),
    "num_train_epochs": (0, 1e5, True, False),
    "max_steps": (-1, MAGNITUDE, False, False),  # -1: count epochs instead; 0 is refused below
    "logging_steps": (0, MAGNITUDE, True, False),
    "save_steps": (0, MAGNITUDE, True, False),
    "eval_steps": (0, MAGNITUDE, True, False),
    "save_total_limit": (1, 10**6, False, False),
    "seed": (0, 2**32 - 1, False, False),
    "data_seed": (0, 2**32 - 1, False, False),
    "dataloader_num_workers": (0, 256, False, False),
    "dataset_num_proc": (1, 1024, False, False),
    "ddp_timeout": (1, 10**7, False, False),
    "max_length": (1, BIG, False, False),
    "max_prompt_length": (1, BIG, False, False),
    "max_completion_length": (1, BIG, False, False),
    "precompute_ref_batch_size": (1, 65536, False, False),
    # LoRA
    "lora_r": (1, 65536, False, False),
    "lora_alpha": (0, 1e6, True, False),
    "lora_dropout": (0, 1, False, True),
    # preference and RL losses
    "beta": (0, 1e3, False, False),  # DPO asks > 0 itself; GRPO's 0 turns the KL term off
    "label_smoothing": (0, 0.5, False, False),
    "rpo_alpha": (0, 1e3, False, False),
    "num_generations": (2, 4096, False, False),
    "num_generations_eval": (1, 4096, False, False),
    "generation_batch_size": (1, BIG, False, False),
    "steps_per_generation": (1, 65536, False, False),
    "num_iterations": (1, 1000, False, False),
    "temperature": (0, 100, True, False),
    "top_p": (0, 1, True, False),
    "top_k": (0, 10**6, False, False),
    "min_p": (0, 1, False, False),
    "repetition_penalty": (0, 100, True, False),
    "epsilon": (0, 100, False, False),
    "epsilon_high": (0, 100, False, False),
    "vllm_gpu_memory_utilization": (0, 1, True, False),
    "vllm_tensor_parallel_size": (1, 1024, False, False),
    "vllm_server_port": (1, 65535, False, False),
    "vllm_group_port": (1, 65535, False, False),
    "max_tool_calling_iterations": (1, 1000, False, False),
    "top_entropy_quantile": (0, 1, False, False),
    # ours
    "eval_split_size": (0, MAGNITUDE, True, False),  # a fraction below 1, a row count from 1
    "max_train_samples": (1, MAGNITUDE, False, False),
    "eval_max_new_tokens": (1, 32768, False, False),
    "identity_max_new_tokens": (1, 32768, False, False),
    "identity_samples_per_prompt": (1, 1000, False, False),
    "identity_temperature": (0, 100, True, False),
    "identity_contrast_ratio": (0, 1000, False, False),
    "reward_eval_size": (0, 10**6, False, False),
    "eval_tasks_limit": (1, MAGNITUDE, False, False),
}
# what a value means, where a range alone does not say it
HINTS = {"eval_split_size": " (a fraction of the training rows, e.g. 0.1, or a count of rows)", "max_steps": " (-1: train num_train_epochs)",
         "warmup_steps": " (below 1: a fraction of the steps)", "beta": " (the course uses 0.1 to 0.2 for DPO)",
         "learning_rate": " (1e-6 to 5e-5 is usual for full training, 5e-5 to 5e-4 for LoRA)"}
# list[str] fields: a single string there is a mistake a YAML file makes easily (`eval_prompts: What is 2+2?`)
TEXT_LISTS = ("eval_prompts", "reward_funcs", "callbacks", "identity_old_names", "eval_tasks", "tools")
EVAL_PROMPT_CHARS, EVAL_PROMPTS = 20_000, 1_000


def _range_text(low, high, low_open, high_open) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    return f"{left}{low:g}, {high:g}{right}"


def number_problem(name: str, value) -> str | None:
    """What is wrong with the number `value` of field `name`, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"`{name}` must be a finite number; got {value}"
    if name in RANGES:
        low, high, low_open, high_open = RANGES[name]
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            return f"`{name}` must be in {_range_text(low, high, low_open, high_open)}{HINTS.get(name, '')}; got {value:g}"
    elif abs(value) > MAGNITUDE and name not in ("seed", "data_seed"):
        return f"`{name}` is {value:g}, beyond any sane value (at most {MAGNITUDE:g} in size)"
    return None


def check(values, names=None) -> None:
    """Refuse out-of-range numbers (and strings where a list of strings belongs) among the fields of `values`."""
    import dataclasses

    names = names or [f.name for f in dataclasses.fields(values) if f.init]
    for name in names:
        value = getattr(values, name, None)
        if name in TEXT_LISTS and isinstance(value, str):
            raise ConfigError(f"`{name}` must be a list (in YAML, `{name}: [\"...\"]` or one `- item` per line); got the "
                              f"string {value[:60]!r}, which would be read one character at a time.")
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            problem = number_problem(name, item)
            if problem:
                raise ConfigError(problem + ".")
    if getattr(values, "max_steps", None) == 0:
        raise ConfigError("`max_steps: 0` trains nothing; give the number of optimizer steps, or -1 to train "
                          "`num_train_epochs` epochs.")
    prompts = getattr(values, "eval_prompts", None)
    if isinstance(prompts, list):
        if len(prompts) > EVAL_PROMPTS:
            raise ConfigError(f"`eval_prompts` has {len(prompts)} prompts; at most {EVAL_PROMPTS} are asked before and "
                              "after training (use `perplexity_dataset` or an evaluation split for more).")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > EVAL_PROMPT_CHARS:
                raise ConfigError(f"`eval_prompts[{i}]` must be a question of 1 to {EVAL_PROMPT_CHARS} characters; got "
                                  f"{str(prompt)[:60]!r}" + (f" ({len(prompt)} characters)" if isinstance(prompt, str)
                                                             else "") + ".")
