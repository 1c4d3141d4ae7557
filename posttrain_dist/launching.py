"""Launch environments: which distributed setup a run is under, and (for clusters) how to launch it.

`distributed_setup()` reads what `accelerate launch` put in the environment, or an accelerate config
file, so that combinations that cannot work are refused before a model loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

from .errors import ConfigError


@dataclass
class Setup:
    """The distributed setup of a run: `kind` is none, ddp, deepspeed or fsdp."""

    kind: str = "none"
    zero_stage: int | None = None
    num_processes: int = 1

    def describe(self) -> str:
        if self.kind == "deepspeed":
            return f"DeepSpeed ZeRO-{self.zero_stage}"
        return {"none": "one process", "ddp": "DDP", "fsdp": "FSDP"}[self.kind]


def _truthy(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def distributed_setup(accelerate_config: str | None = None) -> Setup:
    """The setup described by an accelerate config file, or else by the environment of this process."""
    if accelerate_config is not None:
        if not os.path.isfile(accelerate_config):
            raise ConfigError(f"accelerate config {accelerate_config!r} does not exist; see accelerate_configs/.")
        with open(accelerate_config) as f:
            conf = yaml.safe_load(f) or {}
        kind = {"DEEPSPEED": "deepspeed", "FSDP": "fsdp", "MULTI_GPU": "ddp", "MULTI_CPU": "ddp"}.get(
            str(conf.get("distributed_type", "NO")), "none")
        stage = (conf.get("deepspeed_config") or {}).get("zero_stage") if kind == "deepspeed" else None
        return Setup(kind, int(stage) if stage is not None else None, int(conf.get("num_processes", 1)))
    env = os.environ
    processes = int(env.get("WORLD_SIZE", "1"))
    if _truthy(env.get("ACCELERATE_USE_DEEPSPEED", "")):
        return Setup("deepspeed", int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")), processes)
    if _truthy(env.get("ACCELERATE_USE_FSDP", "")):
        return Setup("fsdp", None, processes)
    return Setup("ddp" if processes > 1 else "none", None, processes)


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


def gpus_on_node(env: dict) -> int:
    """GPUs Slurm granted to this node: SLURM_GPUS_ON_NODE, SLURM_GPUS_PER_NODE ("8" or "h100:8"), or the
    visible devices; 0 without GPUs."""
    if env.get("SLURM_GPUS_ON_NODE"):
        return int(env["SLURM_GPUS_ON_NODE"])
    if env.get("SLURM_GPUS_PER_NODE"):
        return int(env["SLURM_GPUS_PER_NODE"].split("(")[0].split(":")[-1])
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    return len([d for d in visible.split(",") if d.strip()]) if visible and visible != "NoDevFiles" else 0


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
    granted GPU (one on CPU nodes), the step's first node as rendezvous host and a port derived from
    the job id unless `port` or MASTER_PORT says otherwise.
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
    port = port or int(env.get("MASTER_PORT") or 20000 + int(env["SLURM_JOB_ID"]) % 20000)
    return Cluster(nodes, rank, max(1, gpus_on_node(env)), resolve(nodelist[0]), port)


def accelerate_command(cluster: Cluster | None, accelerate_config: str, script: str, script_args: list[str],
                       processes_per_node: int | None = None) -> list[str]:
    """The `accelerate launch` command line of one node (or of a single machine when `cluster` is None)."""
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
        if distributed_setup(accelerate_config).kind == "deepspeed":
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
