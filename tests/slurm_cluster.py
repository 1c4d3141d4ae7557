"""A real Slurm cluster on this machine for the tests: munged, slurmctld and two slurmd posing as nodes n1, n2.

Debian's Slurm 22.05 (`make slurm-deps` installs it). Everything lives in a temporary folder with its
own munge key and socket, ports and state, and is stopped afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODES = ("n1", "n2")
DISTRIBUTED_VARIABLES = ("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                         "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_", "PMI_", "OMPI_", "ACCELERATE_")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_binaries() -> list[str]:
    return [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol") if shutil.which(b) is None
            and not os.path.exists(f"/usr/sbin/{b}")]


class MiniSlurm:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="ptslurm-", dir="/tmp"))  # short: munge's socket path is limited
        self.conf = self.root / "slurm.conf"
        self.host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
        # a job gets this environment (sbatch exports it): nothing of the test process's own distributed setup
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(DISTRIBUTED_VARIABLES)}
        self.env = {**inherited, "SLURM_CONF": str(self.conf),
                    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}:/usr/sbin"}

    def _run(self, *cmd, check=True, **kwargs):
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=60, **kwargs)

    def start(self) -> None:
        munge = self.root / "munge"
        munge.mkdir()
        (munge / "key").write_bytes(os.urandom(1024))
        shutil.chown(munge, "munge", "munge")
        shutil.chown(munge / "key", "munge", "munge")
        os.chmod(munge / "key", 0o400)
        self.socket = munge / "sock"
        subprocess.run(["/usr/sbin/munged", "--force", f"--socket={self.socket}", f"--key-file={munge / 'key'}",
                        f"--log-file={munge / 'log'}", f"--pid-file={munge / 'pid'}", f"--seed-file={munge / 'seed'}"],
                       check=True, capture_output=True)
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir()
        nodes = "\n".join(
            f"NodeName={n} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs=1 RealMemory=8000 "
            "State=UNKNOWN" for n in NODES)
        # Job ids (and so the rendezvous ports the launcher derives from them, 15000 + id) start at a random
        # number, from the OS (the tests seed `random`): another cluster on this machine, or a process left
        # listening by an earlier run, is unlikely to hold this cluster's ports.
        first_job = random.SystemRandom().randrange(1000, 14000)
        self.conf.write_text(f"""ClusterName=ptest
FirstJobId={first_job}
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={self.socket},cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool/%n
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.%n.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.%n.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
KillWait=10
MessageTimeout=60
MinJobAge=600
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self._run("slurmctld", "-f", str(self.conf))
        for node in NODES:
            self._run("slurmd", "-f", str(self.conf), "-N", node)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = self._run("sinfo", "-h", "-o", "%T %D", check=False).stdout.split()
            if out[:2] == ["idle", str(len(NODES))]:
                return
            time.sleep(1)
        raise RuntimeError(f"the mini Slurm cluster did not come up: {self._run('sinfo', check=False).stdout}")

    def sbatch(self, *args: str, env: dict | None = None, cwd=None) -> str:
        out = subprocess.run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd,
                             capture_output=True, text=True, check=True, timeout=60).stdout
        return out.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        out = self._run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(token.split("=", 1) for token in out.split() if "=" in token)

    def wait(self, job_id: str, timeout: float, until=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in until:
                return info
            time.sleep(1)
        state = self.job(job_id).get("JobState")
        self._run("scancel", job_id, check=False)  # a stuck job must not hold the nodes for the next test
        raise TimeoutError(f"job {job_id} still {state} after {timeout} s (cancelled):\n{self.daemon_logs(job_id)}")

    def daemon_logs(self, job_id: str, lines: int = 40) -> str:
        """What slurmctld and each slurmd logged about one job: for the message of a test that failed."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            about = [line for line in log.read_text(errors="replace").splitlines() if job_id in line]
            parts.append(f"--- {log.name} ({len(about)} lines on job {job_id}, last {lines})\n" + "\n".join(about[-lines:]))
        return "\n".join(parts)

    def stop(self) -> None:
        self._run("scontrol", "shutdown", check=False)
        time.sleep(1)
        for pid_file in self.root.glob("*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
        self._kill_job_processes()
        subprocess.run(["/usr/sbin/munged", "--stop", f"--socket={self.socket}"], capture_output=True)

    def _kill_job_processes(self) -> None:
        """Whatever a job of this cluster started and Slurm lost track of (torch's agent starts the recipe processes
        in sessions of their own): every process whose environment names this cluster's config."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            if environ_of(int(entry)).get("SLURM_CONF") == str(self.conf):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def environ_of(pid: int) -> dict:
    """A process's environment, empty where it has ended or cannot be read."""
    try:
        raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
