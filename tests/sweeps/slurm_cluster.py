"""A throw-away single-node Slurm (slurmctld + slurmd on localhost) for tests; installs nothing.

Needs Debian's ``slurm-wlm`` and ``munge`` (``make test-cluster`` installs them) and root
(slurmd runs jobs as their user). Everything lives in one temporary folder: a generated
munge key and socket, ``slurm.conf`` (``SLURM_CONF`` points clients at it), state, spool
and logs. :func:`start_cluster` returns a :class:`SlurmCluster`; ``stop()`` tears it down.

Run ``python -m tests.sweeps.slurm_cluster`` to start one by hand and print how to use it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_reason() -> str | None:
    """Why no cluster can start here (None when it can)."""
    absent = [name for name in (*DAEMONS, "sbatch", "scontrol", "squeue") if shutil.which(name) is None]
    if absent:
        return f"Slurm / munge not installed (missing {', '.join(absent)}; `make test-cluster` installs slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the single-node Slurm test cluster needs root (slurmd runs jobs as their user)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    env: dict[str, str]
    pids: dict[str, Path] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def logs(self) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root", "--full"], env=self.env, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.pids.get(name)
            if pid_file is None or not pid_file.is_file():
                continue
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, ValueError, OSError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)


# cred_expire (default 120 s) is also how long a requeued job waits before it starts again.
def _conf(root: Path, host: str, cpus: int, ctld_port: int, slurmd_port: int, socket_path: Path) -> str:
    return f"""\
ClusterName=hcctest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={socket_path},cred_expire=10
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
KillWait=5
MinJobAge=3600
InactiveLimit=0
SchedulerParameters=defer=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start_cluster(cpus: int | None = None, timeout_s: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in a fresh temporary folder; wait until the node is idle.

    Raises:
        RuntimeError: a daemon did not start (the message holds the daemons' log tails).
    """
    cpus = cpus or max(2, os.cpu_count() or 2)
    root = Path(tempfile.mkdtemp(prefix="hcc-slurm-"))
    os.chmod(root, 0o755)
    for sub in ("state", "spool", "run", "log"):
        (root / sub).mkdir()
    munge_dir = root / "munge"
    munge_dir.mkdir(mode=0o700)
    munge = pwd.getpwnam("munge")
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    for path in (munge_dir, key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    os.chown(root / "log", munge.pw_uid, munge.pw_gid)
    os.chmod(root / "log", 0o777)
    socket_path = munge_dir / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, host, cpus, _free_port(), _free_port(), socket_path))
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root, conf, env)
    cluster.pids = {
        "munged": munge_dir / "munged.pid",
        "slurmctld": root / "run" / "slurmctld.pid",
        "slurmd": root / "run" / "slurmd.pid",
    }
    try:
        subprocess.run(
            ["runuser", "-u", "munge", "--", "munged", "--force", f"--socket={socket_path}", f"--key-file={key}",
             f"--log-file={root / 'log' / 'munged.log'}", f"--pid-file={cluster.pids['munged']}",
             f"--seed-file={munge_dir / 'munged.seed'}"],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        subprocess.run(["slurmctld", "-c", "-f", str(conf)], env=env, check=True, capture_output=True, timeout=30)
        subprocess.run(["slurmd", "-c", "-f", str(conf)], env=env, check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
            state = done.stdout.strip()
            if state == "idle":
                return cluster
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node did not become idle (state {state!r})\n{cluster.logs()}")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as exc:
        logs = cluster.logs()
        detail = getattr(exc, "stderr", "") or ""
        cluster.stop()
        raise RuntimeError(f"the single-node Slurm did not start: {exc}\n{detail}\n{logs}") from exc


if __name__ == "__main__":
    started = start_cluster()
    print(f"export SLURM_CONF={started.conf}\n(stop: kill the daemons in {started.root}/run, munged via its pid file)")
