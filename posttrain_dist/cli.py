"""The `posttrain-dist` command: helpers around the recipes.

    posttrain-dist demo                        the main job: change SmolLM2's identity with DPO, on a CPU
    posttrain-dist models                      short model names and whether they are built
    posttrain-dist prepare-model [NAME]        build a short-named model into the cache now
    posttrain-dist ask MODEL "question" ...    greedy answers through the chat template
    posttrain-dist compare BEFORE AFTER ...    before/after answers side by side, identity adoption rate
    posttrain-dist curate identity ...         correction pairs: the model's answers vs renamed ones (DPO data)
    posttrain-dist curate best-of-k ...        K sampled answers scored by a reward: pairs and SFT rows
    posttrain-dist tasks arithmetic|countdown  generated verifiable tasks with a seed, to JSONL
    posttrain-dist plan PRESET [--accelerate X] resolved config, batch and steps, launch command, memory estimate
    posttrain-dist merge ADAPTER_DIR           merge a LoRA adapter into its base; check greedy answers match
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import report_user_errors


def _models(args) -> None:
    from . import modeling

    for name, (description, _) in modeling.SHORT_NAMES.items():
        folder = modeling.cache_dir() / "models" / name
        state = f"built in {folder}" if (folder / "config.json").is_file() else "not built yet (built on first use)"
        print(f"{name:24s} {description}\n{'':24s} {state}")


def _prepare_model(args) -> None:
    from . import modeling

    print(modeling.resolve_model(args.name))


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompts or [])
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        from .errors import ConfigError

        raise ConfigError("no questions: give them as arguments or with --prompts-file (one per line).")
    return prompts


def _ask(args) -> None:
    from . import generation

    model, tokenizer = generation.load_for_generation(args.model)
    prompts = _read_prompts(args)
    for prompt, text in zip(prompts, generation.answer(model, tokenizer, prompts, args.max_new_tokens)):
        print(f"Q: {prompt}\nA: {text}\n")


def _compare(args) -> None:
    from . import curation, generation

    show = generation.markdown_table if args.markdown else generation.text_table
    if args.prompts or args.prompts_file:
        rows = generation.before_after(args.before, args.after, _read_prompts(args), args.max_new_tokens,
                                       chat_template=args.chat_template)
        print(show(rows))
    if args.new_name:
        prompts = curation.load_prompts(args.identity_prompts, "test")
        rows = generation.before_after(args.before, args.after, prompts, args.max_new_tokens,
                                       chat_template=args.chat_template)
        print(show(rows))
        before = generation.adoption_rate([r["before"] for r in rows], args.new_name)
        after = generation.adoption_rate([r["after"] for r in rows], args.new_name)
        print(f"\nidentity adoption ({args.new_name!r}, {len(rows)} held-out prompts): {before:.0%} before, {after:.0%} after")
    if not (args.prompts or args.prompts_file or args.new_name):
        from .errors import ConfigError

        raise ConfigError("nothing to compare: give questions, --prompts-file, or --new-name for the identity check.")


def _curate_identity(args) -> None:
    from . import curation, generation

    prompts = curation.load_prompts(args.prompts, args.split)
    model, tokenizer = generation.load_for_generation(args.model, chat_template=args.chat_template)
    answers = curation.sample_answers(model, tokenizer, prompts, args.samples, args.temperature, args.max_new_tokens,
                                      args.seed)
    asked = [p for p, group in zip(prompts, answers) for _ in group]
    rows, stats = curation.correction_pairs(asked, [a for g in answers for a in g], args.new_name, args.old_names,
                                            args.identical)
    curation.write_jsonl(args.out, rows)
    print(f"{stats.summary()} -> {len(rows)} pairs written to {args.out}")


def _curate_best_of_k(args) -> None:
    from . import curation, data, generation, rewards

    reward = rewards.resolve(args.reward)
    dataset = data.load_source(args.prompts, args.split)
    prompts = curation.load_prompts(args.prompts, args.split)
    columns = {c: dataset[c] for c in dataset.column_names if c != "prompt"}
    model, tokenizer = generation.load_for_generation(args.model, chat_template=args.chat_template)
    samples = curation.sample_answers(model, tokenizer, prompts, args.k, args.temperature, args.max_new_tokens, args.seed)
    pairs, sft, stats = curation.best_of_k(prompts, samples, reward, **columns)
    curation.write_jsonl(args.out, pairs)
    if args.sft_out:
        curation.write_jsonl(args.sft_out, sft)
    print(f"{stats.summary()}; {len(pairs)} pairs written to {args.out}"
          + (f", {len(sft)} best answers to {args.sft_out}" if args.sft_out else ""))


def _tasks(args) -> None:
    from . import curation, tasks

    if args.task == "arithmetic":
        rows = tasks.arithmetic(args.split, args.seed, args.low, args.high, args.ops, args.test_size, args.size)
    else:
        rows = tasks.countdown(args.split, args.seed, args.size)
    curation.write_jsonl(args.out, rows)
    print(f"{len(rows)} {args.task} problems ({args.split}, seed {args.seed}) written to {args.out}")


def _accelerate_config(name: str) -> str:
    from .demo import ROOT

    if os.path.isfile(name):
        return name
    path = ROOT / "accelerate_configs" / f"{name}.yaml"
    if not path.is_file():
        from .errors import ConfigError

        known = sorted(p.stem for p in (ROOT / "accelerate_configs").glob("*.yaml"))
        raise ConfigError(f"accelerate config {name!r} is neither a file nor one of {known}.")
    return str(path)


def _launch(args) -> None:
    import shlex
    import signal

    from . import config, launching
    from .demo import ROOT

    accelerate_config = _accelerate_config(args.accelerate)
    recipe_args = ["--config", args.preset, *args.recipe_args]
    if args.nodes is not None:
        if args.head is None:
            from .errors import ConfigError

            raise ConfigError("--nodes needs --head (the address of the node with rank 0) and --node-rank.")
        cluster = launching.Cluster(args.nodes, args.node_rank, args.processes_per_node or 1, args.head, args.port)
    elif "SLURM_JOB_ID" in os.environ and not args.single_node:
        cluster = launching.from_slurm(port=args.port if args.port != 29500 else None)
    else:
        cluster = None
    world = (cluster.nodes * (args.processes_per_node or cluster.processes_per_node) if cluster else
             args.processes_per_node or launching.distributed_setup(accelerate_config).num_processes)
    # Refuse a bad config here, before any process starts or any GPU is held; batch arithmetic for `world`.
    config.parse(args.method, list(recipe_args), accelerate_config=accelerate_config, target_has_gpus=args.print,
                 world_size=world)
    script = str(ROOT / "recipes" / f"{args.method}.py")
    cmd = launching.accelerate_command(cluster, accelerate_config, script, recipe_args, args.processes_per_node)
    if args.print:
        print(" ".join(shlex.quote(c) for c in cmd), flush=True)
        return
    # Slurm's preemption signal goes to every process of the step: the launcher must outlive it, the recipe
    # processes (which install their own handler) checkpoint and exit.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    os.execv(sys.executable, [sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]])


def _method_of(preset: str, method: str | None) -> str:
    if method:
        return method
    stem = os.path.basename(preset).split("_")[0].split(".")[0]
    if stem in ("sft", "dpo", "grpo"):
        return stem
    from .errors import ConfigError

    raise ConfigError(f"cannot tell the method from the file name {preset!r}; give --method sft|dpo|grpo.")


def _plan(args) -> None:
    from . import planning

    accelerate_config = _accelerate_config(args.accelerate)
    if os.path.abspath(accelerate_config).startswith(os.getcwd() + os.sep):  # shorter to read, same file
        accelerate_config = os.path.relpath(accelerate_config)
    method = _method_of(args.preset, args.method)
    plan = planning.make(method, args.preset, accelerate_config, args.nodes, args.gpus_per_node, args.recipe_args)
    print(planning.render(plan, show_all=args.all))


def _merge(args) -> None:
    from . import generation, outputs

    target = args.out or os.path.join(args.adapter, "merged")
    outputs.merge_adapter(args.adapter, target)
    print(f"merged {args.adapter} into its base (float32): {target}")
    prompts = _read_prompts(args) if (args.prompts or args.prompts_file) else generation.MERGE_CHECK_PROMPTS
    check = generation.same_greedy_answers(args.adapter, target, prompts, args.max_new_tokens)
    print(generation.text_table(check["rows"], ("prompt", "adapter", "merged")))
    print(f"\nlargest logit difference on the prompts: {check['max_logit_difference']:.2e}")
    if not check["equal"]:
        from .errors import UserError

        raise UserError(f"the merged model answers {check['differing']} of {len(prompts)} prompts differently from "
                        f"the adapter model; do not ship {target} (see the table above).")
    print(f"greedy answers equal on all {len(prompts)} prompts")


def _vllm_server(args) -> None:
    import shlex

    from . import config, launching

    run = config.parse("grpo", ["--config", args.preset], target_has_gpus=True)
    gpus = max(1, launching.gpus_on_node(dict(os.environ)))
    cmd = ["trl", "vllm-serve", "--model", run.model.model_name_or_path, "--tensor-parallel-size", str(gpus),
           "--port", str(run.training.vllm_server_port), "--host", "0.0.0.0"]
    if args.print:
        print(" ".join(shlex.quote(c) for c in cmd), flush=True)
        return
    os.execvp(cmd[0], cmd)


def _slurm_layout(args) -> None:
    from . import launching

    for key, value in launching.vllm_layout(server_nodes=args.server_nodes).items():
        print(f"export {key}={value}")


def _demo(args) -> None:
    from . import demo

    demo.run(args.config, args.output, args.started_at)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain-dist", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list short model names").set_defaults(func=_models)

    p = sub.add_parser("prepare-model", help="build a short-named model into the cache")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=_prepare_model)

    p = sub.add_parser("ask", help="answer questions with one model")
    p.add_argument("model", help="short name, model folder or LoRA adapter folder")
    p.set_defaults(func=_ask)
    p = sub.add_parser("compare", help="answers of two models side by side (before/after training)")
    p.add_argument("before", help="model before training (short name or folder)")
    p.add_argument("after", help="model after training (folder, or LoRA adapter folder)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--chat-template", help="template for the model before training (the one training used)")
    p.add_argument("--new-name", help="also ask the held-out identity prompts and report the adoption of this name")
    p.add_argument("--identity-prompts", default="builtin:identity", help="source whose `test` split is asked")
    p.set_defaults(func=_compare)

    curate = sub.add_parser("curate", help="build training data from a model's own answers").add_subparsers(
        dest="kind", required=True)
    p = curate.add_parser("identity", help="correction pairs for an identity change (DPO data)")
    p.add_argument("--new-name", required=True)
    p.add_argument("--old-names", nargs="+", default=["SmolLM2", "SmolLM"])
    p.add_argument("--identical", choices=["rewrite", "drop"], default="rewrite",
                   help="what to do when the corrected answer equals the model's own")
    p.set_defaults(func=_curate_identity)
    q = curate.add_parser("best-of-k", help="K sampled answers per prompt, scored by a reward")
    q.add_argument("--reward", required=True, help="a registered reward name or package.module:function")
    q.add_argument("--k", type=int, default=4)
    q.add_argument("--sft-out", help="also write the best answers as SFT prompt/completion rows")
    q.set_defaults(func=_curate_best_of_k)
    for parser_ in (p, q):
        parser_.add_argument("--model", default="smollm2-135m-instruct")
        parser_.add_argument("--prompts", default="builtin:identity", help="a source with a `prompt` column")
        parser_.add_argument("--split", default="train")
        parser_.add_argument("--samples", type=int, default=1, help="answers per prompt (identity; >1 samples)")
        parser_.add_argument("--temperature", type=float, default=0.8)
        parser_.add_argument("--max-new-tokens", type=int, default=48)
        parser_.add_argument("--chat-template", help="template to ask through (default: the tokenizer's own)")
        parser_.add_argument("--seed", type=int, default=0)
        parser_.add_argument("--out", required=True, help="JSONL file to write")

    p = sub.add_parser("tasks", help="write generated verifiable tasks (prompts + answer columns) to JSONL")
    p.add_argument("task", choices=["arithmetic", "countdown"])
    p.add_argument("--split", choices=["train", "test"], default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, help="rows (arithmetic train: repeats the pairs; countdown: puzzles)")
    p.add_argument("--low", type=int, default=1, help="arithmetic: smallest operand")
    p.add_argument("--high", type=int, default=20, help="arithmetic: largest operand")
    p.add_argument("--ops", default="+", help="arithmetic: operations among + - *")
    p.add_argument("--test-size", type=int, default=100, help="arithmetic: pairs held out of training")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_tasks)

    p = sub.add_parser("launch", help="start a recipe on this node: one machine, explicit ranks, or from Slurm")
    p.add_argument("method", choices=["sft", "dpo", "grpo"])
    p.add_argument("preset", help="the recipe YAML")
    p.add_argument("--accelerate", default="cpu", help="a name in accelerate_configs/ (zero3, ddp, ...) or a path")
    p.add_argument("--nodes", type=int, help="nodes in all (explicit multi-node launch; else read from Slurm)")
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--head", help="address of the node with rank 0")
    p.add_argument("--port", type=int, default=29500)
    p.add_argument("--processes-per-node", type=int, help="default: the GPUs Slurm granted, 1 on CPU nodes")
    p.add_argument("--single-node", action="store_true", help="ignore the Slurm environment")
    p.add_argument("--print", action="store_true", help="print the accelerate command instead of running it")
    p.set_defaults(func=_launch)  # flags for the recipe follow `--`

    p = sub.add_parser("plan", help="check a recipe config and show its batch, steps, launch command and memory")
    p.add_argument("preset", help="the recipe YAML")
    p.add_argument("--method", choices=["sft", "dpo", "grpo"], help="default: from the file name (sft_*.yaml, ...)")
    p.add_argument("--accelerate", default="cpu", help="a name in accelerate_configs/ (zero3, ddp, ...) or a path")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, help="default: the accelerate config's num_processes")
    p.add_argument("--all", action="store_true", help="list every config value, defaults included")
    p.set_defaults(func=_plan)  # recipe overrides follow `--`

    p = sub.add_parser("merge", help="merge a LoRA adapter into its base in full precision and check it")
    p.add_argument("adapter", help="the output folder of a LoRA/QLoRA run (adapter_config.json)")
    p.add_argument("--out", help="where the merged model goes (default: ADAPTER/merged)")
    p.add_argument("prompts", nargs="*", help="questions to compare on (default: a few built in)")
    p.add_argument("--prompts-file")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.set_defaults(func=_merge)

    p = sub.add_parser("vllm-server", help="serve a GRPO preset's model with `trl vllm-serve` on this node")
    p.add_argument("preset")
    p.add_argument("--print", action="store_true")
    p.set_defaults(func=_vllm_server)

    p = sub.add_parser("slurm-layout", help="print shell exports splitting a Slurm job into training and vLLM nodes")
    p.add_argument("--server-nodes", type=int, default=1)
    p.set_defaults(func=_slurm_layout)

    p = sub.add_parser("demo", help="the main job: change SmolLM2's identity with DPO, on a CPU")
    p.add_argument("--config", default="recipes/smollm2-135m/dpo_identity.yaml")
    p.add_argument("--output", default="outputs/demo")
    p.add_argument("--started-at", type=float, help="epoch seconds when the demo started (make demo: before install)")
    p.set_defaults(func=_demo)
    for name in ("ask", "compare"):
        p = sub.choices[name]
        p.add_argument("prompts", nargs="*", help="questions")
        p.add_argument("--prompts-file", help="a file with one question per line")
        p.add_argument("--max-new-tokens", type=int, default=64)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    args.recipe_args = recipe_args
    args.func(args)


if __name__ == "__main__":
    main()
