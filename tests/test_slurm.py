"""The Slurm templates on a real Slurm (two slurmd on this machine posing as nodes n1 and n2): multi-node SFT and
GRPO, the vLLM template's resolved commands, preemption with requeue and exact resume, a dead node ending the job;
and, without Slurm, exact resume at an epoch boundary and mid-epoch and a crash while writing a checkpoint."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from posttrain_dist import run_folder, training

from conftest import (PRESETS, ROOT, TINY, assert_one_saved_model, launch, read_safetensors, train_losses,
                      write_numbered_conversations)
from hooks import read_trace
from slurm_cluster import environ_of

# its tests share the Slurm cluster and the reference run: `make test` runs a module in one worker
# (pytest-xdist --dist loadfile)

EXAMPLES = 16


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory):
    return write_numbered_conversations(tmp_path_factory.mktemp("data") / "sixteen.jsonl", EXAMPLES)


def sft_args(data: str, output_dir, epochs: int = 3) -> list[str]:
    return ["--model_name_or_path", TINY, "--dataset_name", data, "--dataset_test_split", "", "--max_steps", "-1",
            "--num_train_epochs", str(epochs), "--logging_steps", "1", "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--warmup_steps", "0", "--lr_scheduler_type", "cosine",
            "--save_strategy", "no", "--output_dir", str(output_dir)]


def steps_and_losses(output_dir) -> tuple[list[int], list[float]]:
    history = json.loads((Path(output_dir) / "metrics.json").read_text())["log_history"]
    return [e["step"] for e in history if "loss" in e], [e["loss"] for e in history if "loss" in e]


def traced(output_dir, rank: int = 0) -> list[dict]:
    return read_trace(str(Path(output_dir) / "data_trace" / f"rank{rank}.jsonl"))


def assert_same_run(run, reference, ranks=(0,)):
    """Same optimizer steps (each once), same losses, same examples at each step, same final weights."""
    steps, losses = steps_and_losses(run)
    assert steps == list(range(1, len(steps) + 1)), "a step was repeated or skipped"
    assert steps == steps_and_losses(reference)[0]
    assert losses == pytest.approx(steps_and_losses(reference)[1], rel=1e-5)
    for rank in ranks:
        assert [(t["step"], t["examples"]) for t in traced(run, rank)] == \
               [(t["step"], t["examples"]) for t in traced(reference, rank)]
    final, expected = read_safetensors(Path(run) / "model.safetensors"), read_safetensors(Path(reference) / "model.safetensors")
    assert all(torch.allclose(final[k], expected[k], atol=1e-5) for k in expected)


TRACE = ["--callbacks", "hooks:TraceData"]


# ---------------------------------------------------------------- exact resume, one machine


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, sixteen):
    out = tmp_path_factory.mktemp("reference") / "run"
    launch("sft", "--config", str(PRESETS / "sft_full.yaml"), *sft_args(sixteen, out), *TRACE)
    return out


@pytest.mark.parametrize("stop_at, where", [(8, "epoch boundary"), (5, "mid-epoch")])
def test_resume_is_exact(tmp_path, sixteen, uninterrupted, stop_at, where):
    # 16 examples in batches of 2: 8 steps an epoch. The hook sends SIGUSR1 during step `stop_at`.
    args = ["--config", str(PRESETS / "sft_full.yaml"), *sft_args(sixteen, tmp_path)]
    first = launch("sft", *args, *TRACE, "hooks:PreemptAtStep", env={"HOOK_PREEMPT_AT_STEP": str(stop_at)}, check=False)
    assert first.returncode != 0 and f"preempted: checkpoint-{stop_at} saved" in first.stdout, first.stderr[-2000:]
    assert f"exit status {training.EXIT_PREEMPTED}" in first.stderr  # accelerate reports the recipe's status
    assert run_folder.latest_complete(str(tmp_path)) == str(tmp_path / f"checkpoint-{stop_at}")
    assert not (tmp_path / "model.safetensors").exists()
    second = launch("sft", *args, *TRACE)
    assert f"resuming from {tmp_path / f'checkpoint-{stop_at}'}" in second.stdout
    assert_same_run(tmp_path, uninterrupted)


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, sixteen, uninterrupted):
    args = ["--config", str(PRESETS / "sft_full.yaml"), *sft_args(sixteen, tmp_path), "--save_strategy", "steps",
            "--save_steps", "4"]
    crashed = launch("sft", *args, *TRACE, "hooks:KillInSave", env={"HOOK_KILL_IN_SAVE": "8"}, check=False)
    assert crashed.returncode != 0
    assert run_folder.is_complete(str(tmp_path / "checkpoint-4"))
    assert (tmp_path / "checkpoint-8").is_dir() and not run_folder.is_complete(str(tmp_path / "checkpoint-8"))
    assert run_folder.latest_complete(str(tmp_path)) == str(tmp_path / "checkpoint-4")

    trained_before = len(traced(tmp_path))
    resumed = launch("sft", *args, *TRACE)
    assert f"removed incomplete checkpoint {tmp_path / 'checkpoint-8'}" in resumed.stdout
    assert f"resuming from {tmp_path / 'checkpoint-4'}" in resumed.stdout
    assert traced(tmp_path)[trained_before]["step"] == 5, "the resumed run must start after checkpoint-4"
    assert steps_and_losses(tmp_path)[0] == steps_and_losses(uninterrupted)[0]
    assert steps_and_losses(tmp_path)[1] == pytest.approx(steps_and_losses(uninterrupted)[1], rel=1e-5)
    final = read_safetensors(tmp_path / "model.safetensors")
    expected = read_safetensors(uninterrupted / "model.safetensors")
    assert all(torch.allclose(final[k], expected[k], atol=1e-5) for k in expected)


# ---------------------------------------------------------------- on a real Slurm


slurm = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():
    from slurm_cluster import MiniSlurm, missing_binaries

    missing = missing_binaries()
    if missing:
        pytest.fail(f"Slurm is not installed ({', '.join(missing)} missing): run `make slurm-deps` as root.")
    mini = MiniSlurm()
    mini.start()
    yield mini
    mini.stop()


def submit(cluster, template: str, tmp_path, *args: str, env=None, nodes: int = 2) -> str:
    return cluster.sbatch(f"--nodes={nodes}", f"--output={tmp_path}/%x-%j.log", f"slurm/{template}", *args,
                          env=env, cwd=ROOT)


def log_of(tmp_path) -> str:
    return "\n".join(p.read_text() for p in sorted(Path(tmp_path).glob("*.log")))


def failure(cluster, tmp_path, job: str) -> str:
    """The end of the job's log and what the Slurm daemons said of the job: enough to tell our bug from Slurm's."""
    return f"{log_of(tmp_path)[-4000:]}\n{cluster.daemon_logs(job)}"


@slurm
def test_sft_across_two_nodes(cluster, tmp_path, sixteen):
    out = tmp_path / "sft"
    job = submit(cluster, "train.sbatch", tmp_path, "sft", str(PRESETS / "sft_full.yaml"), "cpu_ddp", "--",
                 *sft_args(sixteen, out, epochs=1), *TRACE)
    info = cluster.wait(job, timeout=240)
    assert info["JobState"] == "COMPLETED", failure(cluster, tmp_path, job)
    # both ranks joined one process group: each trained half of the epoch, nothing in common
    ranks = [[fp for line in traced(out, r) for fp in line["examples"]] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == EXAMPLES // 2 and not set(ranks[0]) & set(ranks[1])
    assert steps_and_losses(out)[0] == [1, 2, 3, 4]
    assert len(list(out.glob("*.safetensors"))) == 1
    log = log_of(tmp_path)
    assert "on 2 node(s) (n[1-2])" in log
    assert "on n1: node 0 of 2" in log and "on n2: node 1 of 2" in log and log.count("rendezvous 127.0.0.1:") == 2


@slurm
def test_grpo_across_two_nodes(cluster, tmp_path):
    out = tmp_path / "grpo"
    job = submit(cluster, "train.sbatch", tmp_path, "grpo", str(PRESETS / "grpo_full.yaml"), "cpu_ddp", "--",
                 "--model_name_or_path", TINY, "--max_steps", "2", "--per_device_train_batch_size", "4",
                 "--max_completion_length", "8", "--logging_steps", "1", "--reward_eval_size", "4",
                 "--output_dir", str(out))
    info = cluster.wait(job, timeout=240)
    assert info["JobState"] == "COMPLETED", failure(cluster, tmp_path, job)
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2 and len(train_losses(out)) == 2
    assert_one_saved_model(out, "model.safetensors")
    assert (out / "evaluation.json").is_file()


@slurm
def test_vllm_template_resolves_server_and_training_commands(cluster, tmp_path):
    preset = "recipes/qwen3-8b/grpo_countdown_vllm_server.yaml"
    job = submit(cluster, "grpo_vllm.sbatch", tmp_path, preset, "zero3", env={"PRINT": "1"})
    info = cluster.wait(job, timeout=180)
    log = log_of(tmp_path)
    assert info["JobState"] == "COMPLETED", failure(cluster, tmp_path, job)
    assert "training on n1, vLLM on n2 (127.0.0.1)" in log
    server = next(line for line in log.splitlines() if line.startswith("trl vllm-serve"))
    assert server == ("trl vllm-serve --model Qwen/Qwen3-8B --tensor-parallel-size 1 --data-parallel-size 1 "
                      "--port 8000 --host 127.0.0.1")  # the address the training nodes use, not every interface
    train = next(line for line in log.splitlines() if line.startswith("accelerate launch")).split()
    arg = lambda name: train[train.index(name) + 1]  # noqa: E731
    assert arg("--num_machines") == "1" and arg("--num_processes") == "1", "the server node is not a training node"
    assert arg("--main_process_ip") == "127.0.0.1" and arg("--vllm_server_host") == "127.0.0.1"
    assert train[train.index("--config") + 1] == preset


@slurm
def test_preemption_checkpoints_requeues_and_resumes_exactly(cluster, tmp_path, sixteen):
    reference = tmp_path / "reference"
    launch("sft", "--config", str(PRESETS / "sft_full.yaml"), *sft_args(sixteen, reference, epochs=6),
           *TRACE, accelerate_config="cpu_ddp")
    out = tmp_path / "preempted"
    job = submit(cluster, "train.sbatch", tmp_path, "sft", str(PRESETS / "sft_full.yaml"), "cpu_ddp", "--",
                 *sft_args(sixteen, out, epochs=6), *TRACE)
    trace = out / "data_trace" / "rank0.jsonl"
    deadline = time.time() + 180
    while not (trace.exists() and len(trace.read_text().splitlines()) >= 4):  # 24 steps in all; signal at step >= 4
        assert time.time() < deadline and cluster.job(job)["JobState"] in ("PENDING", "RUNNING"), \
            failure(cluster, tmp_path, job)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=cluster.env, check=True)
    # the job checkpoints, exits and requeues itself; Slurm starts a requeued job again once its old credential has
    # expired (`AuthInfo=cred_expire`, 10 s on this cluster, 120 s by default: forcing it earlier fails the start
    # with "Job credential revoked")
    cluster.wait(job, timeout=120, until=("PENDING",))
    info = cluster.wait(job, timeout=300)
    log = log_of(tmp_path)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", failure(cluster, tmp_path, job)
    assert "preemption signal: checkpointing" in log and "requeueing job" in log
    stopped = int(log.split("preempted: checkpoint-")[1].split()[0])
    assert 4 <= stopped < 24 and f"resuming from {out / f'checkpoint-{stopped}'}" in log
    assert_same_run(out, reference, ranks=(0, 1))


@slurm
def test_a_dead_node_ends_the_job_in_bounded_time(cluster, tmp_path, sixteen):
    out = tmp_path / "dies"
    job = submit(cluster, "train.sbatch", tmp_path, "sft", str(PRESETS / "sft_full.yaml"), "cpu_ddp", "--",
                 *sft_args(sixteen, out, epochs=200), *TRACE)
    trace = out / "data_trace" / "rank1.jsonl"
    deadline = time.time() + 180
    while not (trace.exists() and trace.read_text().count("\n") >= 2):
        assert time.time() < deadline, failure(cluster, tmp_path, job)
        time.sleep(0.2)
    victim = next(pid for pid in _recipe_processes(str(out)) if environ_of(pid).get("RANK") == "1")
    os.kill(victim, signal.SIGKILL)  # node n2's training process dies
    killed = time.time()
    info = cluster.wait(job, timeout=150)
    assert info["JobState"] == "FAILED", failure(cluster, tmp_path, job)
    assert time.time() - killed < 120
    assert not (out / "model.safetensors").exists()


def _recipe_processes(output_dir: str) -> list[int]:
    """The SFT recipe processes of the run that writes to `output_dir` (not another test's, in another worker)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"recipes/sft.py") for part in cmdline) and b"accelerate.commands.launch" not in cmdline \
                    and not any(b"accelerate" in part for part in cmdline[:3]) and output_dir.encode() in cmdline:
                pids.append(int(entry))
    return pids

