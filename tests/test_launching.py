"""Cluster environment -> `accelerate launch` arguments, without a cluster."""

import pytest

from posttrain_dist import launching
from posttrain_dist.errors import ConfigError

from conftest import ACCELERATE_CONFIGS, ROOT


def slurm_env(nodes: list[str], compressed: str, rank: int, gpus: int | None = 8, **extra) -> dict:
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": compressed, "SLURM_JOB_NUM_NODES": str(len(nodes)),
           "SLURM_NTASKS": str(len(nodes)), "SLURM_PROCID": str(rank), "SLURM_NODEID": str(rank), **extra}
    if gpus is not None:
        env["SLURM_GPUS_ON_NODE"] = str(gpus)
    return env


@pytest.mark.parametrize("compressed, expected", [
    ("n1", ["n1"]),
    ("n[1-2]", ["n1", "n2"]),
    ("gpu-[01-03,07],login1", ["gpu-01", "gpu-02", "gpu-03", "gpu-07", "login1"]),
    ("rack[1-2]-gpu[1-2]", ["rack1-gpu1", "rack1-gpu2", "rack2-gpu1", "rack2-gpu2"]),
    ("a[8-10]", ["a8", "a9", "a10"]),
])
def test_expand_nodelist(compressed, expected):
    assert launching.expand_nodelist(compressed) == expected


@pytest.mark.parametrize("env, gpus", [
    ({"SLURM_GPUS_ON_NODE": "4"}, 4),
    ({"SLURM_GPUS_PER_NODE": "h100:8"}, 8),
    ({"SLURM_GPUS_PER_NODE": "2"}, 2),
    ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, 3),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, 0),
])
def test_gpus_on_node(env, gpus):
    assert launching.gpus_on_node(env, count_devices=lambda: 99) == gpus


def test_without_gres_or_visible_devices_the_gpus_are_counted():
    """A cluster without GRES sets no GPU variables: all eight GPUs are used, not one."""
    assert launching.gpus_on_node({}, count_devices=lambda: 8) == 8
    assert launching.from_slurm(slurm_env(["n1"], "n1", 0, gpus=None), resolve=lambda n: n).processes_per_node >= 1


def test_ports_stay_below_the_ephemeral_range():
    ports = {launching.from_slurm({**slurm_env(["n1"], "n1", 0), "SLURM_JOB_ID": str(job)}, resolve=str).port
             for job in range(0, 100000, 997)}
    assert min(ports) >= 1024 and max(ports) < 32768


def test_vllm_serves_a_model_that_fits_one_gpu_data_parallel():
    assert launching.vllm_parallelism(8) == ["--tensor-parallel-size", "1", "--data-parallel-size", "8"]
    assert launching.vllm_parallelism(8, tensor_parallel=4) == ["--tensor-parallel-size", "4", "--data-parallel-size", "2"]


@pytest.mark.parametrize("nodes, compressed", [
    (["gpu01"], "gpu01"),
    (["gpu01", "gpu02"], "gpu[01-02]"),
    (["gpu01", "gpu02", "gpu03", "gpu04"], "gpu[01-04]"),
])
def test_each_node_gets_its_own_rank_and_the_same_rendezvous(nodes, compressed):
    addresses = {n: f"10.0.0.{i + 1}" for i, n in enumerate(nodes)}
    commands = []
    for rank in range(len(nodes)):
        cluster = launching.from_slurm(slurm_env(nodes, compressed, rank), resolve=addresses.__getitem__)
        assert (cluster.nodes, cluster.node_rank, cluster.processes_per_node) == (len(nodes), rank, 8)
        assert (cluster.head, cluster.port) == ("10.0.0.1", 15000 + 4242)  # below the ephemeral range
        cmd = launching.accelerate_command(cluster, str(ACCELERATE_CONFIGS / "zero3.yaml"), "recipes/sft.py",
                                           ["--config", "x.yaml"])
        commands.append(cmd)
        arg = lambda name: cmd[cmd.index(name) + 1]  # noqa: E731
        assert arg("--num_machines") == str(len(nodes)) and arg("--machine_rank") == str(rank)
        assert arg("--num_processes") == str(8 * len(nodes))
        assert arg("--main_process_ip") == "10.0.0.1" and arg("--main_process_port") == "19242"
        assert arg("--deepspeed_multinode_launcher") == "standard"
        assert cmd[-3:] == ["recipes/sft.py", "--config", "x.yaml"]
    assert len({tuple(c) for c in commands}) == len(nodes), "every node must get a different command"


