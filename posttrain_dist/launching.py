"""Cluster environment -> `accelerate launch` arguments, for one node of a multi-node run or one machine.

Each Slurm task reads its own node rank, GPU count and the rendezvous node from its environment
(`from_slurm`); `accelerate_command` turns that into the node's `accelerate launch` line. The
distributed kind of a run is `environment`'s business.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError


# ---------------------------------------------------------------- clusters


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list, expanded: "gpu-[01-03,07],login1" -> gpu-01 gpu-02 gpu-03 gpu-07 login1."""
    hosts, depth, item = [], 0, ""
    for ch in nodelist + ",":
        if ch == "," and depth == 0:
            if item:
                hosts += _expand_one(item)
            item = ""
            continue
        depth += {"[": 1, "]": -1}.get(ch, 0)
        item += ch
    return hosts


def _expand_one(item: str) -> list[str]:
    if "[" not in item:
        return [item]
    head, rest = item.split("[", 1)
    ranges, tail = rest.split("]", 1)
    out = []
    for part in ranges.split(","):
        if "-" in part:
            low, high = part.split("-")
            out += [f"{head}{str(n).zfill(len(low))}" for n in range(int(low), int(high) + 1)]
        else:
            out.append(head + part)
    return [name + more for name in out for more in _expand_one(tail)]


def gpus_on_node(env: dict, count_devices=None) -> int:
    """GPUs this node may use: what Slurm granted (SLURM_GPUS_ON_NODE, SLURM_GPUS_PER_NODE "8" or "h100:8"), else
    the visible devices, else (a cluster without GRES) the GPUs torch counts; 0 without GPUs."""
    if env.get("SLURM_GPUS_ON_NODE"):
        return int(env["SLURM_GPUS_ON_NODE"])
    if env.get("SLURM_GPUS_PER_NODE"):
        return int(env["SLURM_GPUS_PER_NODE"].split("(")[0].split(":")[-1])
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    if visible:
        return len([d for d in visible.split(",") if d.strip()]) if visible != "NoDevFiles" else 0
    return (count_devices or _torch_gpu_count)()


