"""Recipe arguments: trl's own dataclasses and the few fields of ours. Configuration only.

A recipe is configured by one YAML file and command-line flags (`parsing`). Every field of trl's
`SFTConfig` / `DPOConfig` / `GRPOConfig` (and so of transformers' `TrainingArguments`) and of trl's
`ModelConfig` is accepted, plus the fields below. Each dataclass checks only its own values
(`__post_init__`, with the fix in the message); checks that need the data, the model, the rewards,
the machine or the output folder are the explicit step in `checks`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import trl

from . import limits
from .errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"


def _field(default, help: str, **metadata):
    """A dataclass field with its help text (shown by --help and `posttrain-dist plan`)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class RecipeArgs:
    """Fields of posttrain-dist itself: where the data comes from, the chat template, what to write."""

    dataset_name: str | None = _field(
        None,
        "A hub dataset name, a local data file (.json, .jsonl, .parquet, .csv) or folder, or a data set "
        "shipped with posttrain-dist as `builtin:NAME`.",
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = _field(None, "Split to evaluate on, when the data set has one.")
    dataset_columns: dict | str | None = _field(
        None,
        "Rename columns of `dataset_name` before its layout is recognised: {source: target}, e.g. "
        "{question: prompt} for openai/gsm8k. On the command line: question=prompt,answer=completion.",
    )
    dataset_mixture: list[dict] | None = _field(
        None,
        "Weighted mixture instead of `dataset_name` (YAML only): a list of {path, weight, split, name, "
        "data_files, columns}. `weight` is the share of that data set's rows to take (2.0 repeats it twice); "
        "`columns` is a list (keep only these) or a mapping {source: target} (rename).",
    )
    eval_split_size: float | None = _field(None, "Hold out this many training rows for evaluation: a fraction (0 < x < "
                                                 "1) or a row count (alignment-handbook's `test_split_size`).")
    dataset_mixture_seed: int | None = _field(None, "Seed of the mixture's sampling and of `eval_split_size` (default: "
                                                    "`seed`).")
    dataset_prompt_column: str = _field("prompt", "The column that holds the prompt (open-r1's field): read as `prompt`.")
    system_prompt: str | None = _field(None, "A system message put before every prompt (open-r1's field; SFT and GRPO), "
                                             "unless the row has a system message of its own.")
    multi_turn: str = _field(
        "auto",
        "SFT on conversations: `one_pass` trains each conversation once, every assistant turn in the loss (masks computed "
        "from the rendered turns); `per_turn` makes one example per assistant turn (its prompt: every turn before it); "
        "`auto` is one_pass where the template renders earlier turns unchanged, per_turn where it rewrites them (Qwen3 "
        "drops earlier reasoning).", choices=["auto", "one_pass", "per_turn"])
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training rows (after mixing and shuffling)."}
    )
    chat_template: str | None = _field(
        None,
        "None keeps the tokenizer's own template (a model without one gets `simple`). Otherwise a name "
        "(`simple`, `chatml`), a path to a .jinja file, or a Jinja template string.",
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "LoRA/QLoRA: also save the adapter merged into its base, in full precision, under merged/."},
    )
    eval_prompts: list[str] | None = field(
        default=None,
        metadata={"help": "Questions asked before and after training (greedy); the answers go into the report."},
    )
    eval_max_new_tokens: int = field(default=64, metadata={"help": "Token budget for each before/after answer."})
    eval_tasks: list[str] | None = _field(
        None,
        "lm-evaluation-harness tasks run before and after training (report.md, evaluation.json): names from its "
        "registry (arc_easy, hellaswag, ...) or paths to task YAML files (a YAML over a local JSONL, for offline "
        "clusters). `posttrain-dist eval` runs the same on any model.",
    )
    eval_tasks_limit: int | None = _field(None, "Rows per lm-eval task (lm-eval's `limit`); all by default.")
    auto_resume: bool = _field(
        True,
        "Resume from the newest complete checkpoint in output_dir (a requeued job continues where it "
        "stopped). Incomplete checkpoints are removed first.",
    )
    perplexity_dataset: str | None = _field(
        None,
        "Data (any source, SFT formats) whose answers' perplexity is measured before and after training: "
        "a check that general ability survives. Uses its `test` split when it has one.",
    )
    served_check: bool = _field(True, "After the run, where vLLM is installed: the saved (or merged) model served by "
                                      "vLLM answers a few prompts greedily as the trained one does in transformers "
                                      "(report.md says so, or that vLLM is not installed).")
    callbacks: list[str] | None = _field(
        None,
        "Trainer callbacks of your own, as `package.module:Name` (a TrainerCallback class or instance), "
        "added to the trainer of the run.",
    )
    general_questions: str | None = _field(
        None,
        "Simple questions with accepted answers (`prompt`, `accept` columns; e.g. builtin:simple-questions) "
        "asked before and after training: the share answered right, next to perplexity.",
    )
    overwrite_output_dir: bool = _field(
        False,
        "Replace another run found in output_dir (its checkpoints and outputs are deleted when training "
        "starts). Without it such a folder is refused; the same run (same config) always resumes.",
    )

    def __post_init__(self):
        limits.check(self)
        _unset(self, "dataset_test_split", "dataset_config", "perplexity_dataset", "general_questions")
        if self.eval_tasks is not None and not all(isinstance(t, str) and t.strip() for t in self.eval_tasks):
            raise ConfigError(f"`eval_tasks` must be a list of lm-eval task names or task files; got {self.eval_tasks!r}.")
        self.dataset_columns = _column_mapping(self.dataset_columns, "dataset_columns")
        if self.eval_split_size is not None and self.eval_split_size >= 1 and self.eval_split_size != int(self.eval_split_size):
            raise ConfigError(f"`eval_split_size` is a fraction below 1 or a whole number of rows; got {self.eval_split_size}.")
        if self.dataset_name and self.dataset_mixture:
            raise ConfigError(
                "both `dataset_name` and `dataset_mixture` are set; keep one (a mixture may list the same data set)."
            )
        if self.dataset_mixture is not None:
            if not isinstance(self.dataset_mixture, list) or not self.dataset_mixture:
                raise ConfigError("`dataset_mixture` must be a non-empty list of {path, weight, ...} entries.")
            allowed = {"path", "weight", "split", "name", "data_files", "data_dir", "columns", "eval"}
            for i, part in enumerate(self.dataset_mixture):
                if not isinstance(part, dict) or "path" not in part:
                    raise ConfigError(f"`dataset_mixture[{i}]` must be a mapping with at least a `path`; got {part!r}.")
                extra = set(part) - allowed
                if extra:
                    raise ConfigError(
                        f"`dataset_mixture[{i}]` has unknown keys {sorted(extra)}; allowed: {sorted(allowed)}."
                    )
                columns = part.get("columns")
                if columns is not None and not isinstance(columns, list):
                    part["columns"] = _column_mapping(columns, f"dataset_mixture[{i}].columns")
                weight = part.get("weight", 1.0)
                if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1000:
                    raise ConfigError(f"`dataset_mixture[{i}].weight` must be a number in [0, 1000] (the share of "
                                      f"its rows to take; 2.0 repeats them twice); got {weight!r}.")