def test_cpu_nodes_run_one_process_and_ddp_needs_no_deepspeed_flags():
    cluster = launching.from_slurm(slurm_env(["n1", "n2"], "n[1-2]", 1, gpus=None), resolve=lambda n: n)
    assert cluster.processes_per_node == 1 and cluster.head == "n1"
    cmd = launching.accelerate_command(cluster, str(ACCELERATE_CONFIGS / "cpu_ddp.yaml"), "r.py", [])
    assert "--deepspeed_multinode_launcher" not in cmd and cmd[cmd.index("--num_processes") + 1] == "2"


def test_a_step_on_part_of_the_job_uses_the_step_nodes():
    env = slurm_env(["n1", "n2", "n3"], "n[1-3]", 0, SLURM_STEP_NODELIST="n[2-3]", SLURM_STEP_NUM_NODES="2",
                    SLURM_STEP_NUM_TASKS="2")
    cluster = launching.from_slurm(env, resolve=lambda n: n)
    assert (cluster.nodes, cluster.head) == (2, "n2")


def test_one_task_per_node_is_required():
    env = slurm_env(["n1", "n2"], "n[1-2]", 0, SLURM_NTASKS="16")
    with pytest.raises(ConfigError, match="--ntasks-per-node=1"):
        launching.from_slurm(env)


def test_outside_slurm_is_refused():
    with pytest.raises(ConfigError, match="not inside a Slurm job"):
        launching.from_slurm({})


def test_single_machine_command():
    cmd = launching.accelerate_command(None, "accelerate_configs/ddp.yaml", "recipes/sft.py", ["--config", "p.yaml"], 4)
    assert cmd == ["accelerate", "launch", "--config_file", "accelerate_configs/ddp.yaml", "--num_processes", "4",
                   "recipes/sft.py", "--config", "p.yaml"]


def test_vllm_layout_keeps_the_server_node_out_of_training():
    layout = launching.vllm_layout({"SLURM_JOB_NODELIST": "gpu[1-3]"}, resolve=lambda n: f"ip-{n}")
    assert layout == {"TRAIN_NODES": "2", "TRAIN_NODELIST": "gpu1,gpu2", "SERVER_NODELIST": "gpu3", "SERVER_ADDR": "ip-gpu3"}
    with pytest.raises(ConfigError, match="at least one more"):
        launching.vllm_layout({"SLURM_JOB_NODELIST": "gpu1"})


def test_launch_command_prints_and_validates(capsys):
    from posttrain_dist import cli

    cli.main(["launch", "sft", "recipes/smollm2-135m/sft_lora.yaml", "--accelerate", "zero2", "--nodes", "2",
              "--node-rank", "1", "--head", "10.1.1.1", "--processes-per-node", "4", "--print", "--", "--max_steps", "5"])
    out = capsys.readouterr().out
    assert "--machine_rank 1" in out and "--num_processes 8" in out and out.strip().endswith("--max_steps 5")
    with pytest.raises(SystemExit):
        cli.main(["launch", "sft", "recipes/smollm2-135m/sft_lora.yaml", "--print", "--", "--lora_rank", "8"])
    assert "unknown option '--lora_rank'" in capsys.readouterr().err


def test_launch_checks_grpo_batches_for_the_processes_it_starts(capsys):
    """2 completions per process with 4 answers per prompt: refused for one process (see the bad-input
    corpus), accepted for the two processes of cpu_ddp (4 completions a step)."""
    from posttrain_dist import cli

    cli.main(["launch", "grpo", str(ROOT / "tests" / "bad_inputs" / "grpo_batch_not_divisible.yaml"),
              "--accelerate", "cpu_ddp", "--print", "--", "--per_device_train_batch_size", "2"])
    assert "accelerate_configs/cpu_ddp.yaml" in capsys.readouterr().out


def test_local_launch_script_goes_through_posttrain_dist_launch():
    """launch/local.sh is `posttrain-dist launch --single-node`: the config is checked, then the command printed."""
    import os
    import subprocess
    import sys

    tool = os.path.join(os.path.dirname(sys.executable), "posttrain-dist")
    env = {**os.environ, "PRINT": "1", "POSTTRAIN_DIST": tool, "SLURM_JOB_ID": "77"}  # inside a job: still one node
    proc = subprocess.run([str(ROOT / "launch" / "local.sh"), "sft", "recipes/smollm2-135m/sft_lora.yaml", "cpu_ddp",
                           "--", "--max_steps", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accelerate launch --config_file" in proc.stdout and "cpu_ddp.yaml" in proc.stdout
    assert "--machine_rank" not in proc.stdout and proc.stdout.strip().endswith("--max_steps 3")
    bad = subprocess.run([str(ROOT / "launch" / "local.sh"), "sft", "recipes/smollm2-135m/sft_lora.yaml", "cpu",
                          "--", "--lora_rank", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown option '--lora_rank'" in bad.stderr
