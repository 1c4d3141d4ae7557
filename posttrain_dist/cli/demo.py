"""`posttrain-dist demo`: the main job (`make demo`)."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("demo", help="the main job: change SmolLM2's identity with DPO, on a CPU")
    p.add_argument("--config", default="recipes/smollm2-135m/dpo_identity.yaml")
    p.add_argument("--output", default="outputs/demo")
    p.add_argument("--started-at", type=float, help="epoch seconds when the demo started (make demo: before install)")
    p.set_defaults(func=run)


def run(args) -> None:
    from .. import demo

    demo.run(args.config, args.output, args.started_at)
