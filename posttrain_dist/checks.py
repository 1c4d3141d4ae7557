"""The step between parsing and loading: resolve the defaults that depend on more than one value, and refuse
what cannot work, before any data is read, any model loads or the output folder is written.

`resolve_and_check(args)` is what every recipe calls right after `parsing.parse`; `parse()` here does both
for the command line and the tests. The checks that need the data itself (every row, the rewards' gold
answers) come with loading it (`data`, `rewards.check_data`), still before the model.
"""

from __future__ import annotations

import importlib.util
import os

from . import harness, hub, methods, modeling, parsing, references, sources
from .config import Args
from .errors import ConfigError, warn
from .run_folder import RunFolder


def parse(method: str, argv: list[str] | None = None, env=None) -> Args:
    """Parse, resolve and check: a config that passes here is one the recipe would start with."""
    args = parsing.parse(method, argv, env)
    resolve_and_check(args, hold=False)
    return args


def resolve_output_dir(args: Args) -> str:
    """The default output folder: outputs/MODEL-METHOD."""
    if args.sources["output_dir"] == "default":
        model = os.path.basename(str(args.model.model_name_or_path).rstrip("/"))
        args.training.output_dir = os.path.join("outputs", f"{model}-{args.method}")
    return args.training.output_dir


def resolve_and_check(args: Args, hold: bool = True) -> RunFolder:
    """Resolve the defaults that depend on the model or the machine, check everything that spans modules, and
    return the run's output folder: checked and, for a recipe (`hold`), locked for this run, not yet written."""
    env = args.env
    check_distributed(args, env)
    check_packages(args)
    resolve_output_dir(args)
    modeling.check_model_reference(args.model.model_name_or_path)
    method = methods.get(args.method)
    if not method.makes_its_data(args):
        sources.check_sources(args.recipe, args.sources)
    if args.recipe.general_questions:
        sources.check_source(args.recipe.general_questions, "general_questions")
    if args.recipe.perplexity_dataset:
        sources.check_source(args.recipe.perplexity_dataset, "perplexity_dataset")
    for check in method.checks:  # the method's own (rewards, identity prompts, ...)
        check(args)
    if args.recipe.chat_template is not None:
        modeling.resolve_chat_template_source(args.recipe.chat_template)
    for name in args.recipe.callbacks or []:
        references.check(name, "callback")  # exists; imported only when the run starts
    check_report_to(args.training.report_to)
    hub.check(args.push, args.training.output_dir)
    if args.recipe.eval_tasks:
        if not method.shared_evaluators:
            raise ConfigError(f"`eval_tasks` asks a language model; a {args.method} run trains another kind of model: "
                              "drop it (run `posttrain-dist eval` on the policy instead).")
        harness.check(args.recipe.eval_tasks)
    run = RunFolder(args)
    run.check()
    warn_out_of_range(args)
    if hold and not env.planned:
        run.lock()  # one run per folder from here (the main process; released when the recipe ends)
    return run


def check_distributed(args: Args, env) -> None:
    """Refuse method / quantization / launcher combinations that cannot work, naming the fix."""
    model = args.model
    if model.load_in_8bit and env.sharded:
        raise ConfigError(
            f"8-bit weights cannot be sharded under {env.describe()}; use `load_in_4bit: true` (QLoRA), or "
            "ZeRO-2 / DDP (accelerate_configs/zero2.yaml, ddp.yaml)."
        )
    if model.load_in_4bit and env.sharded and model.bnb_4bit_quant_storage is None:
        # Sharding flattens parameters into one buffer per dtype: the 4-bit weights must be stored in the
        # dtype of the rest of the model, or ZeRO-3 / FSDP refuse to shard them (PEFT's QLoRA + ZeRO-3 guide).
        model.bnb_4bit_quant_storage = model.dtype if model.dtype not in (None, "auto") else "bfloat16"
        args.sources["bnb_4bit_quant_storage"] = f"set for {env.describe()}"
    training = args.training
    if env.fsdp_activation_checkpointing and model.use_peft:
        # FSDP's checkpoint wrapper renames each layer (`..._checkpoint_wrapped_module...`) while the state dict keeps
        # the plain names, and peft finds an adapter's weights by module name when saving: the saved adapter would be
        # empty. transformers' own activation checkpointing keeps the names; accelerate reads this variable when the
        # trainer creates it, after these checks.
        if not env.planned:
            os.environ["FSDP_ACTIVATION_CHECKPOINTING"] = "false"
        training.activation_checkpointing = training.gradient_checkpointing = True
        args.sources["activation_checkpointing"] = "on, instead of FSDP's (which hides LoRA weights from the save)"
    elif env.fsdp_activation_checkpointing and training.activation_checkpointing:
        # transformers refuses both at once once the model has loaded; FSDP's wraps each layer unit itself
        training.activation_checkpointing = training.gradient_checkpointing = False
        args.sources["activation_checkpointing"] = "off: FSDP checkpoints activations (fsdp_activation_checkpointing)"
    if env.zero3 and getattr(training, "use_vllm", False) and getattr(training, "vllm_mode", None) == "colocate" \
            and not getattr(training, "ds3_gather_for_generation", True):
        raise ConfigError("vLLM colocated under ZeRO-3 needs the weights gathered: keep `ds3_gather_for_generation: true`.")


