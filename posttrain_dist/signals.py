"""Preemption signals from a process's first line, and the end of recipe processes whose launcher died.

Standard library only: a recipe calls `catch_preemption()` before it imports torch, transformers or trl
(which take seconds), so Slurm's time-limit warning (SIGUSR1, `--signal=USR1@SECONDS`) or a preemption
(SIGTERM) that comes during those imports is recorded instead of killing the process; the run checkpoints
and stops at the first point where it can (`training`). `posttrain-dist launch` records them from its own
first line the same way (`hold_for_launcher`), and passes them on to the recipe processes.

Under a launcher (torch's elastic agent, started by `accelerate launch`) each recipe process also asks the
kernel to kill it when its parent dies (`PR_SET_PDEATHSIG`): a launcher killed with SIGKILL, or a node whose
launcher died, leaves no orphaned rank holding memory and GPUs. A process started by hand (`python
recipes/sft.py` in a shell, under nohup) is left alone.
"""

from __future__ import annotations

import os
import signal
import sys

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again
PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

_requested: dict = {"signal": None}


def _on_signal(signum, frame):
    _requested["signal"] = signum


def catch_preemption() -> None:
    """From now on SIGUSR1 and SIGTERM ask the run to checkpoint and stop, instead of killing it. Signals the
    launcher held back while this process started (blocked or ignored) are let through now."""
    _requested["signal"] = None
    for signum in PREEMPT_SIGNALS:
        signal.signal(signum, _on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PREEMPT_SIGNALS)
    die_with_launcher()


def stop_requested() -> bool:
    return _requested["signal"] is not None


def requested_signal():
    return _requested["signal"]


def hold_for_launcher() -> None:
    """`posttrain-dist launch` from its first line: record the signals; its supervisor passes them on."""
    for signum in PREEMPT_SIGNALS:
        signal.signal(signum, _on_signal)


def release_held() -> None:
    """Another subcommand than `launch`: the default actions again, and a signal recorded meanwhile acts now."""
    held = _requested["signal"]
    for signum in PREEMPT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    if held is not None:
        os.kill(os.getpid(), held)


PR_SET_PDEATHSIG = 1


def set_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Ask Linux to send `signum` to this process when its parent ends; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def under_launcher() -> bool:
    """Started by `accelerate launch` (its one-process launcher sets ACCELERATE_DYNAMO_BACKEND, the multi-process one
    runs torch's elastic agent) or torchrun: they set these for every worker."""
    return any(name in os.environ for name in ("TORCHELASTIC_RUN_ID", "ACCELERATE_DYNAMO_BACKEND")) or \
        ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def die_with_launcher() -> None:
    """Under a launcher: end (SIGKILL) when the launcher does; if it already has, end now."""
    if not under_launcher():
        return
    parent = os.getppid()
    if set_parent_death_signal(signal.SIGKILL) and os.getppid() != parent:
        os._exit(1)  # the launcher ended between the two calls
