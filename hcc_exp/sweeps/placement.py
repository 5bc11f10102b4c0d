"""Placing local sweep workers on GPUs: one ``CUDA_VISIBLE_DEVICES`` per worker, round robin.

``hcc-exp sweep FILE --workers N`` on a machine with G visible GPUs gives each worker
process one GPU (worker i starts on GPU i mod G); ``--trials-per-gpu K`` lets up to K
workers share a GPU, so N may be at most G x K. A worker that exits frees its slot and
its replacement takes the least-loaded GPU. Without GPUs nothing is set (CPU training).

The visible GPUs are ``$HCC_EXP_SWEEP_GPUS`` when set (``"0,2"``, or ``""`` / ``none``
for no GPU), else the ids in ``$CUDA_VISIBLE_DEVICES``, else ``0 .. torch.cuda.device_count()-1``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hcc_exp.errors import SweepError

GPUS_ENV = "HCC_EXP_SWEEP_GPUS"


def _parse_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def visible_gpus(environ: dict[str, str] | None = None, device_count: int | None = None) -> list[str]:
    """The GPU ids workers may be placed on (see the module docstring for the rules).

    Args:
        environ: the environment (default ``os.environ``).
        device_count: what ``torch.cuda.device_count()`` returns (asked when None).

    >>> visible_gpus({"HCC_EXP_SWEEP_GPUS": "0,2"})
    ['0', '2']
    >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "3,1"}, device_count=2)
    ['3', '1']
    >>> visible_gpus({}, device_count=0)
    []
    """
    env = os.environ if environ is None else environ
    override = env.get(GPUS_ENV)
    if override is not None:
        return [] if override.strip().lower() in {"", "none", "cpu"} else _parse_ids(override)
    if device_count is None:
        device_count = _torch_device_count()
    if device_count <= 0:
        return []
    listed = _parse_ids(env.get("CUDA_VISIBLE_DEVICES", ""))
    if listed:
        return listed[:device_count]
    return [str(i) for i in range(device_count)]


def _torch_device_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no torch build with CUDA, or a broken driver: CPU
        return 0


@dataclass(frozen=True)
class DevicePool:
    """GPU ids and how many workers each may hold at once.

    Attributes:
        devices: GPU ids as ``CUDA_VISIBLE_DEVICES`` takes them.
        per_device: workers (trials) allowed on one GPU at a time.
    """

    devices: tuple[str, ...]
    per_device: int = 1

    @classmethod
    def for_workers(cls, devices: Sequence[str], workers: int, per_device: int = 1) -> DevicePool | None:
        """The pool for ``workers`` workers; None without GPUs (nothing to place).

        Raises:
            SweepError: ``per_device`` < 1, or more workers than GPUs x ``per_device``.
        """
        if per_device < 1:
            raise SweepError(f"--trials-per-gpu must be >= 1, got {per_device}")
        if not devices:
            return None
        if workers > len(devices) * per_device:
            raise SweepError(
                f"--workers {workers} on {len(devices)} GPU(s) ({', '.join(devices)}) with --trials-per-gpu "
                f"{per_device}: at most {len(devices) * per_device} workers; raise --trials-per-gpu or lower --workers"
            )
        return cls(tuple(devices), per_device)

    def acquire(self, in_use: Sequence[str | None]) -> str:
        """The GPU for a new worker, given the GPUs of the running ones: the least-loaded, lowest first.

        Starting workers one after another from an empty pool is round robin:

        >>> pool = DevicePool(("0", "1"), per_device=2)
        >>> held = []
        >>> for _ in range(4):
        ...     held.append(pool.acquire(held))
        >>> held
        ['0', '1', '0', '1']

        Raises:
            SweepError: every GPU already holds ``per_device`` workers.
        """
        load = Counter(d for d in in_use if d is not None)
        device = min(self.devices, key=lambda d: (load[d], self.devices.index(d)))
        if load[device] >= self.per_device:
            raise SweepError(f"every GPU ({', '.join(self.devices)}) already runs {self.per_device} worker(s)")
        return device


def plan_devices(devices: Sequence[str], workers: int, per_device: int = 1) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of workers 0..workers-1 started together (None each without GPUs).

    >>> plan_devices(["0", "1", "2"], 5, per_device=2)
    ['0', '1', '2', '0', '1']
    >>> plan_devices([], 2)
    [None, None]
    """
    pool = DevicePool.for_workers(devices, workers, per_device)
    if pool is None:
        return [None] * workers
    held: list[str | None] = []
    for _ in range(workers):
        held.append(pool.acquire(held))
    return held
