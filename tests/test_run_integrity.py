"""A run never trains twice, never shares its folder, and fails in words: finished runs are not run again, a stop in
the last step finishes, a signal during the imports still resumes, one run per folder, a full disk is one line,
no orphaned ranks, counters continue across a resume, a diverging run saves nothing, and a chaos test of ten
signals at random moments ends each run exactly as an uninterrupted one."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from posttrain_dist import lock, modeling, parsing, run_folder, signals
from posttrain_dist.run_folder import RunFolder

from conftest import PRESETS, ROOT, TINY, load_recipe, read_safetensors, write_numbered_conversations

EXAMPLES = 12
RUN = ["--model_name_or_path", TINY, "--max_steps", "6", "--logging_steps", "1", "--per_device_train_batch_size", "2",
       "--learning_rate", "1e-3", "--warmup_steps", "0", "--lr_scheduler_type", "cosine", "--report_to", "none",
       "--dataset_test_split", "", "--eval_strategy", "no"]


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    return write_numbered_conversations(tmp_path_factory.mktemp("data") / "twelve.jsonl", EXAMPLES)


@pytest.fixture(autouse=True)
def fresh_signals():
    yield
    signals._requested["signal"] = None
    for signum in signals.PREEMPT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def args_for(data, out, *more) -> list[str]:
    return ["--config", str(PRESETS / "sft_full.yaml"), *RUN, "--dataset_name", data, "--output_dir", str(out), *more]


def run_in_process(argv) -> int:
    """The SFT recipe in this process: its exit status (0 when main returns)."""
    try:
        load_recipe("sft").main(list(argv))
    except SystemExit as stopped:
        return stopped.code
    return 0


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def history(out) -> tuple[list[int], list[float]]:
    entries = json.loads((Path(out) / "metrics.json").read_text())["log_history"]
    return [e["step"] for e in entries if "loss" in e], [e["loss"] for e in entries if "loss" in e]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, twelve):
    """The uninterrupted run, with a checkpoint every 2 steps."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert run_in_process(args_for(twelve, out, "--save_strategy", "steps", "--save_steps", "2")) == 0
    signals._requested["signal"] = None
    return out


def assert_same_as(out, reference_out):
    steps, losses = history(out)
    assert steps == list(range(1, 7)) and steps == history(reference_out)[0]
    assert losses == pytest.approx(history(reference_out)[1], rel=1e-5)
    final, expected = read_safetensors(Path(out) / "model.safetensors"), read_safetensors(Path(reference_out) / "model.safetensors")
    assert all(torch.allclose(final[k], expected[k], atol=1e-5) for k in expected)


# ---------------------------------------------------------------- a finished run is not run again


@pytest.mark.parametrize("save", [["--save_strategy", "no"], ["--save_strategy", "steps", "--save_steps", "2"]])
def test_a_rerun_of_a_finished_run_changes_no_file(tmp_path, twelve, capsys, save):
    out = tmp_path / "out"
    assert run_in_process(args_for(twelve, out, *save)) == 0
    mark = json.loads((out / run_folder.FINISHED).read_text())
    assert mark["global_step"] == 6 and mark["reported"] is True
    before = snapshot(out)
    capsys.readouterr()
    assert run_in_process(args_for(twelve, out, *save)) == 0
    assert "holds this run, finished at step 6" in capsys.readouterr().out
    assert snapshot(out) == before  # not one byte, not one mtime

    # asked to, it trains again; a longer run continues from its last checkpoint (or, without one, is refused)
    assert run_in_process(args_for(twelve, out, *save, "--overwrite_output_dir", "true")) == 0
    assert (out / "model.safetensors").stat().st_mtime_ns != before["model.safetensors"][0]
    longer = run_in_process(args_for(twelve, out, *save, "--max_steps", "8"))
    if "no" in save:
        assert longer == 2 and "no checkpoint to continue from" in capsys.readouterr().err
    else:
        assert longer == 0 and history(out)[0] == list(range(1, 9))


def test_a_stop_asked_in_the_last_step_finishes_the_run(tmp_path, twelve, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("HOOK_PREEMPT_AT_STEP", "6")
    assert run_in_process(args_for(twelve, out, "--callbacks", "hooks:PreemptAtStep")) == 0
    assert not (out / run_folder.PREEMPTED).exists()
    assert json.loads((out / run_folder.FINISHED).read_text())["global_step"] == 6
    assert (out / "model.safetensors").is_file() and (out / "report.md").is_file()
    assert history(out)[0] == list(range(1, 7))  # no seventh step


def test_a_forged_finished_mark_is_not_believed(tmp_path, twelve, capsys):
    out = tmp_path / "out"
    out.mkdir()
    forged = {"global_step": 6, "config_hash": RunFolder(parsing.parse("sft", args_for(twelve, out))).config_hash(),
              "time": time.time(), "reported": True, "signature": "0" * 64}
    (out / run_folder.FINISHED).write_text(json.dumps(forged))
    assert RunFolder(parsing.parse("sft", args_for(twelve, out))).finished() is None
    assert run_in_process(args_for(twelve, out)) == 2  # not "finished, nothing to do": a folder of unknown origin
    assert "holds another run" in capsys.readouterr().err


# ---------------------------------------------------------------- signals before the handlers


def test_usr1_0_3_s_after_start_leaves_a_resumable_requeued_run(tmp_path, twelve):
    out = tmp_path / "out"
    preset = str(PRESETS / "sft_full.yaml")
    recipe_args = RUN + ["--dataset_name", twelve, "--output_dir", str(out)]
    command = [sys.executable, "-m", "posttrain_dist.cli", "launch", "sft", preset, "--single-node", "--", *recipe_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launcher = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.3)
    launcher.send_signal(signal.SIGUSR1)
    output, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == signals.EXIT_PREEMPTED, output[-3000:]
    requeue = subprocess.run([sys.executable, "-m", "posttrain_dist.cli", "preempted", "sft", preset, "--", *recipe_args],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert requeue.returncode == 0, requeue.stdout + requeue.stderr
    assert not (out / "model.safetensors").exists()
    assert run_in_process(["--config", preset, *recipe_args]) == 0  # the requeued attempt trains it to the end
    assert history(out)[0] == list(range(1, 7))


# ---------------------------------------------------------------- one run per folder


def test_a_second_run_on_a_held_folder_is_refused_naming_the_holder(tmp_path, twelve, capsys, no_model_loading):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from posttrain_dist import lock; "
                               f"lock.acquire({str(out)!r}); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_in_process(args_for(twelve, out)) == 2
        message = capsys.readouterr().err
        assert "is in use by another run" in message and f"pid {holder.pid}" in message
        assert f"host {socket.gethostname()}" in message and "started 20" in message
        assert sorted(os.listdir(out)) == [lock.NAME]  # nothing of the second run's
    finally:
        holder.kill()
        holder.wait()
    # its holder is gone: the lock is recovered (and released again when this check ends)
    recovered = lock.acquire(str(out))
    assert recovered.owned
    recovered.release()
    assert os.listdir(out) == []


def test_a_lock_on_another_host_is_recovered_only_when_its_heartbeat_is_stale(tmp_path):
    path = tmp_path / lock.NAME
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "time": time.time(), "token": "x"}))
    with pytest.raises(Exception, match="in use by another run"):
        lock.acquire(str(tmp_path))
    old = time.time() - lock.STALE - 10
    os.utime(path, (old, old))
    lock.acquire(str(tmp_path)).release()


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(small_disk, twelve, capsys):
    # the tiny model's checkpoint is about 38 MB (weights and two optimizer states): the first fits in 60 MB
    out = small_disk / "out"
    code = run_in_process(args_for(twelve, out, "--save_strategy", "steps", "--save_steps", "1"))
    assert code == 2
    message = capsys.readouterr().err
    assert "not enough disk space to write checkpoint-2 in" in message and "it needs about" in message, message
    assert "Traceback" not in message and message.strip().splitlines()[-1].startswith("posttrain-dist: TrainingStopped")
    assert run_folder.latest_complete(str(out)) == str(out / "checkpoint-1")
    assert run_folder.untrusted(str(out / "checkpoint-1")) is None


# ---------------------------------------------------------------- no orphans


def test_recipe_processes_end_when_the_launcher_is_killed(tmp_path, twelve):
    import psutil

    out = tmp_path / "out"
    command = [sys.executable, "-m", "posttrain_dist.cli", "launch", "sft", str(PRESETS / "sft_full.yaml"),
               "--single-node", "--", *RUN, "--max_steps", "100", "--dataset_name", twelve, "--output_dir", str(out),
               "--callbacks", "hooks:SlowSteps"]
    launcher = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HOOK_SLOW_STEP_SECONDS": "3"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "started_rank0").exists():
        assert time.time() < deadline and launcher.poll() is None, "training never started"
        time.sleep(0.5)
    below = psutil.Process(launcher.pid).children(recursive=True)
    recipes = [p for p in below if any(part.endswith("sft.py") for part in p.cmdline()[1:4])]
    assert recipes, [p.cmdline() for p in below]
    launcher.kill()
    launcher.wait()
    gone, alive = psutil.wait_procs(below, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


# ---------------------------------------------------------------- counters, divergence


def test_num_tokens_continues_across_a_resume(tmp_path, twelve, reference, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("HOOK_PREEMPT_AT_STEP", "3")
    assert run_in_process(args_for(twelve, out, "--save_strategy", "steps", "--save_steps", "2",
                                   "--callbacks", "hooks:PreemptAtStep")) == signals.EXIT_PREEMPTED
    assert run_in_process(args_for(twelve, out, "--save_strategy", "steps", "--save_steps", "2")) == 0
    tokens = [e["num_tokens"] for e in json.loads((out / "metrics.json").read_text())["log_history"] if "num_tokens" in e]
    expected = [e["num_tokens"] for e in json.loads((reference / "metrics.json").read_text())["log_history"]
                if "num_tokens" in e]
    assert tokens == expected and tokens == sorted(tokens) and tokens[3] > tokens[2]


def test_a_diverging_run_stops_at_the_step_and_saves_nothing(tmp_path, twelve, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setenv("HOOK_POISON_AT_STEP", "3")
    code = run_in_process(args_for(twelve, out, "--save_strategy", "steps", "--save_steps", "1",
                                   "--callbacks", "hooks:PoisonAtStep"))
    message = capsys.readouterr().err
    assert code == 2 and "the loss was not finite at optimizer step 3" in message and "Traceback" not in message
    assert not (out / "model.safetensors").exists() and not (out / run_folder.FINISHED).exists()
    assert run_folder.latest_complete(str(out)) == str(out / "checkpoint-2")


# ---------------------------------------------------------------- chaos


def _signal_when(monkeypatch, module, name):
    real = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, signalled)


PHASES = ("import", "load", "data", "training", "checkpoint write", "final save")


def test_chaos_ten_signals_at_random_moments_end_as_the_uninterrupted_run(tmp_path, twelve, reference, monkeypatch):
    """Seeded: each trial signals once at a random moment of a phase, then reruns until the run is done."""
    from posttrain_dist import data

    rng = random.Random(2126)
    trials = [PHASES[i % len(PHASES)] for i in range(10)]
    rng.shuffle(trials)
    save = ["--save_strategy", "steps", "--save_steps", "2"]
    for number, phase in enumerate(trials):
        out = tmp_path / f"trial{number}"
        argv = args_for(twelve, out, *save)
        with monkeypatch.context() as patch:
            if phase == "import":  # a real process, signalled while Python starts and imports the recipe
                proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "sft.py"), *argv], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(rng.uniform(0.05, 1.5))
                proc.send_signal(signal.SIGUSR1)
                first = proc.wait(timeout=600)
                assert first in (signals.EXIT_PREEMPTED, -signal.SIGUSR1), first
            else:
                if phase == "load":
                    _signal_when(patch, modeling, "load_model")
                elif phase == "data":
                    _signal_when(patch, data, "load_for")
                elif phase == "training":
                    patch.setenv("HOOK_PREEMPT_AT_STEP", str(rng.randint(1, 6)))
                    argv += ["--callbacks", "hooks:PreemptAtStep"]
                elif phase == "checkpoint write":
                    patch.setenv("HOOK_SIGNAL_IN_SAVE", str(rng.choice([2, 4])))
                    argv += ["--callbacks", "hooks:SignalInSave"]
                else:
                    _signal_when(patch, RunFolder, "save")
                first = run_in_process(argv)
                assert first in (0, signals.EXIT_PREEMPTED), (phase, first)
        attempts = 1
        while not (out / run_folder.FINISHED).exists():
            assert attempts < 4, f"trial {number} ({phase}) did not finish"
            assert run_in_process(args_for(twelve, out, *save)) in (0, signals.EXIT_PREEMPTED)
            attempts += 1
        assert_same_as(out, reference)
        assert not (out / run_folder.PREEMPTED).exists() and not (out / lock.NAME).exists(), phase


def test_a_crash_between_writing_a_checkpoint_and_marking_it_keeps_the_last_one_with_save_total_limit_1(tmp_path, twelve):
    """transformers deletes old checkpoints beyond `save_total_limit` as soon as it has written a new one; here the
    older one goes only once the newer is marked complete, so `save_total_limit: 1` is safe."""
    from conftest import launch

    out = tmp_path / "out"
    args = args_for(twelve, out, "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "1")
    crashed = launch("sft", *args, "--callbacks", "hooks:KillInSave", env={"HOOK_KILL_IN_SAVE": "4"}, check=False)
    assert crashed.returncode != 0
    assert run_folder.latest_complete(str(out)) == str(out / "checkpoint-2")  # still there, still complete
    assert (out / "checkpoint-4").is_dir() and not run_folder.is_complete(str(out / "checkpoint-4"))
    assert run_in_process(args) == 0  # resumes from checkpoint-2 and finishes; only the newest checkpoint stays
    assert [os.path.basename(p) for _, p in run_folder.checkpoints(str(out))] == ["checkpoint-6"]
    assert history(out)[0] == list(range(1, 7))
