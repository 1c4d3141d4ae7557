"""`posttrain-dist launch`, `vllm-server` and `slurm-layout`: start a recipe on this node, after checking it."""

from __future__ import annotations

import os
import shlex
import signal
import sys

from .. import lock, methods
from ..run_folder import RunFolder


def add(sub) -> None:
    p = sub.add_parser("launch", help="start a recipe on this node: one machine, explicit ranks, or from Slurm")
    p.add_argument("method", choices=methods.names())
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
    p.add_argument("method", choices=methods.names())
    p.add_argument("preset", help="the recipe YAML")
    p.add_argument("--signalled", action="store_true", help="the batch script itself got the time-limit signal: "
                   "requeue unless the run finished, even if it could not write its mark")
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
    # a token leaves the command line for the environment the recipe processes inherit (never printed, never in ps)
    recipe_args, secrets = launching.without_secrets(["--config", resources.preset(args.preset), *args.recipe_args])
    os.environ.update(secrets)
    cluster = launching.resolve_cluster(args.nodes, args.node_rank, args.processes_per_node, args.head, args.port,
                                        args.single_node)
    env = environment.from_accelerate_file(accelerate_config, cluster.nodes if cluster else 1,
                                           args.processes_per_node or (cluster.processes_per_node if cluster else None))
    # Refuse a bad config here, before any process starts or any GPU is held; batch arithmetic for env.world_size.
    # A finished run ends here too (exit 0, nothing started).
    run = checks.parse(args.method, list(recipe_args), env)
    folder = RunFolder(run)

    script = resources.recipe_script(args.method)
    cmd = launching.accelerate_command(cluster, accelerate_config, script, recipe_args, args.processes_per_node,
                                       env.kind == "deepspeed")
    if args.print:
        print(" ".join(shlex.quote(c) for c in cmd), flush=True)
        return
    # One run per output folder: node 0's launcher holds it; its recipe processes share the token, so the main one
    # finds the lock its own (inside Slurm the token is the job id, the same on every node and every attempt).
    os.environ[lock.TOKEN_VARIABLE] = lock.run_token()
    if cluster is None or cluster.node_rank == 0:
        lock.acquire(folder.path, os.environ[lock.TOKEN_VARIABLE])
    if cluster is not None:  # one line per node in the job log: which rank each node took, and where they meet
        where = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
        print(f"posttrain-dist launch on {where}: node {cluster.node_rank} of {cluster.nodes}, "
              f"{cluster.processes_per_node} process(es), rendezvous {cluster.head}:{cluster.port}", flush=True)
    # The launcher outlives a preemption signal and passes it on to the recipe processes, which checkpoint and stop.
    # Where they could not (the signal killed them before their handler existed), node 0 marks the run preempted
    # itself: it resumes from its last complete checkpoint.
    main_node = cluster is None or cluster.node_rank == 0

    def mark_for_them(signum) -> bool:
        if not main_node or folder.finished() is not None:
            return False
        folder.mark_preempted(None, signum)
        return True

    sys.exit(launching.supervise([sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]], script,
                                 lambda since: folder.preempted(since=since) is not None, mark=mark_for_them))


def preempted(args) -> None:
    """Exit 0 when the run stopped for the time-limit signal (USR1) in this attempt of the Slurm job: requeue it.
    A stop for SIGTERM is not requeued here: Slurm requeues a preempted job itself, and `scancel` means stop."""
    from .. import checks, environment, parsing, resources

    env = environment.probe()
    run = parsing.parse(args.method, ["--config", resources.preset(args.preset), *args.recipe_args], env)
    checks.resolve_output_dir(run)
    folder = RunFolder(run)
    if folder.finished() is not None:
        print(f"finished: not requeued ({run.training.output_dir})", flush=True)
        sys.exit(1)
    mark = folder.preempted(attempt=env.attempt)
    if (mark is None or mark.get("signal") != signal.SIGUSR1) and not args.signalled:
        print(f"not preempted by the time-limit signal in this attempt ({run.training.output_dir})", flush=True)
        sys.exit(1)
    if mark is None:
        print(f"signalled for the time limit before the run could mark itself: requeued to resume from its last "
              f"complete checkpoint ({run.training.output_dir})", flush=True)
        return
    where = f"checkpoint-{mark['step']}" if mark.get("step") is not None else "its last complete checkpoint"
    print(f"preempted at {where} in {run.training.output_dir}", flush=True)


def vllm_server(args) -> None:
    from .. import environment, launching, parsing, resources

    # The server only reads the model and the port: the training nodes own the run (and its output folder).
    preset = resources.preset(args.preset)  # a GRPO or RLOO preset: the method its own `method:` line names
    run = parsing.parse(parsing.preset_method(preset) or "grpo", ["--config", preset],
                        environment.Environment(for_gpus=True))
    gpus = max(1, launching.gpus_on_node(dict(os.environ)))
    cmd = ["trl", "vllm-serve", "--model", run.model.model_name_or_path, *launching.vllm_parallelism(gpus),
           "--port", str(run.training.vllm_server_port), "--host", server_host()]
    if args.print:
        print(" ".join(shlex.quote(c) for c in cmd), flush=True)
        return
    os.execvp(cmd[0], cmd)


def server_host() -> str:
    """Where the vLLM server listens: the address the job's training nodes reach it at (SERVER_ADDR from
    `slurm-layout`, or this node's NodeAddr), never every interface: its weight-update endpoints take no key, so
    on 0.0.0.0 anyone who reaches the node could replace the policy's weights."""
    from .. import launching

    if os.environ.get("SERVER_ADDR"):
        return os.environ["SERVER_ADDR"]
    node = os.environ.get("SLURMD_NODENAME")
    return launching.node_address(node) if node else "127.0.0.1"


def slurm_layout(args) -> None:
    from .. import launching

    for key, value in launching.vllm_layout(server_nodes=args.server_nodes).items():
        print(f"export {key}={value}")
