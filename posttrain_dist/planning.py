"""`posttrain-dist plan`: what a recipe config will do, before any weights load.

The memory estimate reads the model's config alone: the model is built on the meta device (no
memory, no weights) to count its parameters, its linear layers (what LoRA adapts and 4-bit
quantizes) and its shapes. Each term follows what the installed trl, accelerate and DeepSpeed
allocate; per device:

    weights      parameters x bytes of their dtype (4-bit: ~0.52 bytes per quantized weight; FSDP
                 mixed precision keeps trainable ones in float32), sharded by ZeRO-3 / FSDP; on a CPU
                 a 4-bit load also keeps the memory-mapped checkpoint it read resident; plus a frozen
                 reference copy where DPO/GRPO keep one
    gradients    trainable parameters x bytes of their dtype, sharded by ZeRO-2/3 / FSDP
    optimizer    AdamW: two states per trainable parameter (DeepSpeed in bf16: fp32 master copy plus
                 two fp32 states, 12 bytes), sharded by ZeRO-1/2/3 / FSDP, zero when offloaded
    activations  what backward keeps of one micro-batch: per layer per token the block's inputs and
                 intermediates (or only the layer input under activation checkpointing, plus one
                 layer recomputed)
    logits       trl's fused LM head: one tile of float32 logits, never the whole (tokens x vocabulary)
    generation   GRPO: the key/value cache of one generation batch
    CPU process  on a CPU, the process's own share (data, tokenizer, trainer), measured

The total counts gradients or activations and logits, whichever is larger: backward frees the
activations as it makes the gradients. It lists what it leaves out (LEAVES_OUT).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import yaml

from .errors import ConfigError

GiB = 1024**3

LEAVES_OUT = [
    "the CUDA context and kernels (about 0.5-1 GiB per GPU), and the Python process's data, tokenizer and trainer "
    "objects on a GPU run (on a CPU they are the `CPU process` row)",
    "the transient of loading: 4-bit quantization reads each weight in full precision first",
    "the allocator's cache and fragmentation (often 10-30 % on top of the peak)",
    "communication buffers: NCCL, DeepSpeed's reduce/all-gather buckets, ZeRO-3 prefetch of gathered layers",
    "temporary buffers inside kernels (attention workspace, the loss's softmax), the data loader",
    "vLLM's own reservation when `use_vllm` is on (its `vllm_gpu_memory_utilization` share of the GPU)",
    "activations are for the longest micro-batch (max_length tokens per row); shorter rows use less",
]

# Configs of hub models that presets name, for planning on a machine that cannot reach the hub.
# (Architecture facts from the models' published config.json files.)
KNOWN_CONFIGS = {
    "Qwen/Qwen3-8B": dict(
        model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False, dtype="bfloat16"),
    "Qwen/Qwen3-32B": dict(
        model_type="qwen3", hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
        num_attention_heads=64, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False, dtype="bfloat16"),
    "meta-llama/Llama-3.1-8B-Instruct": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
        dtype="bfloat16"),
}

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# trl's fused LM head (trl/kernels/chunked_logprob.py) projects tiles of 4096 tokens x 32768 vocabulary columns.
LOGIT_TILE = (4096, 32768)
# A CPU training process besides the model: data, tokenizer, trainer objects, the allocator's cache. Measured with
# the tiny model (benchmarks/results/memory.md), where the model is a few MB.
CPU_PROCESS = 0.43 * 1024**3
NF4_BYTES = 0.5 + 0.5 / 64 + 4 / (64 * 256)  # 4-bit weights, 8-bit absmax per 64, fp32 per 256 absmax (double quant)


def model_config(name: str):
    """The transformers config of a short name, local folder, hub cache entry or known hub model."""
    from transformers import AutoConfig

    from . import modeling

    if name in modeling.SHORT_NAMES or os.path.isdir(name):
        return AutoConfig.from_pretrained(modeling.resolve_model(name))
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    if name in KNOWN_CONFIGS:
        values = dict(KNOWN_CONFIGS[name])
        return AutoConfig.for_model(values.pop("model_type"), **values)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the config of {name!r} here ({str(error).splitlines()[0]}); plan with a local copy "
            "of its config.json folder as model_name_or_path."
        ) from None


@dataclass
class Shapes:
    """What the estimate needs from a model, counted on the meta device."""

    parameters: int
    linear_weights: int  # weights of nn.Linear layers other than the output head (4-bit quantized in QLoRA)
    lora_parameters: int  # LoRA A and B over the adapted linear layers
    lora_inputs_per_token: int  # elements of the inputs of adapted layers, per token and layer (LoRA dropout keeps them)
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int
    vocab: int
    dtype: str


def count(cfg, lora_r: int = 16, lora_targets="all-linear") -> Shapes:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    head = model.get_output_embeddings()
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]
    targets = linears if lora_targets in ("all-linear", None) else [
        (n, m) for n, m in linears if any(n.endswith(t) for t in lora_targets)]
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    dtype = str(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "float32").replace("torch.", "")
    return Shapes(
        parameters=sum(p.numel() for p in model.parameters()),
        linear_weights=sum(m.weight.numel() for _, m in linears),
        lora_parameters=sum(lora_r * (m.in_features + m.out_features) for _, m in targets),
        lora_inputs_per_token=sum(m.in_features for _, m in targets) // max(layers, 1),
        hidden=cfg.hidden_size,
        intermediate=getattr(cfg, "intermediate_size", 4 * cfg.hidden_size),
        layers=layers,
        kv_dim=getattr(cfg, "num_key_value_heads", heads) * head_dim,
        vocab=cfg.vocab_size,
        dtype=dtype,
    )


@dataclass
class Estimate:
    rows: list[tuple[str, float, str]] = field(default_factory=list)  # (part, bytes, how)

    def add(self, part: str, value: float, how: str) -> None:
        self.rows.append((part, value, how))

    @property
    def total(self) -> float:
        """The parts that are held at once. Gradients appear as backward frees the activations (and the logits
        tile), so a step holds the larger of the two, not both."""
        parts = {name: value for name, value, _ in self.rows}
        transient = max(parts.get("gradients", 0), parts.get("activations", 0) + parts.get("logits", 0))
        return sum(v for n, v, _ in self.rows if n not in ("gradients", "activations", "logits")) + transient


def estimate(args, shapes: Shapes, env) -> Estimate:
    """Bytes per device (GPU, or CPU process) of one training run, part by part, under the environment `env`."""
    from . import methods

    model, training = args.model, args.training
    method = methods.get(args.method)
    accelerate = env.accelerate
    on_gpu = env.for_gpus
    dtype = model.dtype if model.dtype not in (None, "auto") else shapes.dtype
    weight_bytes = _BYTES.get(dtype, 4)
    world = max(1, env.world_size)
    ds = accelerate.get("deepspeed_config") or {}
    stage = env.zero_stage if env.kind == "deepspeed" else None
    shard_weights = world if (stage == 3 or env.kind == "fsdp") else 1
    shard_grads = world if (stage in (2, 3) or env.kind == "fsdp") else 1
    shard_optim = world if (stage in (1, 2, 3) or env.kind == "fsdp") else 1
    offload_params = str(ds.get("offload_param_device", "none")) != "none" or \
        bool((accelerate.get("fsdp_config") or {}).get("fsdp_offload_params"))
    offload_optim = str(ds.get("offload_optimizer_device", "none")) != "none" or offload_params and env.kind == "fsdp"
    sharding = f" / {world} ({env.describe()})" if world > 1 else ""

    est = Estimate()
    if model.load_in_4bit:
        frozen = shapes.linear_weights * NF4_BYTES + (shapes.parameters - shapes.linear_weights) * weight_bytes
        how = f"{shapes.linear_weights / 1e6:.1f} M linear weights in 4-bit nf4, the other {(shapes.parameters - shapes.linear_weights) / 1e6:.1f} M in {dtype}"
        if not on_gpu:  # see CPU_MAPPED_CHECKPOINT
            frozen += shapes.parameters * _BYTES.get(shapes.dtype, 4)
            how += "; on a CPU also the memory-mapped checkpoint the 4-bit load read, all of it"
    elif model.load_in_8bit:
        frozen = shapes.linear_weights * 1 + (shapes.parameters - shapes.linear_weights) * weight_bytes
        how = f"linear weights in 8 bits, the rest in {dtype}"
    else:
        frozen = shapes.parameters * weight_bytes
        how = f"{shapes.parameters / 1e6:.1f} M parameters x {weight_bytes} bytes ({dtype})"
    trainable = shapes.lora_parameters if model.use_peft else shapes.parameters
    adapter_bytes = 4  # peft keeps adapters in float32 on a bf16/fp16 base
    weights = frozen + (trainable * adapter_bytes if model.use_peft else 0)
    if model.use_peft:
        how += f", plus {trainable / 1e6:.2f} M LoRA parameters (r={model.lora_r}) in float32"
    est.add("weights", 0 if offload_params else weights / shard_weights,
            how + (" -> offloaded to CPU" if offload_params else sharding if shard_weights > 1 else ""))

    if method.reference(args):
        est.add("reference model", 0 if offload_params else frozen / shard_weights,
                f"frozen copy for the {method.name.upper()} reference, {dtype}" + (sharding if shard_weights > 1 else ""))

    for part, name in method.frozen_models(args):  # a teacher, reward models: frozen, in the run's dtype
        try:
            other = count(model_config(name)).parameters
        except (ConfigError, OSError, ValueError) as error:
            est.add(part, 0, f"{name}: not counted, its config is not readable here ({str(error).split(';')[0]})")
            continue
        est.add(part, 0 if offload_params else other * weight_bytes / shard_weights,
                f"{name}: {other / 1e6:.1f} M parameters x {weight_bytes} bytes ({dtype}), frozen"
                + (sharding if shard_weights > 1 else ""))

    train_bytes = adapter_bytes if model.use_peft else weight_bytes
    if env.kind == "fsdp" and not model.use_peft and str(accelerate.get("mixed_precision")) in ("bf16", "fp16"):
        # accelerate's FSDP mixed precision keeps the trainable parameters (and so their gradients) in float32
        # and casts a copy for the forward; the weights row above holds them as loaded
        est.rows[0] = ("weights", est.rows[0][1] * 4 / weight_bytes,
                       est.rows[0][2] + "; kept in float32 by FSDP mixed precision")
        train_bytes = 4
    est.add("gradients", trainable * train_bytes / shard_grads,
            f"{trainable / 1e6:.2f} M trainable x {train_bytes} bytes" + (sharding if shard_grads > 1 else ""))

    optim = str(getattr(training.optim, "value", training.optim)).lower()
    states = 0 if "sgd" in optim else 2
    state_bytes = 1 if "8bit" in optim else (4 if env.kind == "deepspeed" else train_bytes)
    master = 4 if env.kind == "deepspeed" and train_bytes < 4 else 0
    per_param = states * state_bytes + master
    est.add("optimizer", 0 if offload_optim else trainable * per_param / shard_optim,
            f"{optim}: {states} states x {state_bytes} bytes" + (" + fp32 master copy" if master else "")
            + (" -> offloaded to CPU" if offload_optim else sharding if shard_optim > 1 else ""))

    tokens, what = method.tokens(args)
    act_bytes = 2 if (on_gpu and (training.bf16 or training.fp16 or weight_bytes == 2)) else 4
    checkpointing = bool(getattr(training, "activation_checkpointing", False) or
                         getattr(training, "gradient_checkpointing", False))
    block = 6 * shapes.hidden + 2 * shapes.kv_dim + 4 * shapes.intermediate
    if model.use_peft and model.lora_dropout > 0:
        block += shapes.lora_inputs_per_token
    if checkpointing:
        per_token = shapes.layers * shapes.hidden + block
        how = f"{what}; activation checkpointing: the input of each of {shapes.layers} layers + one layer recomputed"
    else:
        per_token = shapes.layers * block
        how = f"{what}; {shapes.layers} layers x {block} values per token"
    est.add("activations", tokens * per_token * act_bytes, how)
    rows, columns = min(tokens, LOGIT_TILE[0]), min(shapes.vocab, LOGIT_TILE[1])
    est.add("logits", 2 * rows * columns * 4,
            f"trl's fused LM head: one {rows} x {columns} float32 tile of logits, forward and backward, never the "
            f"whole {tokens} x {shapes.vocab}")
    cache = method.generation(args)
    if cache is not None:
        rows, length = cache
        est.add("generation cache", rows * length * shapes.layers * 2 * shapes.kv_dim * act_bytes,
                f"key/value cache of {rows} completions x {length} tokens")
    if not on_gpu:
        est.add("CPU process", CPU_PROCESS, "what a CPU training process holds besides the model (data, tokenizer, "
                "trainer, allocator): measured, benchmarks/results/memory.md")
    return est


def training_rows(args) -> tuple[int | None, str, list[str]]:
    """Rows one epoch trains on, counted by the method through the recipe's own data code (every row checked: a failed
    check is an error, as in the recipe), and what else it measured (SFT: tokens). Hub data is not read."""
    from . import methods

    return methods.get(args.method).plan_rows(args)


@dataclass
class Plan:
    args: object
    world: int
    global_batch: int
    steps: int | None
    steps_how: str
    counted: list[str]  # what the method measured of the data besides rows (tokens per epoch, preparation)
    command: list[str]
    estimate: Estimate
    shapes: Shapes
    device: str
    env: object  # environment.Environment of the planned run


def method_of(preset: str, method: str | None = None) -> str:
    """The method to plan: `--method`, else the preset's own `method:` key."""
    from . import methods, parsing

    found = method or parsing.preset_method(preset)
    if found not in methods.METHODS:
        raise ConfigError(f"{preset} does not say its method (a `method: {'|'.join(methods.names())}` line); give "
                          "--method.")
    return found


