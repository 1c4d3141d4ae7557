"""Recipe arguments: trl's own dataclasses, a few fields of ours, YAML + command line, validation.

A recipe is configured by one YAML file (`--config`) and command-line flags that override it
(`--learning_rate 1e-4`). Every field of trl's `SFTConfig` / `DPOConfig` / `GRPOConfig` (and so of
transformers' `TrainingArguments`) and of trl's `ModelConfig` is accepted, plus `RecipeArgs`
below. Unknown keys are errors with a "did you mean". Everything is checked here, before any
data or model is loaded and before the output folder exists.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import enum
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import trl
import yaml

from .errors import ConfigError, warn
from . import data, launching, modeling
from .modeling import DEFAULT_MODEL


@dataclass
class RecipeArgs:
    """Fields of posttrain-dist itself: where the data comes from, the chat template, what to write."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A hub dataset name, a local data file (.json, .jsonl, .parquet, .csv) or folder, or a data set "
            "shipped with posttrain-dist as `builtin:NAME`."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on, when the data set has one."}
    )
    dataset_mixture: list[dict] | None = field(
        default=None,
        metadata={
            "help": "Weighted mixture instead of `dataset_name` (YAML only): a list of {path, weight, split, name, "
            "data_files, columns}. `weight` is the share of that data set's rows to take (2.0 repeats it twice)."
        },
    )
    eval_split_size: float | None = field(
        default=None,
        metadata={"help": "Hold out this fraction of the training rows for evaluation (0 < x < 1)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training rows (after mixing and shuffling)."}
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "None keeps the tokenizer's own template (a model without one gets `simple`). Otherwise a name "
            "(`simple`, `chatml`), a path to a .jinja file, or a Jinja template string."
        },
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
    auto_resume: bool = field(
        default=True,
        metadata={
            "help": "Resume from the newest complete checkpoint in output_dir (a requeued job continues where it "
            "stopped). Incomplete checkpoints are removed first."
        },
    )
    perplexity_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Data (any source, SFT formats) whose answers' perplexity is measured before and after training: "
            "a check that general ability survives. Uses its `test` split when it has one."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace another run found in output_dir (its checkpoints and outputs are deleted when training "
            "starts). Without it such a folder is refused; the same run (same config) always resumes."
        },
    )

    def __post_init__(self):
        if self.dataset_name and self.dataset_mixture:
            raise ConfigError(
                "both `dataset_name` and `dataset_mixture` are set; keep one (a mixture may list the same data set)."
            )
        if self.dataset_mixture is not None:
            if not isinstance(self.dataset_mixture, list) or not self.dataset_mixture:
                raise ConfigError("`dataset_mixture` must be a non-empty list of {path, weight, ...} entries.")
            allowed = {"path", "weight", "split", "name", "data_files", "columns"}
            for i, part in enumerate(self.dataset_mixture):
                if not isinstance(part, dict) or "path" not in part:
                    raise ConfigError(f"`dataset_mixture[{i}]` must be a mapping with at least a `path`; got {part!r}.")
                extra = set(part) - allowed
                if extra:
                    raise ConfigError(
                        f"`dataset_mixture[{i}]` has unknown keys {sorted(extra)}; allowed: {sorted(allowed)}."
                    )
                weight = part.get("weight", 1.0)
                if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
                    raise ConfigError(f"`dataset_mixture[{i}].weight` must be a positive number; got {weight!r}.")
        if self.eval_split_size is not None and not 0 < self.eval_split_size < 1:
            raise ConfigError(f"`eval_split_size` must be between 0 and 1 (a fraction); got {self.eval_split_size}.")
        if self.max_train_samples is not None and self.max_train_samples <= 0:
            raise ConfigError(f"`max_train_samples` must be positive; got {self.max_train_samples}.")


@dataclass
class ModelArgs(trl.ModelConfig):
    """trl's ModelConfig with our defaults: the default model and LoRA on all linear layers."""

    model_name_or_path: str | None = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": f"Short name ({DEFAULT_MODEL}, tiny-random-llama), local folder, or hub model id. "
            "See `posttrain-dist models`."
        },
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: "all-linear",  # a factory so that HfArgumentParser passes it on
        metadata={"help": "Modules LoRA adapts; `all-linear` (default) adapts every linear layer but the output head."},
    )

    def __post_init__(self):
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
        if self.use_peft and self.lora_r <= 0:
            raise ConfigError(f"`lora_r` must be positive; got {self.lora_r}.")


