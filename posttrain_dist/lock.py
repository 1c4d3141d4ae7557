"""One run per output folder: a lock file that works on the shared file systems Slurm sites use.

`output_dir/.posttrain-dist.lock` is created with O_EXCL (atomic on local disks, NFS v3+, Lustre and
GPFS, where flock is often absent or local to one node) and names its holder: host, pid, when it
started, the command, and the run's token. A second run on the folder is refused before anything
loads, naming the holder. A holder that died is recovered: on the same host, its pid is gone (or now
belongs to a younger process); on another host, its heartbeat (the file's mtime, touched every
`HEARTBEAT` seconds) is older than `STALE` seconds.

The processes of one run share the lock: `posttrain-dist launch` takes it on node 0 and passes its
token on (`POSTTRAIN_DIST_RUN_TOKEN`), so the recipe's main process finds it its own; inside a Slurm job
the token is the job id, so a requeued attempt takes over its dead predecessor's lock at once.
Standard library (and psutil, when installed) only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid

from .errors import ConfigError, at_exit

NAME = ".posttrain-dist.lock"
HEARTBEAT = 30
STALE = 180
TOKEN_VARIABLE = "POSTTRAIN_DIST_RUN_TOKEN"


def run_token() -> str:
    """What the processes of one run share: the launcher's token, the Slurm job, or a new one."""
    if os.environ.get(TOKEN_VARIABLE):
        return os.environ[TOKEN_VARIABLE]
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return uuid.uuid4().hex


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no psutil, or no such process
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(holder: dict, mtime: float) -> bool:
    if holder.get("host") == socket.gethostname():
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return False
        started = _process_start(pid)
        return started is None or holder.get("process_start") is None or abs(started - holder["process_start"]) < 2
    return time.time() - mtime < STALE


def _ancestors() -> set[int]:
    try:
        import psutil

        return {p.pid for p in psutil.Process().parents()}
    except Exception:
        return {os.getppid()}


def describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {started} ({holder.get('command', '?')})"


class Lock:
    """A held lock; `release()` (also run at exit) removes it if it is still ours."""

    def __init__(self, path: str, owned: bool, created_folder: bool, token: str):
        self.path, self.owned, self.created_folder, self.token = path, owned, created_folder, token
        self._stop = threading.Event()
        if owned:
            threading.Thread(target=self._beat, daemon=True, name="posttrain-dist lock heartbeat").start()
        at_exit(self.release)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if not self.owned:
            return
        self.owned = False
        holder = _read(self.path)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("token") == self.token:
            try:
                os.remove(self.path)
            except OSError:
                pass
        folder = os.path.dirname(self.path)
        if self.created_folder:
            try:
                os.rmdir(folder)  # only if the run wrote nothing else into it
            except OSError:
                pass


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def _write_new(path: str, token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                   "time": time.time(), "token": token, "command": " ".join(os.path.basename(a) for a in sys.argv[:3])}, f)
        f.flush()
        os.fsync(f.fileno())


def acquire(folder: str, token: str | None = None) -> Lock:
    """Hold `folder` for this run, or refuse (ConfigError) naming the live holder."""
    token = token or run_token()
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, NAME)
    for _ in range(20):
        try:
            _write_new(path, token)
            return Lock(path, True, created, token)
        except FileExistsError:
            pass
        holder = _read(path)
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            continue  # released meanwhile
        if holder is None:  # being written, or a wreck
            if time.time() - mtime < 5:
                time.sleep(0.2)
                continue
            _break(path, None)
            continue
        ours = holder.get("token") == token or (holder.get("host") == socket.gethostname()
                                                and holder.get("pid") == os.getpid())
        alive = holder_alive(holder, mtime)
        if ours and alive and (holder.get("pid") == os.getpid() or holder.get("pid") in _ancestors()):
            return Lock(path, False, False, token)  # the launcher of this run (or this process) holds it
        if ours or not alive:
            _break(path, holder)
            if not alive and not ours:
                print(f"posttrain-dist: recovered the lock of {folder} from a run that is gone ({describe(holder)})",
                      file=sys.stderr, flush=True)
            continue
        raise ConfigError(
            f"output_dir {folder!r} is in use by another run ({describe(holder)}). Wait for it to end, or choose "
            f"another `output_dir`; if that process is gone and this is another host, the lock is recovered "
            f"{STALE} s after its last heartbeat (or delete {path})."
        )
    raise ConfigError(f"could not take the lock {path}: it changes hands constantly; is another run starting there?")


def _break(path: str, judged: dict | None) -> None:
    """Remove the lock of a holder judged dead. It is renamed aside first and read back: if another process broke
    it and took the folder meanwhile, that new lock is put back instead of removed."""
    aside = f"{path}.{os.getpid()}.stale"
    try:
        os.rename(path, aside)
    except OSError:
        return
    moved = _read(aside)
    if judged is not None and moved is not None and (moved.get("pid"), moved.get("time")) != (judged.get("pid"),
                                                                                               judged.get("time")):
        try:
            os.link(aside, path)  # fails if yet another holder is there: then theirs stands
        except OSError:
            pass
    try:
        os.remove(aside)
    except OSError:
        pass
