"""What a run leaves in its output folder, and the short report at the end.

    output_dir/
      model.safetensors, config.json     full training: the weights
      adapter_model.safetensors, ...     LoRA/QLoRA: the PEFT adapter
      merged/                            LoRA/QLoRA with `merge_adapter: true`: adapter merged into its base
      tokenizer files, chat_template.jinja   the tokenizer with the template used in training
      generation_config.json             stops at the chat template's end-of-turn token
      config.yaml                        the resolved config: every value, and where it came from
      metrics.json                       final metrics and the logged history
      curves.png                         the method's training curves (loss, rewards, margins, lengths, lr)
      runs/                              TensorBoard logs (report_to: tensorboard, the default)
      report.md                          config summary, metrics, before/after answers
      checkpoint-N/                      intermediate checkpoints (Trainer's save strategy)
"""

from __future__ import annotations

import json
import os

import yaml

from . import curves, generation


def save(trainer, args, tokenizer) -> None:
    """Save weights, tokenizer, generation config, resolved config and metrics (main process writes)."""
    out = args.training.output_dir
    trainer.save_model(out)  # called on every rank: under ZeRO-3 the weights are gathered for it
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(out)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.generation_config.save_pretrained(out)
    write_config(args)
    history = trainer.state.log_history
    final = next((entry for entry in reversed(history) if "train_runtime" in entry), {})
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"final": final, "global_step": trainer.state.global_step, "log_history": history}, f, indent=1)
    curves.plot(history, args.method, os.path.join(out, "curves.png"),
                title=f"{args.method.upper()} of {args.model.model_name_or_path}: {out}")
    if args.model.use_peft and args.recipe.merge_adapter:
        merge_adapter(out, os.path.join(out, "merged"))


def write_config(args) -> None:
    """config.yaml: every resolved value, then where the non-default ones came from."""
    out = args.training.output_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        yaml.safe_dump({"method": args.method, "config_file": args.config_path, **args.resolved()}, f, sort_keys=False)
        f.write("\n# where each value came from (default, file, command line)\n")
        yaml.safe_dump({"sources": {k: v for k, v in args.sources.items() if v != "default"}}, f, sort_keys=True)