def make(method: str, preset: str, accelerate_config: str, nodes: int = 1, gpus_per_node: int | None = None,
         recipe_args: list[str] | None = None) -> Plan:
    from . import checks, environment, launching, resources

    env = environment.from_accelerate_file(accelerate_config, nodes, gpus_per_node)
    argv, _ = launching.without_secrets(["--config", preset, *(recipe_args or [])])  # a token is never printed
    args = checks.parse(method, argv, env)  # batch divisibility is checked for the planned processes
    if env.for_gpus:  # planned from a machine without GPUs: show the values the GPU machine will have
        args.training.use_cpu = False
    t = args.training
    world, per_node = env.world_size, env.world_size // nodes
    global_batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * world
    from . import methods

    method_record = methods.get(method)
    rows, rows_how, counted = training_rows(args)
    if t.max_steps and t.max_steps > 0:
        steps, steps_how = t.max_steps, "max_steps"
    elif rows is None:
        steps, steps_how = None, f"unknown: the data is {rows_how}"
    else:
        per_step = global_batch / method_record.examples_per_step(args)
        steps = math.ceil(rows / per_step * t.num_train_epochs)
        unit = method_record.unit
        steps_how = (f"{rows} {unit} ({rows_how}) x {t.num_train_epochs:g} epoch(s) / {per_step:g} {unit} per step"
                     + (" (packing joins rows: fewer steps)" if getattr(t, "packing", False) else ""))
    cluster = launching.Cluster(nodes, 0, per_node, "$HEAD_NODE_ADDRESS", 29500) if nodes > 1 else None
    script = resources.display(resources.recipe_script(method))
    command = launching.accelerate_command(cluster, accelerate_config, script, argv, per_node if nodes == 1 else None,
                                           env.kind == "deepspeed")
    shapes = count(model_config(args.model.model_name_or_path), args.model.lora_r, args.model.lora_target_modules)
    est = estimate(args, shapes, env)
    return Plan(args, world, global_batch, steps, steps_how, counted, command, est, shapes,
                "GPU" if env.for_gpus else "CPU process", env)