FLASH_ATTENTION = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def check_packages(args: Args) -> None:
    """The packages a GPU config needs (`pip install 'posttrain-dist[gpu]'`), checked before a job waits in a queue:
    vLLM and Liger are refused when missing; flash-attention falls back to PyTorch's sdpa, with a warning."""
    elsewhere = args.env.planned and not args.env.has_accelerator  # planned from a machine without GPUs
    attention = args.model.attn_implementation
    if attention in FLASH_ATTENTION and importlib.util.find_spec(FLASH_ATTENTION[attention]) is None:
        if elsewhere:
            warn(f"`attn_implementation: {attention}` needs the {FLASH_ATTENTION[attention]} package, which is not "
                 "installed here; install `posttrain-dist[gpu]` where the job runs (without it the run uses sdpa).")
        else:
            warn(f"`attn_implementation: {attention}` needs the {FLASH_ATTENTION[attention]} package, which is not "
                 "installed: using `sdpa` (PyTorch's own attention) instead. `pip install 'posttrain-dist[gpu]'` (on "
                 "a GPU machine) for the faster kernels, or set `attn_implementation: sdpa` to silence this.")
            args.model.attn_implementation = "sdpa"
            args.sources["attn_implementation"] = f"sdpa: {FLASH_ATTENTION[attention]} is not installed"
    needs = {"vllm": getattr(args.training, "use_vllm", False) and args.env.for_gpus,
             "liger_kernel": getattr(args.training, "use_liger_kernel", False)}
    for package, needed in needs.items():
        if needed and importlib.util.find_spec(package) is None:
            option = "use_vllm" if package == "vllm" else "use_liger_kernel"
            message = (f"`{option}: true` needs the {package} package: `pip install 'posttrain-dist[gpu]'` (or `pip "
                       f"install {package.replace('_', '-')}`) on the GPU machines, or set it false.")
            if elsewhere:
                warn(message.replace("package:", "package, which is not installed here:"))
            else:
                raise ConfigError(message)


# Integrations `report_to` may name, and the package each needs.
REPORTERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow",
             "comet_ml": "comet_ml", "clearml": "clearml", "swanlab": "swanlab", "dvclive": "dvclive"}


def check_report_to(report_to) -> None:
    """Each logger named in `report_to` is known and installed (else the run fails only once the trainer starts)."""
    names = [report_to] if isinstance(report_to, str) or report_to is None else list(report_to)
    for name in names:
        if name in (None, "none", "all", "azure_ml", "codecarbon", "neptune", "dagshub", "flyte", "kubeflow"):
            continue
        if name not in REPORTERS:
            raise ConfigError(f"`report_to` names {name!r}, which is no logger; "
                              f"{parsing._suggest(name, sorted(REPORTERS))}")
        if importlib.util.find_spec(REPORTERS[name]) is None:
            raise ConfigError(
                f"`report_to: {name}` needs the {REPORTERS[name]} package: `pip install {REPORTERS[name]}` "
                "(then log in if it is a hosted service), or drop it from `report_to`."
            )


# Learning rates beyond these are almost always a typo (1e-3 for 1e-5) rather than a choice.
LR_RANGES = {"full": (1e-8, 1e-4), "lora": (1e-7, 2e-3)}


def warn_out_of_range(args: Args) -> None:
    kind = "lora" if args.model.use_peft else "full"
    low, high = LR_RANGES[kind]
    lr = args.training.learning_rate
    if not low <= lr <= high:
        usual = "1e-6 to 5e-5" if kind == "full" else "5e-5 to 5e-4"
        warn(f"learning_rate {lr:g} is outside {low:g} to {high:g}, where {'LoRA' if kind == 'lora' else 'full'} "
             f"{args.method.upper()} runs train ({usual} is usual); check for a typo.")

