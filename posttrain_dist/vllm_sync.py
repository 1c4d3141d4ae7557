"""vLLM beside the trainer (GRPO/RLOO with `use_vllm: true`, `vllm_mode: colocate`): its weights kept equal to the
trained model's, and checked.

- After each optimizer step trl copies the trained weights into the colocated vLLM (`VLLMGeneration.sync_weights`,
  one `model.load_weights` call per parameter). On GPUs that is trl's path, untouched. vLLM's CPU build repacks the
  weights of each layer for its kernels once they are loaded, which drops the loader hooks `load_weights` needs
  (`'Parameter' object has no attribute 'weight_loader'`); `reload_on_cpu` is the one difference: the same weights,
  handed to vLLM's in-place reload, which restores the checkpoint layout, loads and repacks again.
- `vllm_sync_check: N` compares, every N optimizer steps, vLLM's log-probabilities of one sampled completion with
  the trained model's log-probabilities of the same tokens: a weight copy that silently failed (an adapter never
  merged in, a renamed parameter skipped, a stale engine) shows as a gap far above the tolerance, and the run stops
  with the numbers instead of training on another model's samples.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from .errors import ConfigError

# Mean |log p(vLLM) - log p(trainer)| per sampled token above which the engines hold different weights, by the lower
# precision of the two (trl builds the engine from the checkpoint's config, and vLLM computes a float32 checkpoint in
# bfloat16). Measured on CPU with the tiny model, float32 in both: equal weights differ by 2e-7; one parameter group
# moved by 1e-3 (an Adam step at lr 1e-3) by 4e-5 to 9e-3, every parameter moved by 1e-3 by 1.2e-2. A bfloat16
# engine against a float32 trainer with equal weights: 5e-4 on average, 2e-3 at most (GRPO runs, DDP and ZeRO-3).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}


def tolerance(trainer) -> float:
    """The tolerance for the lower precision of the engine and the trained model."""
    engine = colocated(trainer).llm.llm_engine.model_config.dtype
    trained = next(trainer.model.parameters()).dtype
    return max(TOLERANCE.get(engine, TOLERANCE[torch.bfloat16]), TOLERANCE.get(trained, TOLERANCE[torch.bfloat16]))


def colocated(trainer):
    """The trainer's vLLM engine, when it runs one in this process (`vllm_mode: colocate`); else None."""
    generation = getattr(trainer, "vllm_generation", None)
    return generation if generation is not None and generation.mode == "colocate" else None


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def reload_on_cpu(generation) -> None:
    """trl's weight copy (`VLLMGeneration.sync_weights`, colocate mode) for vLLM's CPU build: the same parameters
    (trl's own iterator: gathered under ZeRO-3/FSDP, the adapter merged), handed to vLLM's in-place reload. A head
    tied to the embeddings (SmolLM2, the tiny models) has no weights of its own to reload, so vLLM leaves its packed
    copy of the old embeddings in place: it is packed again from the reloaded ones."""
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=generation._iter_named_params(), is_checkpoint_format=True)
    model = runner.get_model()
    head = getattr(model, "lm_head", None)
    if head is not None and getattr(model.config, "tie_word_embeddings", False):
        head.quant_method.process_weights_after_loading(head)
    generation.llm.reset_prefix_cache()


def attach(trainer, args) -> None:
    """Where the trainer colocates vLLM: the CPU weight copy, and the sync check every `vllm_sync_check` steps."""
    generation = colocated(trainer)
    if generation is None:
        return
    if on_cpu():
        generation.sync_weights = lambda: reload_on_cpu(generation)
    every = getattr(args.recipe, "vllm_sync_check", 0)
    if every:
        trainer.add_callback(SyncCheck(trainer, every))


def shutdown(trainer) -> bool:
    """Stop a colocated engine while the process group it joined still exists (vLLM's own exit hook, run after the
    recipe ended the group, fails with "Invalid process group specified"); vLLM's teardown ends that group too.
    True when there was one."""
    generation = colocated(trainer)
    if generation is None:
        return False
    generation.llm.llm_engine.engine_core.shutdown()
    return True