def after_training(args) -> list[str]:
    """What the run does once trained, beyond its own evaluation: lm-eval tasks, the push to the hub."""
    from . import harness, hub

    lines = [line for line in (harness.plan_line(args.recipe), hub.plan_line(args.push, args.training.output_dir)) if line]
    return ["", "## After training", *[f"  {line}" for line in lines]] if lines else []


def render(plan: Plan, show_all: bool = False) -> str:
    import shlex

    from . import parsing

    args, t = plan.args, plan.args.training
    values = args.resolved()
    helps = parsing.field_helps(args.method)
    lines = [f"# {args.method.upper()} plan: {args.config_path}", "", "## Config (value, where it came from, what it is)"]
    shown = sorted(k for k in values if show_all or args.sources.get(k, "default") != "default")
    width = max((len(k) for k in shown), default=10)
    for key in shown:
        value = values[key]
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        help_text = helps.get(key, "").split(". ")[0].replace("\n", " ")
        lines.append(f"  {key:<{width}} = {text:<24} [{args.sources.get(key, 'default')}] {help_text[:110]}")
    hidden = len(values) - len(shown)
    if hidden:
        lines.append(f"  ... and {hidden} values at their defaults (--all shows them)")
    if args.migrated:
        lines += ["", "## Read under today's names (`posttrain-dist migrate` writes the config so)",
                  *[f"  {change.line()}" for change in args.migrated]]
    if args.exported:
        lines += ["", "## Environment the config sets (`env:`)",
                  *[f"  {key}={value}" for key, value in sorted(args.exported.items())]]
    lines += [
        "",
        "## Batch and steps",
        f"  processes: {plan.world} ({args.method.upper()} under {plan.env.describe()})",
        f"  global batch: {t.per_device_train_batch_size} per device x {t.gradient_accumulation_steps} accumulation "
        f"x {plan.world} processes = {plan.global_batch} examples",
        f"  optimizer steps: {plan.steps if plan.steps is not None else '?'} ({plan.steps_how})",
        *plan.counted,
        *after_training(args),
        "",
        "## Launch command" + (" (node 0; each node runs it with its own --machine_rank)" if "--machine_rank" in plan.command else ""),
        "  " + " ".join(shlex.quote(c) for c in plan.command),
        "",
        f"## Memory estimate per {plan.device} (no weights loaded)",
        f"  model: {args.model.model_name_or_path}: {plan.shapes.parameters / 1e6:.1f} M parameters, "
        f"{plan.shapes.layers} layers, hidden {plan.shapes.hidden}, vocabulary {plan.shapes.vocab}",
    ]
    for part, value, how in plan.estimate.rows:
        lines.append(f"  {part:<17} {value / GiB:8.2f} GiB  {how}")
    lines.append(f"  {'total':<17} {plan.estimate.total / GiB:8.2f} GiB  held at once: gradients, or activations and logits, whichever is larger")
    lines += ["", "  Left out of the estimate:", *[f"  - {item}" for item in LEAVES_OUT]]
    return "\n".join(lines)