# Set by `parse(..., target_has_gpus=True)`: validate for the GPU machine a config is meant for (a cluster
# preset checked on a laptop, `posttrain-dist plan`), not for the machine doing the checking.
_TARGET_HAS_GPUS = contextvars.ContextVar("target_has_gpus", default=False)
# Set by `parse(..., world_size=N)`: check batch arithmetic for N processes (a plan), not this process's.
_WORLD_SIZE = contextvars.ContextVar("world_size", default=None)


def _world_size() -> int:
    return _WORLD_SIZE.get() or int(os.environ.get("WORLD_SIZE", "1"))


def _target_has_gpus() -> bool:
    return _TARGET_HAS_GPUS.get() or _has_accelerator()


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available()


@dataclass
class _RunDefaults:
    """Defaults shared by the three methods' training arguments.

    On a machine without an accelerator, train on the CPU in float32 instead of failing on bf16:
    trl turns bf16 on by default, and transformers then refuses to start on a CPU unless `use_cpu`
    is set. An explicit `bf16: true` is kept (bf16 autocast works on CPU, just slowly). Several CPU
    processes talk over gloo.
    """

    report_to: None | str | list[str] = field(
        default="tensorboard",
        metadata={
            "help": "Where the logged metrics go besides metrics.json and the PNG curves: tensorboard (default, under "
            "output_dir/runs), wandb, trackio, all, or none."
        },
    )
    ddp_timeout: int = field(
        default=7200,
        metadata={
            "help": "Seconds a collective may wait (transformers: 1800). Ranks wait while rank 0 tokenizes or "
            "curates data; a dead node still ends the job through the launcher, not through this timeout."
        },
    )

    def __post_init__(self):
        if self.save_total_limit == 1:
            raise ConfigError(
                "`save_total_limit: 1` can delete the last complete checkpoint just before a crash leaves the new "
                "one unfinished; keep at least 2 (`save_total_limit: 2`)."
            )
        if not _has_accelerator():  # (also when validating for GPUs from a CPU machine: transformers checks this one)
            self.use_cpu = True
            if self.bf16 is None:
                self.bf16 = False
            if self.use_cpu and self.ddp_backend is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                self.ddp_backend = "gloo"
        super().__post_init__()


@dataclass
class SFTArgs(_RunDefaults, trl.SFTConfig):
    """trl's SFTConfig (all of it), with the CPU handled."""