def check_options(args) -> None:
    """Before anything loads: the sync check needs the engine in this process."""
    every = getattr(args.recipe, "vllm_sync_check", 0)
    if every and not (args.training.use_vllm and args.training.vllm_mode == "colocate"):
        raise ConfigError(f"`vllm_sync_check: {every}` compares the colocated vLLM engine with the trained model: it "
                          "needs `use_vllm: true` and `vllm_mode: colocate` (set it to 0 otherwise).")
    if every and args.training.vllm_enable_sleep_mode:
        raise ConfigError(f"`vllm_sync_check: {every}` samples from the engine between steps, when sleep mode has "
                          "released it: turn one of them off (`vllm_enable_sleep_mode: false`, or `vllm_sync_check: 0`).")


def sampled_logprobs(generation, prompt_ids: list[int], max_tokens: int = 16, seed: int = 0):
    """One completion sampled by vLLM (temperature 1, no filtering: its log-probabilities are the model's own), as
    (token ids, vLLM's log-probability of each)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, top_p=1.0, top_k=0, logprobs=0, seed=seed)
    out = generation.llm.generate([{"prompt_token_ids": prompt_ids}], params, use_tqdm=False)[0].outputs[0]
    ids = list(out.token_ids)
    return ids, [step[token].logprob for step, token in zip(out.logprobs, ids)]


@torch.no_grad()
def trained_logprobs(model, prompt_ids: list[int], ids: list[int], device) -> list[float]:
    """The trained model's log-probability of each of `ids` after `prompt_ids` (eval mode, no dropout)."""
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=torch.tensor([prompt_ids + ids], device=device)).logits[0, len(prompt_ids) - 1:-1]
    finally:
        model.train(was_training)
    chosen = torch.tensor(ids, device=logits.device)[:, None]
    return logits.float().log_softmax(-1).gather(-1, chosen)[:, 0].tolist()


def gap(trainer, prompt_ids: list[int]) -> dict:
    """vLLM against the trained model on one completion vLLM samples: mean and max absolute log-probability gap."""
    ids, served = sampled_logprobs(colocated(trainer), prompt_ids)
    with trainer.accelerator.autocast():
        trained = trained_logprobs(trainer.model, prompt_ids, ids, trainer.accelerator.device)
    gaps = [abs(a - b) for a, b in zip(served, trained)]
    return {"mean": sum(gaps) / len(gaps), "max": max(gaps), "tokens": len(gaps)}


class SyncCheck(TrainerCallback):
    """Every `every` optimizer steps: the new weights copied into vLLM now (trl would copy them before its next
    generation anyway), then vLLM's and the trained model's log-probabilities of one sampled completion compared;
    logged as `vllm_sync/logprob_gap`, and the run stops when they differ."""

    def __init__(self, trainer, every: int):
        self.trainer, self.every = trainer, every
        self.prompt_ids = None
        self.gaps: list[dict] = []

    def _prompt(self) -> list[int]:
        if self.prompt_ids is None:
            tokenizer = self.trainer.processing_class
            prompt = self.trainer.train_dataset[0]["prompt"]
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) \
                if isinstance(prompt, list) else prompt
            self.prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.prompt_ids

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every:
            return
        trainer = self.trainer
        if trainer._last_loaded_step != state.global_step:
            trainer.vllm_generation.sync_weights()
            trainer._last_loaded_step = state.global_step
        measured = {"step": state.global_step, **gap(trainer, self._prompt())}
        self.gaps.append(measured)
        trainer._metrics["train"]["vllm_sync/logprob_gap"].append(measured["mean"])  # in trl's next log entry
        limit = tolerance(trainer)
        if trainer.accelerator.is_main_process:
            print(f"vllm_sync_check step {state.global_step}: vLLM vs trained log-probabilities of {measured['tokens']} "
                  f"sampled tokens differ by {measured['mean']:.2e} on average (max {measured['max']:.2e}; "
                  f"tolerance {limit:g})", flush=True)
        if measured["mean"] > limit:
            raise RuntimeError(
                f"vllm_sync_check: after optimizer step {state.global_step} the colocated vLLM does not hold the trained "
                f"weights: the log-probabilities of the same {measured['tokens']} tokens differ by {measured['mean']:.3g} "
                f"on average (max {measured['max']:.3g}; tolerance {limit:g}). GRPO would learn from "
                "another model's samples: check that the weight copy reaches vLLM (trl's `sync_weights`; with LoRA, "
                "the merged adapter), and that vLLM loaded the model being trained.")
