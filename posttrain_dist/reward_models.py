"""A learned reward: a reward model (a sequence classifier with one output, as `recipes/reward.py` saves) named in
`reward_funcs` as `model:PATH` (a folder, or a hub id), next to the verifiable rewards and weighed with them.

trl scores with it itself: the recipe hands trl the loaded model and its tokenizer (`for_trainer`), and trl
renders prompt + completion with the reward model's own chat template, scores the last token, and under
DeepSpeed prepares it like the reference model (ZeRO-3 partitions it). The held-out check before and after
training scores the same way, on one process, through `LearnedReward.__call__`.
"""

from __future__ import annotations

import os

from .errors import ConfigError

PREFIX = "model:"


def is_learned(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def reference(name: str) -> str:
    """The model behind `model:PATH`, checked without loading it: a folder must hold a sequence classifier."""
    from . import modeling

    path = os.path.expanduser(name[len(PREFIX):].strip())
    if not path:
        raise ConfigError(f"reward {name!r} names no model: write `model:PATH` with PATH a reward model folder (as "
                          "recipes/reward.py saves) or a hub id.")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise ConfigError(f"reward {name!r}: {path} holds a LoRA adapter, not a whole model; name the "
                              f"merged reward model instead ({os.path.join(path, 'merged')}, saved when the reward run "
                              "has `merge_adapter: true`, the default).")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"reward {name!r}: {path} holds no model (no config.json); train one with "
                              "recipes/reward.py and name its output folder.")
        if modeling.kind_of(path) != modeling.SCORER:
            raise ConfigError(f"reward {name!r}: {path} holds a language model, not a reward model (a sequence "
                              "classifier with one output); train one with recipes/reward.py.")
        return path
    if os.path.exists(path) or modeling.looks_local(path):
        raise ConfigError(f"reward {name!r}: no reward model folder {path} here; train it first (recipes/reward.py, "
                          "e.g. recipes/smollm2-135m/reward_full.yaml) or name a hub id (org/name).")
    return path


class LearnedReward:
    """A reward model as a reward function: the score of prompt + completion rendered with its chat template (what
    trl computes for a model in `reward_funcs`). It loads on first use."""

    def __init__(self, name: str):
        self.name, self.path = name, reference(name)
        self.__name__ = os.path.basename(os.path.normpath(self.path))  # trl's name for it in the logs
        self._loaded = None

    def load(self):
        """(model, tokenizer), whole on this process: on the GPU in bfloat16 where there is one, else the CPU."""
        if self._loaded is None:
            from . import generation, modeling

            model, tokenizer = generation.load_for_generation(self.path, kind=modeling.SCORER)
            model.config.pad_token_id = tokenizer.pad_token_id
            self._loaded = model, tokenizer
        return self._loaded

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        import torch
        from trl.data_utils import apply_chat_template

        model, tokenizer = self.load()
        if isinstance(prompts[0], list):
            texts = [apply_chat_template({"messages": p + c}, tokenizer)["text"] for p, c in zip(prompts, completions)]
        else:
            texts = [p + c for p, c in zip(prompts, completions)]
        scores = []
        for start in range(0, len(texts), 16):
            batch = tokenizer(text=texts[start:start + 16], return_tensors="pt", padding=True, padding_side="right",
                              add_special_tokens=False)
            with torch.inference_mode():
                scores += model(**batch.to(model.device)).logits[:, 0].float().tolist()
        return scores


def stand_in(name: str):
    """For `plan` and the checks: the reference checked, nothing loaded; reads no data column."""
    path = reference(name)

    def reward(prompts, completions, **kwargs):
        raise RuntimeError("a stand-in is never called")

    reward.__name__ = os.path.basename(os.path.normpath(path))
    return reward


def for_trainer(functions: list, model_args, training_args, env) -> tuple[list, list]:
    """(reward_funcs, reward_processing_classes) for trl: each learned reward loaded as a model in the run's dtype
    (under ZeRO-3 partitioned as it loads; trl prepares it), with its own tokenizer; other rewards as they are."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    from . import modeling

    models, tokenizers = [], []
    for function in functions:
        if not isinstance(function, LearnedReward):
            models.append(function)
            tokenizers.append(None)
            continue
        try:
            tokenizer = modeling.prepare_tokenizer(AutoTokenizer.from_pretrained(function.path))
        except OSError as error:
            raise ConfigError(f"reward {function.name!r}: cannot load its tokenizer ({str(error).splitlines()[0]}); "
                              "name a reward model folder saved by recipes/reward.py, or a hub id.") from None
        reward_args = replace(model_args, model_name_or_path=function.path, use_peft=False, load_in_4bit=False,
                              load_in_8bit=False, model_revision="main")
        model = modeling.load_model(reward_args, training_args, tokenizer, env, kind=modeling.SCORER)
        model.requires_grad_(False)
        models.append(model.eval())
        tokenizers.append(tokenizer)
    return models, tokenizers
