"""Preemption without a cluster: a signal while the model loads is honoured, SIGTERM checkpoints like USR1, the
requeue decision reads the run's mark, and the launcher passes signals to recipe processes in other sessions."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from posttrain_dist import checks, cli, environment, launching, run_folder, safety, training
from posttrain_dist.run_folder import RunFolder

from conftest import PRESETS, TINY_OVERRIDES, load_recipe


@pytest.fixture
def preemption_reset():
    yield
    training._requested["signal"] = None
    for signum in training.PREEMPT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_while_the_model_loads_stops_the_run_before_training(tmp_path, monkeypatch, signum, preemption_reset):
    from posttrain_dist import modeling

    real = modeling.load_model

    def load_and_be_signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)  # Slurm's signal arrives while the weights load (the handler must be in place)
        return real(*args, **kwargs)

    monkeypatch.setattr(modeling, "load_model", load_and_be_signalled)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        load_recipe("sft").main(["--config", str(PRESETS / "sft_full.yaml"), *TINY_OVERRIDES, "--output_dir", str(out)])
    assert stopped.value.code == training.EXIT_PREEMPTED
    mark = json.loads((out / run_folder.PREEMPTED).read_text())
    assert mark["step"] is None and mark["signal"] == signum
    assert not run_folder.checkpoints(str(out)) and not (out / "model.safetensors").exists()


def test_sigterm_during_training_checkpoints_and_marks_the_step(tmp_path, monkeypatch, preemption_reset):
    out = tmp_path / "out"
    monkeypatch.setenv("HOOK_PREEMPT_AT_STEP", "1")
    monkeypatch.setenv("HOOK_PREEMPT_SIGNAL", "SIGTERM")
    with pytest.raises(SystemExit) as stopped:
        load_recipe("sft").main(["--config", str(PRESETS / "sft_full.yaml"), *TINY_OVERRIDES, "--callbacks",
                                 "hooks:PreemptAtStep", "--output_dir", str(out)])
    assert stopped.value.code == training.EXIT_PREEMPTED
    assert run_folder.latest_complete(str(out)) == str(out / "checkpoint-1")
    assert json.loads((out / run_folder.PREEMPTED).read_text())["step"] == 1


def _mark(folder, signum, attempt, signed=True):
    folder.mkdir(parents=True, exist_ok=True)
    mark = {"step": 3, "signal": int(signum), "time": time.time(), "attempt": attempt}
    if signed:
        safety.write_mark(str(folder / run_folder.PREEMPTED), mark)
    else:  # what anyone with write access to the folder could put there
        (folder / run_folder.PREEMPTED).write_text(json.dumps({**mark, "signature": "0" * 64}))


@pytest.mark.parametrize("signum, attempt, signed, finished, signalled, requeue", [
    (signal.SIGUSR1, "4242.1", True, False, False, True),    # the time-limit signal, in this attempt: requeue
    (signal.SIGTERM, "4242.1", True, False, False, False),   # preempted or cancelled: Slurm requeues (or the user stopped)
    (signal.SIGUSR1, "4242.0", True, False, False, False),   # the mark of an earlier attempt
    (None, None, True, False, False, False),                 # no mark: finished, or failed
    (signal.SIGUSR1, "4242.1", False, False, False, False),  # a forged mark (not signed with the user's key)
    (signal.SIGUSR1, "4242.1", True, True, False, False),    # the run finished after all: never run again
    (None, None, True, False, True, True),                   # the batch script got the signal, the run could not mark
    (None, None, True, True, True, False),                   # ... but it had finished
])
def test_the_requeue_decision_reads_the_mark_of_this_attempt(tmp_path, monkeypatch, capsys, signum, attempt, signed,
                                                             finished, signalled, requeue):
    out = tmp_path / "out"
    if signum is not None:
        _mark(out, signum, attempt, signed)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    environment.probe.cache_clear()
    argv = ["preempted", "sft", str(PRESETS / "sft_full.yaml"), *(["--signalled"] if signalled else []), "--",
            "--output_dir", str(out)]
    try:
        if finished:
            out.mkdir(exist_ok=True)
            run = checks.parse("sft", ["--config", str(PRESETS / "sft_full.yaml"), "--output_dir", str(out)])
            RunFolder(run).mark_finished(30, reported=True)
        if requeue:
            cli.main(argv)
            assert "preempted at checkpoint-3" in capsys.readouterr().out or signalled
        else:
            with pytest.raises(SystemExit) as decided:
                cli.main(argv)
            assert decided.value.code == 1
    finally:
        environment.probe.cache_clear()


FAKE_LAUNCHER = textwrap.dedent('''
    # stands for `accelerate launch`: starts the "recipe" in a new session, as torch's elastic agent does
    import subprocess, sys
    recipe = subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]], start_new_session=True)
    sys.exit(1 if recipe.wait() == 75 else recipe.wait())   # the agent reports a worker's 75 as a failure
''')
FAKE_RECIPE = textwrap.dedent('''
    import json, signal, sys, time
    out = sys.argv[1]
    got = []
    signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    open(out + "/started", "w").close()
    deadline = time.time() + 60
    while not got and time.time() < deadline:
        time.sleep(0.05)
    from posttrain_dist import safety
    safety.write_mark(out + "/preempted.json", {"step": 1, "signal": int(got[0]), "time": time.time(), "attempt": None})
    sys.exit(75)
''')


def test_the_launcher_passes_the_signal_to_a_recipe_in_another_session_and_reports_75(tmp_path):
    (tmp_path / "fake_launcher.py").write_text(FAKE_LAUNCHER)
    (tmp_path / "fake_recipe.py").write_text(FAKE_RECIPE)
    supervisor = textwrap.dedent(f'''
        import sys
        from posttrain_dist import launching
        from posttrain_dist.run_folder import RunFolder
        class Args: pass
        folder = RunFolder.__new__(RunFolder)
        folder.path = {str(tmp_path)!r}
        code = launching.supervise([sys.executable, {str(tmp_path / "fake_launcher.py")!r},
                                    {str(tmp_path / "fake_recipe.py")!r}, {str(tmp_path)!r}],
                                   "fake_recipe.py", lambda since: folder.preempted(since=since) is not None,
                                   forward_every=0.5)
        sys.exit(code)
    ''')
    proc = subprocess.Popen([sys.executable, "-c", supervisor])
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR1)  # to the launcher only, as Slurm with proctrack/pgid would
    assert proc.wait(timeout=60) == training.EXIT_PREEMPTED
    assert json.loads((tmp_path / "preempted.json").read_text())["signal"] == signal.SIGUSR1


def test_recipe_processes_are_told_from_their_launchers():
    here = launching.recipe_processes(os.getpid(), "sft.py")
    assert here == []  # pytest's children run no recipe
