"""`hcc-exp preprocess` stopped mid-run: its worker processes go with it, SIGTERM cleans up like Ctrl-C.

Each test starts the real command in a subprocess (from a folder without params.yaml, so
the package defaults apply) on a cohort slow enough to stop mid-run, waits until two
workers have written a patient into the staging folder, and stops the command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import write_tiny_cohort

REPO_ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 10.0
# 0.4 mm and a 64^3 crop make each tiny patient take a good fraction of a second.
SLOW = ["--set", "preprocess.spacing_mm=[0.4,0.4,0.4]", "--set", "preprocess.crop_size_vox=[64,64,64]",
        "--set", "preprocess.workers=2"]


def _children(pid: int) -> dict[int, int]:
    """``{child pid: parent pid}`` of every process ``pid`` started, recursively (psutil, else /proc)."""
    try:
        import psutil

        return {p.pid: p.ppid() for p in psutil.Process(pid).children(recursive=True)}
    except ImportError:
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(stat.parent.name)] = int(fields[1])
        found, frontier = {}, {pid}
        while frontier:
            frontier = {child for child, parent in parents.items() if parent in frontier and child not in found}
            found.update({child: parents[child] for child in frontier})
        return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan re-parented to a PID 1 that does not reap stays a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _start_and_wait_mid_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, dict[int, int]]:
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=16)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "cache"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "hcc_exp.cli", "preprocess", str(cohort), "cache", "--quiet", *SLOW]
    proc = subprocess.Popen(command, cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"preprocess ended before it could be stopped: {proc.stdout.read().decode()}")
        written = list(out.glob(".tmp-*/patients/*")) if out.is_dir() else []
        workers = [c for c, parent in _children(proc.pid).items() if parent != proc.pid]  # forked by the server
        if written and len(workers) >= 2:
            return proc, out, _children(proc.pid)
        time.sleep(0.05)
    proc.kill()
    pytest.fail("preprocess did not start its workers within 240 s")


def _wait_gone(pids) -> list[int]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _running(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics (/proc, prctl)")
def test_sigkill_of_preprocess_takes_its_workers_along(tmp_path: Path):
    proc, out, children = _start_and_wait_mid_run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert _wait_gone(children) == [], f"still running {GONE_WITHIN_S} s after SIGKILL of their parent"
    # What the killed run staged is abandoned, never published; the next run clears it.
    assert [p.name for p in out.iterdir() if not p.name.startswith(".tmp-")] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics (/proc, prctl)")
def test_sigterm_of_preprocess_stops_its_workers_and_removes_the_staging_folder(tmp_path: Path):
    proc, out, children = _start_and_wait_mid_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert _wait_gone(children) == []
    assert list(out.iterdir()) == []  # no staging folder, no cache, no current.json
    assert b"Traceback" not in proc.stdout.read()
