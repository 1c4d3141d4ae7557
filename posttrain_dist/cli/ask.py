"""`posttrain-dist ask` and `compare`: greedy answers of one model, or of two side by side."""

from __future__ import annotations

from ..errors import ConfigError


def add(sub) -> None:
    p = sub.add_parser("ask", help="answer questions with one model")
    p.add_argument("model", help="short name, model folder or LoRA adapter folder")
    p.set_defaults(func=ask)
    q = sub.add_parser("compare", help="answers of two models side by side (before/after training)")
    q.add_argument("before", help="model before training (short name or folder)")
    q.add_argument("after", help="model after training (folder, or LoRA adapter folder)")
    q.add_argument("--markdown", action="store_true", help="print a markdown table")
    q.add_argument("--chat-template", help="template for the model before training (the one training used)")
    q.add_argument("--new-name", help="also measure the identity change to this name: adoption (plainly, under a "
                   "system prompt, as a later turn), leakage into unrelated answers, simple questions, perplexity")
    q.add_argument("--identity-prompts", default="builtin:identity", help="source whose `test` split is asked")
    q.add_argument("--contexts", default="builtin:identity-contexts", help="system prompts and earlier turns (test split)")
    q.add_argument("--unrelated", default="builtin:unrelated", help="unrelated prompts for the leakage (test split)")
    q.add_argument("--general-questions", default="builtin:simple-questions", help="questions with accepted answers")
    q.add_argument("--perplexity-dataset", default="builtin:sft-basics", help="held-out answers for the perplexity")
    q.add_argument("--tasks", help="also lm-eval tasks (comma-separated names or task YAML files), scored on both")
    q.add_argument("--tasks-limit", type=int, help="rows per lm-eval task (default: all)")
    q.set_defaults(func=compare)
    for parser in (p, q):
        parser.add_argument("prompts", nargs="*", help="questions")
        parser.add_argument("--prompts-file", help="a file with one question per line")
        parser.add_argument("--max-new-tokens", type=int, default=64)


def read_prompts(args) -> list[str]:
    prompts = list(args.prompts or [])
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ConfigError("no questions: give them as arguments or with --prompts-file (one per line).")
    return prompts


def ask(args) -> None:
    from .. import generation

    model, tokenizer = generation.load_for_generation(args.model)
    prompts = read_prompts(args)
    for prompt, text in zip(prompts, generation.answer(model, tokenizer, prompts, args.max_new_tokens)):
        print(f"Q: {prompt}\nA: {text}\n")


def compare(args) -> None:
    from .. import evaluation, generation, report

    show = generation.markdown_table if args.markdown else generation.text_table
    if not (args.prompts or args.prompts_file or args.new_name or args.tasks):
        raise ConfigError("nothing to compare: give questions, --prompts-file, --new-name for the identity check, or "
                          "--tasks for lm-eval tasks.")
    if args.prompts or args.prompts_file:
        rows = generation.before_after(args.before, args.after, read_prompts(args), args.max_new_tokens,
                                       chat_template=args.chat_template)
        print(show(rows))
    if args.new_name or args.tasks:
        from .. import config, environment, harness, identity
        from ..methods import sft

        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
        harness.check(tasks)
        identity_check = dict(
            eval_identity=args.new_name, identity_prompts=args.identity_prompts, identity_contexts=args.contexts,
            identity_unrelated=args.unrelated, general_questions=args.general_questions,
            perplexity_dataset=args.perplexity_dataset) if args.new_name else {}
        recipe = sft.SFTRecipeArgs(**identity_check, chat_template=args.chat_template, eval_tasks=tasks,
                                   eval_tasks_limit=args.tasks_limit)
        run = config.Args("sft", recipe, config.ModelArgs(model_name_or_path=args.before), None, {}, None,
                          environment.probe())
        result = evaluation.compare(run, evaluation.chosen(run, own=identity.EVALUATORS), args.before, args.after)
        print("\n".join(result["sections"]) if args.markdown else result["text"])
        print("\n" + report.figures_table(result["summary"]))
