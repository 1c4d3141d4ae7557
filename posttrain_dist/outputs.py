"""What a run leaves in its output folder, and the short report at the end.

    output_dir/
      model.safetensors, config.json     full training: the weights
      adapter_model.safetensors, ...     LoRA/QLoRA: the PEFT adapter
      merged/                            LoRA/QLoRA with `merge_adapter: true`: adapter merged into its base
      tokenizer files, chat_template.jinja   the tokenizer with the template used in training
      generation_config.json             stops at the chat template's end-of-turn token
      config.yaml                        the resolved config: every value, and where it came from
      metrics.json                       final metrics and the logged history
      report.md                          config summary, metrics, before/after answers
      checkpoint-N/                      intermediate checkpoints (Trainer's save strategy)
"""

from __future__ import annotations

import json
import os

import yaml

from . import generation


def save(trainer, args, tokenizer) -> None:
    """Save weights, tokenizer, generation config, resolved config and metrics (main process writes)."""
    out = args.training.output_dir
    trainer.save_model(out)  # called on every rank: under ZeRO-3 the weights are gathered for it
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(out)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.generation_config.save_pretrained(out)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        yaml.safe_dump({"method": args.method, "config_file": args.config_path, **args.resolved()}, f, sort_keys=False)
        f.write("\n# where each value came from (default, file, command line)\n")
        yaml.safe_dump({"sources": {k: v for k, v in args.sources.items() if v != "default"}}, f, sort_keys=True)
    history = trainer.state.log_history
    final = next((entry for entry in reversed(history) if "train_runtime" in entry), {})
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"final": final, "global_step": trainer.state.global_step, "log_history": history}, f, indent=1)
    if args.model.use_peft and args.recipe.merge_adapter:
        merge_adapter(out, os.path.join(out, "merged"))


def merge_adapter(adapter_dir: str, target: str, dtype: str = "float32") -> str:
    """Merge a LoRA adapter into its base model loaded in full precision (not the 4-bit base of QLoRA)."""
    model, tokenizer = generation.load_for_generation(adapter_dir, dtype=dtype)
    merged = model.merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    merged.generation_config.save_pretrained(target)
    return target


def report(trainer, args) -> list[dict]:
    """Answers before and after training to `eval_prompts` (printed), and report.md; main process only."""
    if not trainer.is_world_process_zero():
        return []
    out = args.training.output_dir
    rows = []
    if args.recipe.eval_prompts:
        rows = generation.before_after(
            args.model.model_name_or_path,
            out,
            list(args.recipe.eval_prompts),
            args.recipe.eval_max_new_tokens,
            chat_template=args.recipe.chat_template,
        )
        print("\nAnswers before and after training (greedy):\n")
        print(generation.text_table(rows))
    metrics = json.load(open(os.path.join(out, "metrics.json")))["final"]
    lines = [
        f"# {args.method.upper()} run: {out}",
        "",
        f"- model: `{args.model.model_name_or_path}`"
        + (f" with LoRA r={args.model.lora_r}" if args.model.use_peft else " (full parameters)")
        + (" on a 4-bit base (QLoRA)" if args.model.load_in_4bit else ""),
        f"- data: `{args.recipe.dataset_name or args.recipe.dataset_mixture}`",
        f"- config: `{args.config_path}` (resolved values in config.yaml)",
        f"- optimizer steps: {trainer.state.global_step}",
        "",
        "## Final metrics",
        "",
        *[f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()],
    ]
    if rows:
        lines += ["", "## Answers before and after (greedy)", "", generation.markdown_table(rows)]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows
