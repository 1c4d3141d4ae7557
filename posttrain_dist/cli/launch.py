"""`posttrain-dist launch`, `vllm-server` and `slurm-layout`: start a recipe on this node, after checking it."""

from __future__ import annotations

import os
import shlex
import signal
import sys

from ..run_folder import RunFolder


def add(sub) -> None:
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
    p.set_defaults(func=launch)  # flags for the recipe follow `--`

    p = sub.add_parser("preempted", help="exit 0 when the run stopped for the time-limit signal in this Slurm attempt")
    p.add_argument("method", choices=["sft", "dpo", "grpo"])
    p.add_argument("preset", help="the recipe YAML")
    p.set_defaults(func=preempted)  # the recipe flags of the run follow `--`

    p = sub.add_parser("vllm-server", help="serve a GRPO preset's model with `trl vllm-serve` on this node")
    p.add_argument("preset")
    p.add_argument("--print", action="store_true")
    p.set_defaults(func=vllm_server)

    p = sub.add_parser("slurm-layout", help="print shell exports splitting a Slurm job into training and vLLM nodes")
    p.add_argument("--server-nodes", type=int, default=1)
    p.set_defaults(func=slurm_layout)


def launch(args) -> None:
    from .. import checks, environment, launching, resources

    accelerate_config = resources.accelerate_config(args.accelerate)
    recipe_args = ["--config", resources.preset(args.preset), *args.recipe_args]
    cluster = launching.resolve_cluster(args.nodes, args.node_rank, args.processes_per_node, args.head, args.port,
                                        args.single_node)
    env = environment.from_accelerate_file(accelerate_config, cluster.nodes if cluster else 1,
                                           args.processes_per_node or (cluster.processes_per_node if cluster else None))
    # Refuse a bad config here, before any process starts or any GPU is held; batch arithmetic for env.world_size.
    run = checks.parse(args.method, list(recipe_args), env)
    script = resources.recipe_script(args.method)
    cmd = launching.accelerate_command(cluster, accelerate_config, script, recipe_args, args.processes_per_node,
                                       env.kind == "deepspeed")
    if args.print:
        print(" ".join(shlex.quote(c) for c in cmd), flush=True)
        return
    if cluster is not None:  # one line per node in the job log: which rank each node took, and where they meet
        where = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
        print(f"posttrain-dist launch on {where}: node {cluster.node_rank} of {cluster.nodes}, "
              f"{cluster.processes_per_node} process(es), rendezvous {cluster.head}:{cluster.port}", flush=True)
    # The launcher outlives a preemption signal and passes it on to the recipe processes, which checkpoint and stop.
    folder = RunFolder(run)
    sys.exit(launching.supervise([sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]], script,
                                 lambda since: folder.preempted(since=since) is not None))


def preempted(args) -> None:
    """Exit 0 when the run stopped for the time-limit signal (USR1) in this attempt of the Slurm job: requeue it.
    A stop for SIGTERM is not requeued here: Slurm requeues a preempted job itself, and `scancel` means stop."""
    from .. import checks, environment, parsing, resources

    env = environment.probe()
    run = parsing.parse(args.method, ["--config", resources.preset(args.preset), *args.recipe_args], env)
    checks.resolve_output_dir(run)
    mark = RunFolder(run).preempted(attempt=env.attempt)
    if mark is None or mark.get("signal") != signal.SIGUSR1:
        print(f"not preempted by the time-limit signal in this attempt ({run.training.output_dir})", flush=True)
        sys.exit(1)
    where = f"checkpoint-{mark['step']}" if mark.get("step") is not None else "before training"
    print(f"preempted at {where} in {run.training.output_dir}", flush=True)


def vllm_server(args) -> None:
    from .. import environment, launching, parsing, resources

    # The server only reads the model and the port: the training nodes own the run (and its output folder).
    run = parsing.parse("grpo", ["--config", resources.preset(args.preset)], environment.Environment(for_gpus=True))
    gpus = max(1, launching.gpus_on_node(dict(os.environ)))
    cmd = ["trl", "vllm-serve", "--model", run.model.model_name_or_path, *launching.vllm_parallelism(gpus),
           "--port", str(run.training.vllm_server_port), "--host", "0.0.0.0"]
    if args.print:
        print(" ".join(shlex.quote(c) for c in cmd), flush=True)
        return
    os.execvp(cmd[0], cmd)


def slurm_layout(args) -> None:
    from .. import launching

    for key, value in launching.vllm_layout(server_nodes=args.server_nodes).items():
        print(f"export {key}={value}")