def config_table(args) -> str:
    """A markdown table of the values that differ from the defaults, with where each came from."""
    values = args.resolved()
    rows = [f"| `{key}` | `{_short(values.get(key))}` | {source} |"
            for key, source in sorted(args.sources.items()) if source != "default" and key in values]
    return "\n".join(["| key | value | from |", "|---|---|---|", *rows])


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def start_run(args) -> list[str]:
    """Claim output_dir for this run (main process, before training): replace another run when told to,
    then write config.yaml, so that a restarted attempt of the same run is recognised and resumes."""
    import shutil

    from . import config

    out = args.training.output_dir
    removed = []
    if args.recipe.overwrite_output_dir and config.run_differences(args):
        for name in sorted(os.listdir(out)):
            if name.startswith("checkpoint-") or name in ("runs", "merged") or name in config.RUN_FILES or \
                    name.endswith(".safetensors") or name in ("metrics.json", "evaluation.json", "report.md"):
                path = os.path.join(out, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(name)
    write_config(args)
    return removed


def merge_adapter(adapter_dir: str, target: str, dtype: str = "float32") -> str:
    """Merge a LoRA adapter into its base model loaded in full precision (not the 4-bit base of QLoRA)."""
    model, tokenizer = generation.load_for_generation(adapter_dir, dtype=dtype)
    merged = model.merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    merged.generation_config.save_pretrained(target)
    return target


def evaluate(args) -> dict:
    """The model before and after training, measured the same way (see `generation.evaluate_model`).

    "Before" uses the chat template of training, so both sides are asked alike. With an identity
    change and a template other than the model's own, the model before training is also asked
    through its own template (SmolLM2's names SmolLM in a default system prompt).
    """
    recipe = args.recipe
    setup = _rewards_setup(args)
    before = generation.evaluate_model(args.model.model_name_or_path, recipe, recipe.chat_template, setup)
    after = generation.evaluate_model(args.training.output_dir, recipe, rewards_setup=setup)
    result = {"before": before, "after": after}
    if getattr(recipe, "identity_new_name", None) and recipe.chat_template is not None:
        own = generation.evaluate_model(args.model.model_name_or_path, _only_identity(recipe))
        result["before_own_template"] = own
    return result


def _rewards_setup(args) -> dict | None:
    """GRPO with a test split: the held-out prompts scored with the run's own rewards."""
    recipe = args.recipe
    if args.method != "grpo" or not recipe.dataset_test_split or not recipe.dataset_name or recipe.reward_eval_size <= 0:
        return None
    from . import rewards

    return {
        "functions": rewards.build(recipe.reward_funcs, args.training),
        "weights": args.training.reward_weights,
        "source": recipe.dataset_name,
        "split": recipe.dataset_test_split,
        "size": recipe.reward_eval_size,
        "max_new_tokens": args.training.max_completion_length,
    }


def _only_identity(recipe):
    import dataclasses

    return dataclasses.replace(recipe, eval_prompts=None, perplexity_dataset=None)


def report(trainer, args) -> dict:
    """Evaluate before and after, print the comparison, write evaluation.json and report.md (main process)."""
    if not trainer.is_world_process_zero():
        return {}
    out = args.training.output_dir
    recipe = args.recipe
    needs_models = (recipe.eval_prompts or recipe.perplexity_dataset or getattr(recipe, "identity_new_name", None)
                    or _rewards_setup(args))
    result = evaluate(args) if needs_models else {"before": {}, "after": {}}
    before, after = result["before"], result["after"]
    summary = {}
    if "identity" in after:
        summary["new_name"] = recipe.identity_new_name
        summary["adoption_before"] = before["identity"]["adoption"]
        summary["adoption_after"] = after["identity"]["adoption"]
        if "before_own_template" in result:
            summary["adoption_before_own_template"] = result["before_own_template"]["identity"]["adoption"]
    if "perplexity" in after:
        summary["perplexity_before"] = before["perplexity"]
        summary["perplexity_after"] = after["perplexity"]
        summary["perplexity_change"] = after["perplexity"] / before["perplexity"] - 1
    if "held_out_rewards" in after:
        summary["reward_before"] = before["held_out_rewards"]["reward"]
        summary["reward_after"] = after["held_out_rewards"]["reward"]
        summary["rewards_before"] = before["held_out_rewards"]["rewards"]
        summary["rewards_after"] = after["held_out_rewards"]["rewards"]
        summary["reward_prompts"] = after["held_out_rewards"]["prompts"]
    result["summary"] = summary
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=1)

    sections = []
    if "answers" in after:
        rows = [{"prompt": p, "before": b, "after": a}
                for p, b, a in zip(recipe.eval_prompts, before["answers"], after["answers"])]
        print("\nAnswers before and after training (greedy):\n")
        print(generation.text_table(rows))
        sections += ["## Answers before and after (greedy)", "", generation.markdown_table(rows), ""]
    if "identity" in after:
        rows = [{"prompt": p, "before": b, "after": a} for p, b, a in
                zip(after["identity"]["prompts"], before["identity"]["answers"], after["identity"]["answers"])]
        lines = [
            f"Held-out identity prompts answered with the name {recipe.identity_new_name!r}: "
            f"{summary['adoption_before']:.0%} before, {summary['adoption_after']:.0%} after"
            + (f" ({summary['adoption_before_own_template']:.0%} before through the model's own template)"
               if "adoption_before_own_template" in summary else "")
        ]
        print("\nHeld-out identity prompts (greedy):\n")
        print(generation.text_table(rows))
        print("\n" + lines[0])
        sections += ["## Identity", "", *lines, "", generation.markdown_table(rows), ""]
    if "perplexity" in after:
        line = (f"Perplexity of the held-out answers of `{recipe.perplexity_dataset}`: {summary['perplexity_before']:.3f} "
                f"before, {summary['perplexity_after']:.3f} after ({summary['perplexity_change']:+.1%})")
        print(line)
        sections += ["## General ability", "", line, ""]

    if "held_out_rewards" in after:
        per = ", ".join(f"{name} {summary['rewards_before'][name]:.3f} -> {value:.3f}"
                        for name, value in summary["rewards_after"].items())
        line = (f"Mean reward of greedy answers to {summary['reward_prompts']} held-out prompts "
                f"(`{recipe.dataset_name}` [{recipe.dataset_test_split}]): {summary['reward_before']:.3f} before, "
                f"{summary['reward_after']:.3f} after ({per})")
        print("\n" + line)
        examples = [{"prompt": "", "before": b, "after": a} for b, a in
                    zip(before["held_out_rewards"]["examples"], after["held_out_rewards"]["examples"])]
        sections += ["## Held-out rewards", "", line, "", generation.markdown_table(examples, ("before", "after")), ""]
    metrics = json.load(open(os.path.join(out, "metrics.json")))["final"]
    rows_trained = len(trainer.train_dataset) if trainer.train_dataset is not None else "?"
    rows_eval = len(trainer.eval_dataset) if getattr(trainer, "eval_dataset", None) is not None else 0
    data_source = recipe.dataset_name or recipe.dataset_mixture or getattr(recipe, "identity_prompts", None)
    lines = [
        f"# {args.method.upper()} run: {out}",
        "",
        f"- model: `{args.model.model_name_or_path}`"
        + (f" with LoRA r={args.model.lora_r}" if args.model.use_peft else " (full parameters)")
        + (" on a 4-bit base (QLoRA)" if args.model.load_in_4bit else ""),
        f"- data: `{data_source}`: {rows_trained} training rows"
        + (f", {rows_eval} evaluation rows" if rows_eval else "")
        + (" (pairs curated from the model's own answers: identity_pairs.jsonl)"
           if getattr(recipe, "identity_new_name", None) else ""),
        f"- config: `{args.config_path}` (every resolved value in config.yaml)",
        f"- optimizer steps: {trainer.state.global_step}",
        "",
        "## Config (values that are not defaults)",
        "",
        config_table(args),
        "",
        "## Final metrics",
        "",
        *[f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()],
        "",
        *(["## Curves", "", "![training curves](curves.png)", ""]
          if os.path.isfile(os.path.join(out, "curves.png")) else []),
        *sections,
    ]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines))
    return result
