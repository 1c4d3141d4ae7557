"""`posttrain-dist plan`: what a recipe config will do, checked as the run would check it, before any weights load."""

from __future__ import annotations

from .. import methods


def add(sub) -> None:
    p = sub.add_parser("plan", help="check a recipe config and its data; show batch, steps, launch command and memory")
    p.add_argument("preset", help="the recipe YAML (a path, or a shipped preset such as smollm2-135m/sft_lora)")
    p.add_argument("--method", choices=methods.names(), help="default: the preset's `method`")
    p.add_argument("--accelerate", default="cpu", help="a name in accelerate_configs/ (zero3, ddp, ...) or a path")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, help="default: the accelerate config's num_processes")
    p.add_argument("--all", action="store_true", help="list every config value, defaults included")
    p.set_defaults(func=plan)  # recipe overrides follow `--`


def plan(args) -> None:
    from .. import planning, resources

    preset = resources.preset(args.preset)
    accelerate_config = resources.display(resources.accelerate_config(args.accelerate))
    made = planning.make(planning.method_of(preset, args.method), preset, accelerate_config, args.nodes,
                         args.gpus_per_node, args.recipe_args)
    print(planning.render(made, show_all=args.all))
