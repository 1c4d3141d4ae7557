"""`posttrain-dist curate`: building training data (the course's methods): correction pairs, best-of-K,
distillation from a teacher, filtering for quality and diversity."""

from __future__ import annotations


def add(sub) -> None:
    curate = sub.add_parser("curate", help="build training data from a model's own answers").add_subparsers(
        dest="kind", required=True)
    p = curate.add_parser("identity", help="correction pairs for an identity change (DPO data)")
    p.add_argument("--new-name", required=True)
    p.add_argument("--old-names", nargs="+", default=["SmolLM2", "SmolLM"])
    p.add_argument("--identical", choices=["rewrite", "drop"], default="rewrite",
                   help="what to do when the corrected answer equals the model's own")
    p.add_argument("--contexts", default="builtin:identity-contexts",
                   help="system prompts and earlier exchanges the questions are also asked after (train split); none: off")
    p.add_argument("--unrelated", default="builtin:unrelated",
                   help="unrelated prompts for contrast pairs (train split); none: off")
    p.add_argument("--contrast-ratio", type=float, default=1.0, help="contrast pairs per identity pair")
    p.set_defaults(func=identity)
    q = curate.add_parser("best-of-k", help="K sampled answers per prompt, scored by a reward")
    q.add_argument("--reward", required=True, help="a registered reward name or package.module:function")
    q.add_argument("--k", type=int, default=4)
    q.add_argument("--sft-out", help="also write the best answers as SFT prompt/completion rows")
    q.set_defaults(func=best_of_k)
    d = curate.add_parser("distill", help="a teacher answers prompts: SFT rows (messages) for a student")
    d.add_argument("--teacher", required=True, help="short name, model folder or hub id")
    d.add_argument("--prompts", required=True, help="a source with a `prompt` column (plain or conversational)")
    d.add_argument("--split", default="train")
    d.add_argument("--columns", help="rename columns first: question=prompt")
    d.add_argument("--system", help="a system prompt for the teacher only (context distillation)")
    d.add_argument("--reward", help="keep the best answer that passes this reward (rejection sampling)")
    d.add_argument("--samples", type=int, default=1, help="answers per prompt (sampled when above 1; needs --reward)")
    d.add_argument("--min-reward", type=float, default=1.0, help="what a passing answer scores at least")
    d.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (and per saved step)")
    d.add_argument("--max-new-tokens", type=int, default=256)
    d.add_argument("--temperature", type=float, default=0.0, help="0: greedy answers; above 0: sampled")
    d.add_argument("--chat-template", help="template to ask through (default: the teacher tokenizer's own)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="JSONL file of SFT rows; a rerun resumes where it stopped")
    d.set_defaults(func=distill)

    f = curate.add_parser("filter", help="keep high-quality, diverse rows: duplicates, quality rules, selection")
    f.add_argument("--data", required=True, help="any SFT layout (messages, ShareGPT, Alpaca, prompt/completion, text)")
    f.add_argument("--split", default="train")
    f.add_argument("--out", required=True, help="JSONL file: the rows kept, unchanged, in input order")
    f.add_argument("--keep-exact-duplicates", action="store_true", help="do not remove exact duplicates")
    f.add_argument("--keep-near-duplicates", action="store_true", help="do not remove near duplicates")
    f.add_argument("--near-threshold", type=float, default=0.8, help="Jaccard similarity of word 3-shingles")
    f.add_argument("--min-prompt-words", type=int)
    f.add_argument("--max-prompt-words", type=int)
    f.add_argument("--min-response-words", type=int)
    f.add_argument("--max-response-words", type=int)
    f.add_argument("--drop-empty-or-truncated", action="store_true", help="responses with no text or cut off mid-sentence")
    f.add_argument("--refusals", nargs="*", metavar="PHRASE",
                   help="drop refusals and boilerplate (a built-in list, plus these phrases)")
    f.add_argument("--reward", help="score responses with this reward; keep [--min-score, --max-score]")
    f.add_argument("--min-score", type=float)
    f.add_argument("--max-score", type=float)
    f.add_argument("--perplexity-model", help="score responses by their perplexity under this model")
    f.add_argument("--min-perplexity", type=float)
    f.add_argument("--max-perplexity", type=float)
    f.add_argument("--select", type=int, help="keep N rows that cover the data (k-center greedy), not the first N")
    f.add_argument("--embedding-model", default="smollm2-135m-instruct",
                   help="model whose mean hidden state embeds rows for --select, or `hashing` (bags of words)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=filter_rows)

    for parser in (p, q):
        parser.add_argument("--model", default="smollm2-135m-instruct")
        parser.add_argument("--prompts", default="builtin:identity", help="a source with a `prompt` column")
        parser.add_argument("--split", default="train")
        parser.add_argument("--samples", type=int, default=1, help="answers per prompt (identity; >1 samples)")
        parser.add_argument("--temperature", type=float, default=0.8)
        parser.add_argument("--max-new-tokens", type=int, default=48)
        parser.add_argument("--chat-template", help="template to ask through (default: the tokenizer's own)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", required=True, help="JSONL file to write")


def identity(args) -> None:
    from .. import curation

    off = lambda value: None if str(value).lower() in ("", "none", "null") else value  # noqa: E731
    unrelated = curation.load_prompts(off(args.unrelated), "train") if off(args.unrelated) else None
    rows, stats = curation.curate_identity(args.model, curation.load_prompts(args.prompts, args.split), args.new_name,
                                           args.old_names, args.samples, args.temperature, args.max_new_tokens,
                                           args.seed, args.identical, args.chat_template, None, off(args.contexts),
                                           unrelated, args.contrast_ratio)
    curation.write_jsonl(args.out, rows)
    print(f"{stats.summary()} -> {len(rows)} pairs written to {args.out}")


def best_of_k(args) -> None:
    from .. import curation

    pairs, sft, stats = curation.best_of_k_from(args.prompts, args.split, args.reward, args.model, args.k,
                                                args.temperature, args.max_new_tokens, args.seed, args.chat_template)
    curation.write_jsonl(args.out, pairs)
    if args.sft_out:
        curation.write_jsonl(args.sft_out, sft)
    print(f"{stats.summary()}; {len(pairs)} pairs written to {args.out}"
          + (f", {len(sft)} best answers to {args.sft_out}" if args.sft_out else ""))


def distill(args) -> None:
    from .. import config, distill as distillation, rewards

    reward = rewards.resolve(args.reward) if args.reward else None
    columns = config._column_mapping(args.columns, "--columns") if args.columns else None
    prompts = distillation.load_prompts(args.prompts, args.split, columns)
    stats = distillation.distill(args.teacher, prompts, args.out, args.system, reward, args.samples, args.min_reward,
                                 args.batch_size, args.max_new_tokens, args.temperature, args.seed, args.chat_template)
    if stats.kept or stats.no_pass:
        print(f"{stats.summary()} -> {args.out}")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # under accelerate launch: end together, group closed
        dist.destroy_process_group()


def filter_rows(args) -> None:
    import json

    from .. import filtering, rewards, sources

    dataset = sources.load_source(args.data, args.split)
    rules = filtering.Rules(
        exact=not args.keep_exact_duplicates, near=not args.keep_near_duplicates, near_threshold=args.near_threshold,
        min_prompt_words=args.min_prompt_words, max_prompt_words=args.max_prompt_words,
        min_response_words=args.min_response_words, max_response_words=args.max_response_words,
        drop_empty_or_truncated=args.drop_empty_or_truncated, refusals=args.refusals,
        reward=rewards.resolve(args.reward) if args.reward else None, min_score=args.min_score, max_score=args.max_score,
        perplexity_model=args.perplexity_model, min_perplexity=args.min_perplexity, max_perplexity=args.max_perplexity,
        select=args.select, embedding_model=args.embedding_model, seed=args.seed)
    keep, table = filtering.apply(dataset, rules)
    rows = dataset.select(keep).to_list()
    with open(args.out, "w") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    print(filtering.render(table, len(dataset)))
    print(f"{len(rows)} rows written to {args.out}")
