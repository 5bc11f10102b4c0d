"""Worker lifetime: the parent-death signal, the watchdog on the owner's pid, SIGTERM unwinding like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hcc_exp.processes import set_parent_death_signal, sigterm_unwinds

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only (prctl, /proc)")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.05)
    return False


def test_sigterm_raises_system_exit_143_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info, sigterm_unwinds():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler
    assert exit_info.value.code == 128 + signal.SIGTERM == 143
    assert signal.getsignal(signal.SIGTERM) is before


@linux
def test_parent_death_signal_kills_the_child_when_its_parent_is_killed():
    # parent -> child; the child arms only the parent-death signal (owner = itself: no watchdog).
    child_code = (
        "import os, time; from hcc_exp.processes import die_with_parent; "
        "die_with_parent(os.getpid()); print('armed', flush=True); time.sleep(60)"
    )
    parent_code = (
        "import subprocess, sys, time; "
        f"c = subprocess.Popen([sys.executable, '-c', {child_code!r}], stdout=subprocess.PIPE); "
        "c.stdout.readline(); print(c.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, env=ENV)
    child_pid = int(parent.stdout.readline())
    assert _running(child_pid)
    parent.kill()
    parent.wait()
    assert _gone_within(child_pid, 5.0)


@linux
def test_watchdog_ends_a_worker_whose_owner_is_not_its_parent():
    # As a fork-server worker: the pool's owner is another process than the worker's parent.
    owner = subprocess.Popen(["sleep", "60"])
    code = (
        "import sys, time; from hcc_exp.processes import die_with_parent; "
        "die_with_parent(int(sys.argv[1])); print('armed', flush=True); time.sleep(60)"
    )
    worker = subprocess.Popen([sys.executable, "-c", code, str(owner.pid)], stdout=subprocess.PIPE, env=ENV)
    assert worker.stdout.readline().strip() == b"armed"
    time.sleep(0.2)
    assert worker.poll() is None  # the owner is alive: the worker runs on
    owner.kill()
    owner.wait()
    assert worker.wait(timeout=10) == 1


@linux
def test_parent_death_signal_is_available_here():
    assert set_parent_death_signal(0)  # 0 disarms: harmless for the test process itself


_RESIDENT_AFTER_FREE = r"""
import ctypes, sys
from hcc_exp.processes import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
page = 4096
def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
size = 64 * 2**20
block = libc.malloc(size)
ctypes.memset(block, 1, size)  # touch every page
before = resident_mib()
libc.free(block)
print(before - resident_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retain_freed_memory_keeps_a_freed_64_mib_block_resident():
    # glibc's default serves a 64 MiB malloc by mmap and unmaps it on free (resident memory
    # drops by ~64 MiB); with the thresholds raised, the freed block stays in the heap.
    def released_mib(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _RESIDENT_AFTER_FREE, mode], capture_output=True, text=True,
                             check=True)
        return float(out.stdout)

    assert released_mib("default") > 60
    assert released_mib("retain") < 4