def _unset(values, *names: str) -> None:
    """`--dataset_test_split none` (or null, or an empty string) unsets a value a preset set."""
    for name in names:
        value = getattr(values, name)
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            setattr(values, name, None)


def _column_mapping(value, what: str) -> dict | None:
    """{source: target} from a mapping, JSON text, or `a=b,c=d` (the command line's form)."""
    if value is None or isinstance(value, dict):
        mapping = value
    elif isinstance(value, str) and value.strip().startswith("{"):
        import json

        try:
            mapping = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"`{what}` is not a JSON mapping: {value!r}; write question=prompt,answer=completion.") from None
    elif isinstance(value, str):
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ConfigError(f"`{what}` must map columns, e.g. question=prompt,answer=completion; got {value!r}.")
        mapping = {a.strip(): b.strip() for a, b in pairs}
    else:
        raise ConfigError(f"`{what}` must be a mapping {{source: target}}; got {value!r}.")
    if mapping is not None and not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in mapping.items()):
        raise ConfigError(f"`{what}` must map column names to column names; got {mapping!r}.")
    return mapping or None


@dataclass
class ModelArgs(trl.ModelConfig):
    """trl's ModelConfig with our defaults: the default model and LoRA on all linear layers."""

    model_name_or_path: str | None = _field(
        DEFAULT_MODEL,
        f"Short name ({DEFAULT_MODEL}, tiny-random-llama), local folder, or hub model id. "
        "See `posttrain-dist models`.",
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: "all-linear",  # a factory so that HfArgumentParser passes it on
        metadata={"help": "Modules LoRA adapts; `all-linear` (default) adapts every linear layer but the output head."},
    )

    def __post_init__(self):
        limits.check(self)
        if self.load_in_8bit and self.load_in_4bit:
            raise ConfigError("`load_in_4bit` and `load_in_8bit` are both set; choose one (QLoRA uses 4-bit).")
        super().__post_init__()
        if (self.load_in_4bit or self.load_in_8bit) and not self.use_peft:
            raise ConfigError(
                "quantized weights (`load_in_4bit`/`load_in_8bit`) cannot be trained directly; set `use_peft: true` "
                "to train LoRA adapters on the quantized base (QLoRA), or drop the quantization for full training."
            )
        if self.dtype not in (None, "auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"`dtype` must be one of auto, float32, bfloat16, float16; got {self.dtype!r}.")


@dataclass
class RunDefaults:
    """Defaults shared by the three methods' training arguments (the machine's own, such as training on the CPU
    in float32 where there is no GPU, are set by `parsing` from the environment)."""

    report_to: None | str | list[str] = _field(
        "tensorboard",
        "Where the logged metrics go besides metrics.json and the PNG curves: tensorboard (default, under "
        "output_dir/runs), wandb, trackio, all, or none.",
    )
    ddp_timeout: int = _field(
        7200,
        "Seconds a collective may wait (transformers: 1800). Ranks wait while rank 0 tokenizes or "
        "curates data; a dead node still ends the job through the launcher, not through this timeout.",
    )

    def __post_init__(self):
        limits.check(self)  # before trl's and transformers' own checks, which loop or allocate on absurd values
        super().__post_init__()


def planned_for(training_cls: type, world_size: int) -> type:
    """The training arguments' class as seen by a run of `world_size` processes: trl's batch checks (and the
    generation batch it derives) count those processes instead of this one's (`posttrain-dist plan`, `launch`)."""
    return type(training_cls.__name__, (training_cls,), {"world_size": property(lambda self: world_size)})


@dataclass
class Args:
    """The parsed arguments of one recipe run, and the environment they were checked for."""

    method: str
    recipe: Any
    model: ModelArgs
    training: Any
    sources: dict[str, str]  # field name -> "default", "file" or "command line"
    config_path: str | None = None
    env: Any = None  # environment.Environment: device, processes, distributed kind
    exported: dict = field(default_factory=dict)  # what the config's `env:` block set in the environment
    migrated: list = field(default_factory=list)  # keys read under today's names (migrate.Change)
    push: dict | None = None  # `push_to_hub`, held back from the trainer: pushed once at the end (hub.py)

    def resolved(self) -> dict[str, Any]:
        """Every field with its final value, as plain YAML-safe data (the run's resolved config)."""
        values = {}
        values.update(_plain(dataclasses.asdict(self.recipe)))
        values.update(_plain(dataclasses.asdict(self.model)))
        training = self.training.to_dict()
        values.update(_plain({k: v for k, v in training.items() if k in field_names(type(self.training))}))
        if self.push is not None:  # what the user asked for, not the trainer's copy
            values["push_to_hub"] = True
        return values


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "value"):  # enums
        return _plain(value.value)
    return str(value)


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]
