"""The output folder's model card: README.md in the hub's format (YAML metadata, then prose), what the hub, model
browsers and `huggingface_hub.ModelCard` read. Written with the report, from the same figures, so that a folder
copied or pushed anywhere says what it holds: the base model, the method, the data, the before/after figures, how
to load it.
"""

from __future__ import annotations

import os

from . import modeling, resources

# Hub ids of our short names, and the licenses we know of (the card leaves out what it does not know).
HUB_IDS = {modeling.DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}


def hub_id(name: str | None) -> str | None:
    """The hub id a model or data set name stands for, or None for a local folder, a file or a generated set."""
    if not name or name.startswith("builtin:"):
        return None
    if name in HUB_IDS:
        return HUB_IDS[name]
    if name.count("/") == 1 and not resources.looks_local(name) and not os.path.exists(name):
        return name
    return None


def data_names(recipe) -> list[str]:
    """Every data set a run read: `dataset_name`, or each entry of `dataset_mixture`."""
    if recipe.dataset_mixture:
        return [str(entry.get("path") or entry.get("id") or "") for entry in recipe.dataset_mixture]
    return [recipe.dataset_name] if recipe.dataset_name else []


def render(run, *, steps: int, data: str, figures: list[dict], config_table: str) -> str:
    """The card's text: metadata (base_model, library_name, pipeline_tag, tags, datasets, license when known), then
    what was trained and how, the before/after figures, how to load it, where the rest is."""
    from huggingface_hub import ModelCardData

    args = run.args
    base = args.model.model_name_or_path
    base_id = hub_id(base)
    adapter = run.has("adapter_config.json")
    scorer = modeling.kind_of(run.path) == modeling.SCORER
    datasets = sorted({d for d in map(hub_id, data_names(args.recipe)) if d})
    metadata = ModelCardData(
        base_model=base_id, library_name="peft" if adapter else "transformers", license=LICENSES.get(base_id),
        pipeline_tag="text-classification" if scorer else "text-generation", datasets=datasets or None,
        tags=["posttrain-dist", "trl", args.method] + (["lora"] if adapter else []) + (["qlora"] if args.model.load_in_4bit else []),
    )
    how = (f"a LoRA adapter, r={args.model.lora_r}" + (", on a 4-bit base (QLoRA)" if args.model.load_in_4bit else "")
           if adapter else "full parameters")
    auto = "AutoModelForSequenceClassification" if scorer else "AutoModelForCausalLM"
    name = os.path.basename(os.path.normpath(run.path))
    lines = [
        f"# {name}", "",
        f"`{base}` post-trained with {args.method.upper()} ({how}) by posttrain-dist on trl: {steps} optimizer steps on "
        f"{data}." + (" A reward model: one score per prompt and answer, higher for the better answer." if scorer else ""),
        "",
    ]
    if figures:
        lines += ["## Before and after", "", "| measure | before | after |", "|---|---|---|",
                  *[f"| {row['measure']} | {row['before']} | {row['after']} |" for row in figures], ""]
    lines += ["## Use", "", "```python", f"from transformers import {auto}, AutoTokenizer", ""]
    if adapter:
        lines += [f'# the adapter merged into its base (saved when `merge_adapter: true`): "{name}/merged"',
                  f'model = {auto}.from_pretrained("{name}/merged")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{name}/merged")',
                  "# or the adapter on its base, with peft:",
                  f'# from peft import PeftModel; model = PeftModel.from_pretrained({auto}.from_pretrained("{base}"), "{name}")']
    else:
        lines += [f'model = {auto}.from_pretrained("{name}")', f'tokenizer = AutoTokenizer.from_pretrained("{name}")']
    lines += ["```", "", "The tokenizer keeps the chat template the model was trained with.", "",
              "## Training", "",
              "- every resolved value: `config.yaml`; the full report: `report.md`; curves: `curves.png`; "
              "metrics: `metrics.json`", "",
              # output_dir left out: a path on the machine that trained it
              "\n".join(line for line in config_table.splitlines() if not line.startswith("| `output_dir`")), "",
              "## Intended use and limits", "",
              "Made by a post-training run and measured only as above: check it on your own prompts before use. It "
              "keeps the base model's license and limits.", ""]
    return "\n".join(["---", metadata.to_yaml(), "---", "", *lines])