def _torch_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def vllm_parallelism(gpus: int, tensor_parallel: int = 1) -> list[str]:
    """`trl vllm-serve` over a node's GPUs: a model that fits one GPU (8B in bf16 on 80 GB) serves most tokens/s
    as one replica per GPU (data parallel); tensor parallelism only splits a model too large for one."""
    return ["--tensor-parallel-size", str(tensor_parallel), "--data-parallel-size", str(max(1, gpus // tensor_parallel))]


# Rendezvous ports below Linux's ephemeral range (32768-60999), where outgoing connections take theirs.
PORT_BASE, PORT_SPAN = 15000, 15000


def node_address(name: str) -> str:
    """A node's address from `scontrol show node` (NodeAddr), else the name itself."""
    import subprocess

    try:
        out = subprocess.run(["scontrol", "show", "node", name], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return name
    for token in out.split():
        if token.startswith("NodeAddr="):
            return token.split("=", 1)[1]
    return name


@dataclass
class Cluster:
    """Where one node's launcher stands in a multi-node run."""

    nodes: int
    node_rank: int
    processes_per_node: int
    head: str
    port: int

    @property
    def num_processes(self) -> int:
        return self.nodes * self.processes_per_node


def from_slurm(env: dict | None = None, resolve=node_address, port: int | None = None) -> Cluster:
    """The cluster as one Slurm task sees it (one task per node: `srun --ntasks-per-node=1`).

    Every value is read by the task itself, so each node gets its own rank: the step's node list and
    count (the job's when not in a step), this task's SLURM_PROCID as the node rank, one process per
    GPU (one on CPU nodes), the step's first node as rendezvous host and a port derived from the job
    id (below the ephemeral range) unless `port` or MASTER_PORT says otherwise.
    """
    env = dict(os.environ if env is None else env)
    if "SLURM_JOB_ID" not in env:
        raise ConfigError("not inside a Slurm job: give --nodes, --node-rank and --head, or run under srun.")
    nodelist = expand_nodelist(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
    nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or len(nodelist))
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or nodes)
    if tasks != nodes:
        raise ConfigError(
            f"{tasks} Slurm tasks on {nodes} nodes: launch one task per node (srun --ntasks-per-node=1); each "
            "starts the processes of its node."
        )
    rank = int(env.get("SLURM_PROCID", env.get("SLURM_NODEID", "0")))
    port = port or int(env.get("MASTER_PORT") or PORT_BASE + int(env["SLURM_JOB_ID"]) % PORT_SPAN)
    return Cluster(nodes, rank, max(1, gpus_on_node(env)), resolve(nodelist[0]), port)


SECRET_OPTIONS = {"--hub_token": "HF_TOKEN", "--hub-token": "HF_TOKEN"}


def without_secrets(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Recipe arguments with tokens taken out (`--hub_token T` or `--hub_token=T`), and the environment variables
    that carry them instead: a command line is printed, logged and visible to every user in `ps`."""
    clean, secrets, skip = [], {}, False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        option, _, value = token.partition("=")
        if option in SECRET_OPTIONS:
            if not value and i + 1 < len(argv):
                value, skip = argv[i + 1], True
            secrets[SECRET_OPTIONS[option]] = value
            continue
        clean.append(token)
    return clean, secrets


def accelerate_command(cluster: Cluster | None, accelerate_config: str, script: str, script_args: list[str],
                       processes_per_node: int | None = None, deepspeed: bool | None = None) -> list[str]:
    """The `accelerate launch` command line of one node (or of a single machine when `cluster` is None).
    `deepspeed`: whether the accelerate config is a DeepSpeed one (read from it when not given)."""
    cmd = ["accelerate", "launch", "--config_file", accelerate_config]
    if cluster is not None:
        per_node = processes_per_node or cluster.processes_per_node
        cmd += [
            "--num_machines", str(cluster.nodes),
            "--machine_rank", str(cluster.node_rank),
            "--num_processes", str(cluster.nodes * per_node),
            "--main_process_ip", cluster.head,
            "--main_process_port", str(cluster.port),
            "--rdzv_backend", "static",
            "--same_network",
            "--max_restarts", "0",
        ]
        if deepspeed is None:
            from . import environment

            deepspeed = environment.from_accelerate_file(accelerate_config).kind == "deepspeed"
        if deepspeed:
            cmd += ["--deepspeed_multinode_launcher", "standard"]  # one launch per node, no pdsh
    elif processes_per_node:
        cmd += ["--num_processes", str(processes_per_node)]
    return cmd + [script, *script_args]


def vllm_layout(env: dict | None = None, server_nodes: int = 1, resolve=node_address) -> dict[str, str]:
    """Split a Slurm job's nodes: the last `server_nodes` serve vLLM, the others train."""
    env = dict(os.environ if env is None else env)
    nodes = expand_nodelist(env["SLURM_JOB_NODELIST"])
    if len(nodes) <= server_nodes:
        raise ConfigError(f"{len(nodes)} node(s) for {server_nodes} vLLM server node(s): ask for at least one more.")
    train, serve = nodes[:-server_nodes], nodes[-server_nodes:]
    return {
        "TRAIN_NODES": str(len(train)),
        "TRAIN_NODELIST": ",".join(train),
        "SERVER_NODELIST": ",".join(serve),
        "SERVER_ADDR": resolve(serve[0]),
    }


def resolve_cluster(nodes: int | None = None, node_rank: int = 0, processes_per_node: int | None = None,
                    head: str | None = None, port: int = 29500, single_node: bool = False) -> Cluster | None:
    """The cluster one `posttrain-dist launch` runs in: explicit (--nodes, --node-rank, --head), read from
    Slurm inside a job, or None (one machine)."""
    if nodes is not None:
        if head is None:
            raise ConfigError("--nodes needs --head (the address of the node with rank 0) and --node-rank.")
        return Cluster(nodes, node_rank, processes_per_node or 1, head, port)
    if "SLURM_JOB_ID" in os.environ and not single_node:
        return from_slurm(port=port if port != 29500 else None)
    return None


def supervise(argv: list[str], script: str, preempted, forward_every: float = 2.0, mark=None) -> int:
    """Run `accelerate launch` (argv) as a child and stay its parent. SIGUSR1 and SIGTERM sent to this launcher are
    passed on to the recipe processes themselves, whatever their session (torch's elastic agent starts them in new
    ones, which a site with `proctrack/pgid` never signals), and again every `forward_every` seconds until the
    child ends, so that a recipe still importing when the signal came gets it once its handler is in place. The
    launcher and the agent ignore both signals (the recipes decide when to stop). The child gets SIGKILL when this
    launcher dies (and the recipe processes when it does: `signals.die_with_launcher`): nothing is left orphaned.
    Returns the child's exit status, or 75 when the run marked itself preempted (`preempted(since=start)`): torch's
    agent reports a worker's 75 as 1. A signal the recipes could not act on (it came before their handler existed)
    is marked by `mark(signum)` (True when it marked the run preempted: 75 too).
    """
    import signal
    import subprocess
    import threading
    import time

    from . import signals as held

    signals = (signal.SIGUSR1, signal.SIGTERM)
    started, received = time.time(), []
    if held.requested_signal() is not None:  # came while this launcher started (`posttrain-dist launch` holds them)
        received.append(held.requested_signal())

    def ignore():
        for signum in signals:
            signal.signal(signum, signal.SIG_IGN)
        held.set_parent_death_signal(signal.SIGKILL)

    child = subprocess.Popen(argv, preexec_fn=ignore)

    def forward(signum, frame=None):
        if signum not in received:
            received.append(signum)
        for process in recipe_processes(child.pid, script):
            try:
                process.send_signal(signum)
            except Exception:  # it ended meanwhile
                pass

    for signum in signals:
        signal.signal(signum, forward)
    done = threading.Event()

    def again():
        while not done.wait(forward_every):
            for signum in list(received):
                forward(signum)

    threading.Thread(target=again, daemon=True).start()
    code = child.wait()
    done.set()
    if preempted(since=started):
        return held.EXIT_PREEMPTED
    if received and code != 0 and mark is not None and mark(received[0]):
        return held.EXIT_PREEMPTED
    return code


def recipe_processes(root: int, script: str) -> list:
    """The processes below `root` that run the recipe script itself (not the launchers that name it)."""
    import psutil

    found = []
    try:
        below = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return found
    name = os.path.basename(script)
    for process in below:
        try:
            cmdline = process.cmdline()
        except psutil.Error:
            continue
        launcher = any("accelerate" in part or "torch.distributed" in part for part in cmdline[:4])
        if not launcher and any(os.path.basename(part) == name for part in cmdline[1:4]):
            found.append(process)
    return found