@dataclass
class DPORecipeArgs(RecipeArgs):
    """DPO adds the course's identity example: pairs curated from the model's own answers."""

    identity_new_name: str | None = field(
        default=None,
        metadata={
            "help": "Change the model's stated identity to this name: the recipe asks the model the identity prompts, "
            "takes its answers as rejected and corrected ones as chosen (no `dataset_name` needed), and reports the "
            "share of held-out identity prompts answered with the new name, before and after."
        },
    )
    identity_old_names: list[str] = field(
        default_factory=lambda: ["SmolLM2", "SmolLM"],
        metadata={"help": "Names of the old identity, replaced by the new one in the chosen answers."},
    )
    identity_prompts: str = field(
        default="builtin:identity",
        metadata={"help": "Identity questions: the `train` split is curated, the `test` split is held out."},
    )
    identity_samples_per_prompt: int = field(
        default=1, metadata={"help": "Answers per prompt: 1 is greedy, more are sampled at `identity_temperature`."}
    )
    identity_temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of the curated answers."})
    identity_max_new_tokens: int = field(default=48, metadata={"help": "Token budget of each curated answer."})
    identity_identical_pairs: str = field(
        default="rewrite",
        metadata={
            "help": "A corrected answer that equals the model's own teaches nothing: `rewrite` makes it state the new "
            "name, `drop` removes the pair. Both are counted in the log.",
            "choices": ["rewrite", "drop"],
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.identity_new_name is not None:
            if not self.identity_new_name.strip():
                raise ConfigError("`identity_new_name` is empty; give the new name, or leave it unset for plain DPO.")
            if self.dataset_name or self.dataset_mixture:
                raise ConfigError(
                    "`identity_new_name` curates its own pairs from the model; remove `dataset_name`/`dataset_mixture`, "
                    "or unset `identity_new_name` to train on your own preference data."
                )
            if self.identity_samples_per_prompt < 1:
                raise ConfigError(f"`identity_samples_per_prompt` must be at least 1; got {self.identity_samples_per_prompt}.")


@dataclass
class DPOArgs(_RunDefaults, trl.DPOConfig):
    """trl's DPOConfig (all of it), with the CPU handled; beta stays in the course's 0.1 to 0.2 range."""

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ConfigError(f"`beta` must be positive (the course uses 0.1 to 0.2); got {self.beta}.")


@dataclass
class GRPORecipeArgs(RecipeArgs):
    """GRPO adds the rewards, the prompt length limit and the held-out reward check."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["math_answer"],
        metadata={
            "help": "Rewards by registry name (see posttrain_dist.rewards.REWARDS) or `package.module:function`; "
            "weigh them with trl's `reward_weights`."
        },
    )
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "Prompts longer than this many tokens are dropped, and counted, before training."}
    )
    reward_eval_size: int = field(
        default=100,
        metadata={"help": "Held-out prompts (the test split) answered greedily and scored before and after training."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.reward_funcs:
            raise ConfigError("`reward_funcs` is empty; GRPO learns from at least one reward.")
        if self.max_prompt_length is not None and self.max_prompt_length <= 0:
            raise ConfigError(f"`max_prompt_length` must be positive; got {self.max_prompt_length}.")


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


@dataclass
class GRPOArgs(_RunDefaults, trl.GRPOConfig):
    """trl's GRPOConfig (all of it), with the CPU handled and the batch arithmetic explained."""

    @property
    def world_size(self) -> int:
        # trl checks the generation batch against the world size too: the planned one while planning or launching
        return _WORLD_SIZE.get() or super().world_size

    def __post_init__(self):
        processes = _world_size()
        per_step = self.per_device_train_batch_size * processes
        steps = self.steps_per_generation or self.gradient_accumulation_steps
        batch = self.generation_batch_size or per_step * steps
        if self.num_generations < 2:
            raise ConfigError(f"`num_generations` must be at least 2 (GRPO compares answers to one prompt); got {self.num_generations}.")
        if batch % self.num_generations:
            how = (f"generation_batch_size {batch}" if self.generation_batch_size else
                   f"per_device_train_batch_size {self.per_device_train_batch_size} x {processes} process(es) x "
                   f"{steps} step(s) per generation = {batch} completions")
            good_batches = [b for b in range(1, 9 * self.num_generations) if (b * processes * steps) % self.num_generations == 0][:4]
            raise ConfigError(
                f"each generation batch must hold whole groups of `num_generations` answers, but {how} does not divide "
                f"by num_generations {self.num_generations}. Use num_generations in {_divisors(batch)}, or "
                f"per_device_train_batch_size in {good_batches} (keeping the rest)."
            )
        if self.use_vllm and not _target_has_gpus():
            raise ConfigError("`use_vllm: true` needs GPUs; on a CPU leave it off and trl generates with transformers.")
        super().__post_init__()


METHODS: dict[str, tuple[type, type]] = {
    "sft": (RecipeArgs, SFTArgs),
    "dpo": (DPORecipeArgs, DPOArgs),
    "grpo": (GRPORecipeArgs, GRPOArgs),
}


@dataclass
class Args:
    """The parsed arguments of one recipe run."""

    method: str
    recipe: Any
    model: ModelArgs
    training: Any
    sources: dict[str, str]  # field name -> "default", "file" or "command line"
    config_path: str | None = None

    def resolved(self) -> dict[str, Any]:
        """Every field with its final value, as plain YAML-safe data (the run's resolved config)."""
        values = {}
        values.update(_plain(dataclasses.asdict(self.recipe)))
        values.update(_plain(dataclasses.asdict(self.model)))
        training = self.training.to_dict()
        values.update(_plain({k: v for k, v in training.items() if k in _field_names(type(self.training))}))
        return values


def field_helps(method: str) -> dict[str, str]:
    """Each field's help text, for `posttrain-dist plan`."""
    helps = {}
    for cls in (METHODS[method][0], ModelArgs, METHODS[method][1]):
        for f in dataclasses.fields(cls):
            helps.setdefault(f.name, str(f.metadata.get("help", "")).strip())
    return helps


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


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


class _Parser(trl.TrlParser):
    """TrlParser whose errors raise ConfigError instead of printing the whole usage and exiting."""

    def error(self, message):
        raise ConfigError(message)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return "run the recipe with --help to list every key."


def _unwrap_optional(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _type_ok(value, hint) -> bool:
    """Does a YAML value fit a dataclass field's type hint? Strings are left to argparse's conversion, except
    where the field takes only numbers (YAML reads `1e-5` as a string; `fast` is no number)."""
    if value is None:
        return True
    if isinstance(value, str):
        numeric = [o for o in _unwrap_optional(hint) if o in (int, float)]
        if numeric and len(numeric) == len(_unwrap_optional(hint)):
            try:
                float(value)
            except ValueError:
                return False
        return True
    for option in _unwrap_optional(hint):
        origin = typing.get_origin(option) or option
        if origin is typing.Any:
            return True
        if origin is typing.Literal:
            if value in typing.get_args(option):
                return True
            continue
        if origin is bool and isinstance(value, bool):
            return True
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if origin in (list, tuple) and isinstance(value, list):
            return True
        if origin is dict and isinstance(value, dict):
            return True
        if isinstance(origin, type) and not isinstance(value, bool) and isinstance(value, origin):
            return True
        if isinstance(origin, type) and issubclass(origin, enum.Enum):
            return True
    return False


def _describe(hint) -> str:
    names = []
    for option in _unwrap_optional(hint):
        names.append(getattr(option, "__name__", str(option)))
    return " or ".join(names)


def parse(method: str, argv: list[str] | None = None, target_has_gpus: bool = False,
          accelerate_config: str | None = None, world_size: int | None = None) -> Args:
    """Parse `--config FILE` plus command-line overrides into validated dataclasses; load nothing.

    `target_has_gpus` validates for the GPU machines a config is meant for, from any machine;
    `accelerate_config` for the distributed setup of that file instead of this process's.
    """
    token = _TARGET_HAS_GPUS.set(target_has_gpus)
    world = _WORLD_SIZE.set(world_size)
    try:
        return _parse(method, argv, accelerate_config)
    finally:
        _TARGET_HAS_GPUS.reset(token)
        _WORLD_SIZE.reset(world)


def _parse(method: str, argv: list[str] | None, accelerate_config: str | None = None) -> Args:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    recipe_cls, training_cls = METHODS[method]
    dataclass_types = [recipe_cls, ModelArgs, training_cls]
    argv = list(sys.argv[1:] if argv is None else argv)

    hints: dict[str, Any] = {}
    for cls in dataclass_types:
        cls_hints = typing.get_type_hints(cls)
        for name in _field_names(cls):
            if name in hints:
                raise RuntimeError(f"field {name!r} is defined twice among {dataclass_types}")
            hints[name] = cls_hints[name]
    valid = sorted(hints)

    config_path = None
    file_values: dict[str, Any] = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("`--config` needs a YAML file after it.")
        config_path = argv[i + 1]
        del argv[i : i + 2]
        if not os.path.isfile(config_path):
            raise ConfigError(f"config file {config_path!r} does not exist.")
        with open(config_path) as f:
            try:
                file_values = yaml.safe_load(f) or {}
            except yaml.YAMLError as error:
                raise ConfigError(f"{config_path} is not valid YAML: {error}") from None
        if not isinstance(file_values, dict):
            raise ConfigError(f"{config_path} must hold a mapping of key: value; got {type(file_values).__name__}.")
        for key, value in (file_values.pop("env", None) or {}).items():
            os.environ[str(key)] = str(value)

    problems = []
    for key, value in file_values.items():
        if key not in hints:
            problems.append(f"unknown key '{key}' in {config_path}; {_suggest(key, valid)}")
        elif not _type_ok(value, hints[key]):
            problems.append(
                f"'{key}' in {config_path} should be {_describe(hints[key])}, got {type(value).__name__} {value!r}"
            )

    negatable = {n for n, h in hints.items() if bool in _unwrap_optional(h)}
    cli_keys = []
    for token in argv:
        if not token.startswith("--"):
            continue
        key = token[2:].split("=", 1)[0].replace("-", "_")
        if key == "help":
            continue
        if key.startswith("no_") and key[3:] in negatable:
            key = key[3:]
        if key not in hints:
            problems.append(f"unknown option '--{key}'; {_suggest(key, valid)}")
        cli_keys.append(key)
    if problems:
        raise ConfigError("\n  ".join(["the recipe config has problems:", *problems]))

    parser = _Parser(dataclass_types, allow_abbrev=False)
    parser.set_defaults_with_config(**file_values)
    try:
        recipe, model, training = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ConfigError:
        raise
    except ValueError as error:  # trl's and transformers' own __post_init__ checks
        raise ConfigError(str(error)) from None

    sources = {name: "default" for name in hints}
    sources.update({name: "file" for name in file_values})
    sources.update({name: "command line" for name in cli_keys})
    args = Args(method, recipe, model, training, sources, config_path)
    validate(args, launching.distributed_setup(accelerate_config))
    return args


def validate(args: Args, setup: launching.Setup | None = None) -> None:
    """Checks that need more than one dataclass, the distributed setup, or the file system; nothing is loaded."""
    check_distributed(args, setup or launching.distributed_setup())
    if args.sources["output_dir"] == "default":
        model = os.path.basename(str(args.model.model_name_or_path).rstrip("/"))
        args.training.output_dir = os.path.join("outputs", f"{model}-{args.method}")
    modeling.check_model_reference(args.model.model_name_or_path)
    if getattr(args.recipe, "identity_new_name", None):
        data.check_source(args.recipe.identity_prompts, "identity_prompts")
    else:
        data.check_sources(args.recipe)
    if args.recipe.perplexity_dataset:
        data.check_source(args.recipe.perplexity_dataset, "perplexity_dataset")
    if args.method == "grpo":
        from . import rewards

        for name in args.recipe.reward_funcs:
            rewards.resolve(name)
        weights = args.training.reward_weights
        if weights is not None and len(weights) != len(args.recipe.reward_funcs):
            raise ConfigError(
                f"`reward_weights` has {len(weights)} values for {len(args.recipe.reward_funcs)} rewards "
                f"({args.recipe.reward_funcs}); give one weight per reward."
            )
    template = args.recipe.chat_template
    if template is not None:
        modeling.resolve_chat_template_source(template)
    check_report_to(args.training.report_to)
    differences = run_differences(args)
    if differences and not args.recipe.overwrite_output_dir:
        raise ConfigError(
            f"output_dir {args.training.output_dir!r} holds another run ({differences}); choose a new "
            "`output_dir`, or set `overwrite_output_dir: true` to replace that run. (A run with the same config "
            "resumes from its checkpoints instead.)"
        )
    warn_out_of_range(args)


# Integrations `report_to` may name, and the package each needs.
_REPORTERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow",
              "comet_ml": "comet_ml", "clearml": "clearml", "swanlab": "swanlab", "dvclive": "dvclive"}


def check_report_to(report_to) -> None:
    """Each logger named in `report_to` is known and installed (else the run fails only once the trainer starts)."""
    import importlib.util

    names = [report_to] if isinstance(report_to, str) or report_to is None else list(report_to)
    for name in names:
        if name in (None, "none", "all", "azure_ml", "codecarbon", "neptune", "dagshub", "flyte", "kubeflow"):
            continue
        if name not in _REPORTERS:
            raise ConfigError(f"`report_to` names {name!r}, which is no logger; {_suggest(name, sorted(_REPORTERS))}")
        if importlib.util.find_spec(_REPORTERS[name]) is None:
            raise ConfigError(
                f"`report_to: {name}` needs the {_REPORTERS[name]} package: `pip install {_REPORTERS[name]}` "
                "(then log in if it is a hosted service), or drop it from `report_to`."
            )


# Values that may change between the attempts of one run (bookkeeping, the machine, how long it runs).
_SAME_RUN_IGNORES = {
    "output_dir", "overwrite_output_dir", "auto_resume", "logging_dir", "report_to", "run_name", "ddp_backend",
    "use_cpu", "bnb_4bit_quant_storage", "max_steps", "num_train_epochs", "save_steps", "save_total_limit",
    "logging_steps", "eval_steps", "dataloader_num_workers", "push_to_hub", "hub_model_id", "ddp_timeout",
}
# A folder holding any of these holds a run.
RUN_FILES = ("config.yaml", "model.safetensors", "adapter_model.safetensors", "trainer_state.json")


def run_differences(args: Args) -> str | None:
    """None when output_dir holds no run or the same run; else what differs from the run found there."""
    out = args.training.output_dir
    if not os.path.isdir(out):
        return None
    names = os.listdir(out)
    if not (any(n.startswith("checkpoint-") for n in names) or any(n in names for n in RUN_FILES)):
        return None
    stored_path = os.path.join(out, "config.yaml")
    if not os.path.isfile(stored_path):
        return "model files or checkpoints, but no config.yaml of a posttrain-dist run"
    with open(stored_path) as f:
        stored = yaml.safe_load(f) or {}
    if stored.get("method") != args.method:
        return f"a {stored.get('method')} run, not {args.method}"
    if not args.recipe.auto_resume:
        return "a run with checkpoints, and `auto_resume` is off"
    current = args.resolved()
    changed = [
        f"{key}: {stored.get(key)!r} there, {current.get(key)!r} now"
        for key in sorted(set(current) | (set(stored) - {"method", "config_file", "sources"}))
        if key not in _SAME_RUN_IGNORES and stored.get(key) != current.get(key)
    ]
    if not changed:
        return None
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return "its config differs in " + "; ".join(changed[:3]) + more


# Learning rates beyond these are almost always a typo (1e-3 for 1e-5) rather than a choice.
_LR_RANGES = {"full": (1e-8, 1e-4), "lora": (1e-7, 2e-3)}


def warn_out_of_range(args: Args) -> None:
    kind = "lora" if args.model.use_peft else "full"
    low, high = _LR_RANGES[kind]
    lr = args.training.learning_rate
    if not low <= lr <= high:
        usual = "1e-6 to 5e-5" if kind == "full" else "5e-5 to 5e-4"
        warn(f"learning_rate {lr:g} is outside {low:g} to {high:g}, where {'LoRA' if kind == 'lora' else 'full'} "
             f"{args.method.upper()} runs train ({usual} is usual); check for a typo.")
    if args.method == "dpo" and not 0.01 <= args.training.beta <= 1.0:
        warn(f"DPO beta {args.training.beta:g} is outside 0.01 to 1.0 (the course uses 0.1 to 0.2): a small beta "
             "lets the model drift far from the reference, a large one barely moves it.")


def check_distributed(args: Args, setup: launching.Setup) -> None:
    """Refuse method / quantization / launcher combinations that cannot work, naming the fix."""
    model = args.model
    sharded = (setup.kind == "deepspeed" and setup.zero_stage == 3) or setup.kind == "fsdp"
    if model.load_in_8bit and sharded:
        raise ConfigError(
            f"8-bit weights cannot be sharded under {setup.describe()}; use `load_in_4bit: true` (QLoRA), or "
            "ZeRO-2 / DDP (accelerate_configs/zero2.yaml, ddp.yaml)."
        )
    if model.load_in_4bit and sharded and model.bnb_4bit_quant_storage is None:
        # Sharding flattens parameters into one buffer per dtype: the 4-bit weights must be stored in the
        # dtype of the rest of the model, or ZeRO-3 / FSDP refuse to shard them (PEFT's QLoRA + ZeRO-3 guide).
        model.bnb_4bit_quant_storage = model.dtype if model.dtype not in (None, "auto") else "bfloat16"
        args.sources["bnb_4bit_quant_storage"] = f"set for {setup.describe()}"
    if setup.kind == "deepspeed" and setup.zero_stage == 3 and getattr(args.training, "use_vllm", False) and \
            getattr(args.training, "vllm_mode", None) == "colocate" and not getattr(args.training, "ds3_gather_for_generation", True):
        raise ConfigError("vLLM colocated under ZeRO-3 needs the weights gathered: keep `ds3_gather_for_generation: true`.")
