"""``launcher:`` of a sweep YAML: where the workers run (local processes, or Slurm array tasks).

::

    launcher:
      type: slurm              # local (default) | slurm
      array: 8                 # array tasks, each one worker on the study
      partition: gpu
      gpus_per_task: 1
      cpus_per_task: 8
      mem: 32G
      time: "04:00:00"         # minutes, MM:SS, HH:MM:SS or D-HH:MM:SS
      signal_delay_s: 120      # the preemption signal comes this long before the time limit
      max_requeue: 3           # requeues after a time-out (preemptions are not limited)
      setup: ["module load cuda/12.4"]
      slurm_set: {account: radiology, qos: normal}   # any other sbatch option

The same settings come from ``hcc-exp sweep FILE --launcher slurm --array N ...``;
command-line values win. None of them changes what a trial computes, so they are not
part of the study's fingerprint.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from hcc_exp.sweeps.parameters import StrictModel

_TIME = re.compile(r"^(?:\d+-)?\d+(?::\d+){0,2}$")


def parse_slurm_time(value: int | str) -> int:
    """A Slurm time limit in whole minutes (rounded up), as submitit's ``time`` takes it.

    >>> parse_slurm_time(90), parse_slurm_time("90"), parse_slurm_time("01:30:00"), parse_slurm_time("1-00:00:00")
    (90, 90, 90, 1440)
    >>> parse_slurm_time("10:30")  # MM:SS
    11

    Raises:
        ValueError: not a Slurm time (e.g. ``"1h"``) or not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"time {value!r}: expected minutes or [D-]HH:MM:SS")
    if isinstance(value, int):
        minutes = value
    else:
        text = str(value).strip()
        if not _TIME.match(text):
            raise ValueError(f"time {value!r}: expected minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
        days_text, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        days = int(days_text) if days_text else 0
        if days_text:  # D-HH, D-HH:MM, D-HH:MM:SS
            hours, mins, secs = (parts + [0, 0])[:3]
        elif len(parts) == 3:
            hours, mins, secs = parts
        else:  # MM or MM:SS
            hours, mins, secs = 0, parts[0], parts[1] if len(parts) == 2 else 0
        minutes = days * 1440 + hours * 60 + mins + (1 if secs else 0)
    if minutes <= 0:
        raise ValueError(f"time {value!r}: must be positive")
    return minutes


class LauncherSpec(StrictModel):
    """Where the sweep's workers run (see the module docstring)."""

    type: Literal["local", "slurm"] = "local"
    array: int = Field(2, ge=1, description="Slurm array tasks (workers)")
    partition: str | None = None
    gpus_per_task: int | None = Field(None, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = Field(None, pattern=r"^\d+[KMGT]?B?$", description="memory per node, e.g. 16G")
    time: int | str = Field(60, description="time limit per task")
    signal_delay_s: int = Field(90, ge=1)
    max_requeue: int = Field(3, ge=0)
    setup: list[str] = Field(default_factory=list)
    slurm_set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _valid_time(cls, value: int | str) -> int | str:
        parse_slurm_time(value)
        return value

    @property
    def time_min(self) -> int:
        return parse_slurm_time(self.time)


def parse_slurm_set(items: list[str] | None) -> dict[str, str]:
    """``["account=rad", "qos=high"]`` (``--slurm-set``) -> ``{"account": "rad", "qos": "high"}``.

    Raises:
        ValueError: an item without ``=`` or with an empty key.
    """
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-set {item!r}: expected key=value (an sbatch option, e.g. account=rad)")
        result[key.strip().lstrip("-")] = value.strip()
    return result
