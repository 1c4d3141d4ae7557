"""`posttrain-dist merge`: merge a LoRA adapter into its base in full precision, and check the greedy answers."""

from __future__ import annotations

import os

from .ask import read_prompts


def add(sub) -> None:
    p = sub.add_parser("merge", help="merge a LoRA adapter into its base in full precision and check it")
    p.add_argument("adapter", help="the output folder of a LoRA/QLoRA run (adapter_config.json)")
    p.add_argument("--out", help="where the merged model goes (default: ADAPTER/merged)")
    p.add_argument("prompts", nargs="*", help="questions to compare on (default: a few built in)")
    p.add_argument("--prompts-file")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.set_defaults(func=merge)


def merge(args) -> None:
    from .. import generation, modeling, served
    from ..errors import UserError

    target = args.out or os.path.join(args.adapter, "merged")
    modeling.merge_adapter(args.adapter, target)
    print(f"merged {args.adapter} into its base (float32): {target}")
    prompts = read_prompts(args) if (args.prompts or args.prompts_file) else generation.MERGE_CHECK_PROMPTS
    check = generation.same_greedy_answers(args.adapter, target, prompts, args.max_new_tokens)
    print(generation.text_table(check["rows"], ("prompt", "adapter", "merged")))
    print(f"\nlargest logit difference on the prompts: {check['max_logit_difference']:.2e}")
    if not check["equal"]:
        raise UserError(f"the merged model answers {check['differing']} of {len(prompts)} prompts differently from "
                        f"the adapter model; do not ship {target} (see the table above).")
    print(f"greedy answers equal on all {len(prompts)} prompts")
    result = served.check(target, args.adapter, prompts, args.max_new_tokens)
    print(served.summary(result))
    if result.get("checked") and not result["equal"]:
        raise UserError(f"vLLM serving {target} answers differently from the adapter model; do not ship it.")
