"""Lifetime of worker processes: they die with the process that started them, and SIGTERM unwinds like Ctrl-C.

A worker pool outlives its parent when the parent is stopped by SIGKILL (the OOM
killer, ``kill -9``) or by a SIGTERM that does not unwind (the default action kills the
process without running any ``finally``). The workers then run on, re-parented to
init, writing into folders nobody will publish. Two mechanisms stop them:

* :func:`die_with_parent`, called in the worker itself (a pool initializer): the Linux
  parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) kills the worker when its
  parent process exits, and a watchdog thread on the pid of the process that owns the
  pool (a pidfd where the kernel has them, else a poll of the pid once a second)
  covers what the signal cannot: a worker forked by a fork server, whose parent is the
  server rather than the owner, and systems without ``prctl``.
* :func:`sigterm_unwinds`, in the owner: SIGTERM raises ``SystemExit(143)`` in the main
  thread, as Ctrl-C raises ``KeyboardInterrupt``, so the owner's ``except`` / ``finally``
  blocks stop the workers and remove their staging folders.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1
"""``prctl`` option from ``<linux/prctl.h>``: signal delivered when the parent exits."""

WATCHDOG_POLL_SECONDS = 1.0
"""Poll interval of the watchdog where no pidfd is available."""


def set_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent exits; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(owner_pid: int) -> None:
    """Make this (worker) process exit when its parent or the process ``owner_pid`` exits.

    Call it first thing in the worker (e.g. a ``ProcessPoolExecutor`` initializer). The
    exit is immediate (``os._exit``): the worker's half-written files belong to a staging
    folder that the owner, or the next run, removes.
    """
    parent = os.getppid()
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the parent exited before the signal was armed
        os._exit(1)
    if owner_pid != os.getpid():
        threading.Thread(target=_watch, args=(owner_pid,), name="die-with-owner", daemon=True).start()


def _watch(owner_pid: int) -> None:
    try:
        fd = os.pidfd_open(owner_pid)  # readable once the process has exited
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
        os._exit(1)
    while True:
        try:
            os.kill(owner_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # exists, owned by someone else (cannot happen for our owner)
            pass
        time.sleep(WATCHDOG_POLL_SECONDS)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(128 + SIGTERM)`` in the main thread.

    The previous handler comes back on exit. Outside the main thread (where Python cannot
    install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


M_TRIM_THRESHOLD = -1
"""``mallopt`` parameter from glibc's ``<malloc.h>``: free heap top kept before returning it to the OS."""

M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter: allocations at least this large get their own ``mmap`` (unmapped on free)."""

RETAINED_ALLOCATION_BYTES = 1 << 30
"""Allocations below 1 GiB come from the heap, and up to this much freed heap is kept."""


def retain_freed_memory() -> bool:
    """Keep freed activation buffers in the process instead of handing them back to the OS (glibc).

    A training step allocates and frees the same tens-of-MB activation tensors every step.
    glibc serves blocks above its mmap threshold (at most 32 MB, adjusted dynamically) with
    a fresh ``mmap`` and unmaps them on free, so every step pays the page faults of zeroed
    pages again: measured on the tiny preset (48^3 crops, batch 8, 1 thread), 0.9 vs 1.2-1.3
    s per step (``benchmarks/bench_step.py`` compares a process with and without this).
    Raising both thresholds makes freed blocks stay in the heap for the next step; the
    process's resident memory then stays at its peak instead of shrinking between steps.

    Returns:
        True when both thresholds were set; False where there is no glibc ``mallopt`` (musl,
        macOS, Windows), where nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, RETAINED_ALLOCATION_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, RETAINED_ALLOCATION_BYTES)
    )
