"""Shared helpers of the benchmark scripts: machine info, timing over repeats, result JSON.

Timing method. Every benchmark compares two (or more) alternatives in ONE process on the
SAME data, interleaved: repeat ``r`` runs A then B, repeat ``r + 1`` runs B then A, and so
on, so that a load spike from another user of the shared cores hits both sides. Each time
is measured with :func:`time.perf_counter` and reported as min / median / max over the
repeats (after ``warmup`` untimed calls). The headline ratio is the ratio of the medians;
the per-repeat ratios (A_r / B_r of the same repeat) are reported too, as min / median / max.
Absolute times on a shared 2-core machine are noisy; ratios measured this way are not.

Threads. :func:`set_threads` sets ``torch.set_num_threads(n)`` (the intra-op threads of
torch's CPU kernels: convolutions, ``grid_sample``...; torch's default is one per physical
core), SimpleITK's global default number of threads (ITK filters and resampling; its
default is every core) and, through ``threadpoolctl``, numpy's BLAS / OpenMP pools, so that
both sides of a comparison get the same number of threads.
The default is 1 thread (docs/CONTRIBUTING.md: the cores are shared); an alternative that
runs 2 worker processes then uses the 2 cores with one thread each. ``--threads`` changes it.

Results. :func:`report_result` (:func:`write_result` + :func:`print_result`) writes ``benchmarks/results/<name>.json``: the machine
(:func:`machine_info`), the sizes, every timing, the ratio, the target and whether it is
met, and free-text ``notes``. Targets are goals, not test thresholds: nothing fails on a
timing. Scratch data (synthetic cohorts, caches, run folders) lives in
``benchmarks/results/tmp/`` (git-ignored) and is reused between runs where it is an input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
WORK_DIR = RESULTS_DIR / "tmp"
"""Scratch space of the benchmarks (git-ignored): cohorts, caches, run and sweep folders."""

SCHEMA_VERSION = 1

BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("preprocess", "bench_preprocess.py"),
    ("loader", "bench_loader.py"),
    ("model", "bench_model.py"),
    ("step", "bench_step.py"),
    ("bootstrap", "bench_bootstrap.py"),
    ("oracle", "bench_oracle.py"),
    ("pruning", "bench_pruning.py"),
    ("real_preprocess", "bench_real_preprocess.py"),
)
"""(result name, script) of every benchmark, in the order ``run_all.py`` runs them and tables list them."""

SUMMARY_JSON = "run_all.json"
"""Written by ``run_all.py`` next to the results: start, wall time and exit status of each script."""

_THREADPOOL_LIMITS: list[object] = []


# --------------------------------------------------------------------------- set-up
def setup_process(threads: int) -> None:
    """Run from the repository root (``params.yaml``, git state), quiet W&B and set the threads."""
    os.chdir(REPO_ROOT)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")
    set_threads(threads)


def set_threads(threads: int) -> None:
    """One thread count for torch's CPU kernels, SimpleITK and BLAS / OpenMP pools (see the module docstring)."""
    import SimpleITK as sitk
    import torch
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    # numpy's BLAS (matrix products of the vectorised bootstrap) and OpenMP pools; kept for the process.
    _THREADPOOL_LIMITS.append(threadpool_limits(limits=threads))


def base_parser(description: str, *, repeats: int, threads: int = 1) -> argparse.ArgumentParser:
    """Arguments every benchmark script takes: ``--repeats`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed repeats per alternative (default {repeats})")
    parser.add_argument(
        "--threads", type=int, default=threads, help=f"torch / SimpleITK threads in this process (default {threads})"
    )
    return parser


# --------------------------------------------------------------------------- machine
def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Cores, memory, load, library versions and the device the benchmark ran on."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    import hcc_exp

    info: dict[str, Any] = {
        "device": device,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "simpleitk": sitk.Version_VersionString(),
        "hcc_exp": hcc_exp.__version__,
        "cuda_available": torch.cuda.is_available(),
        "git_commit": _git("rev-parse", "--verify", "-q", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:  # pragma: no cover - psutil comes with the project's dependencies
        info["memory_gib"] = None
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:  # pragma: no cover
        info["monai"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds of the timed repeats of one alternative."""

    values: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def scaled(self, factor: float) -> Timing:
        """The same repeats times ``factor`` (e.g. per patient, per sample)."""
        return Timing([v * factor for v in self.values])

    def to_dict(self, unit: str = "s", digits: int = 6) -> dict[str, Any]:
        return {
            "min": round(self.min, digits),
            "median": round(self.median, digits),
            "max": round(self.max, digits),
            "repeats": len(self.values),
            "unit": unit,
            "values": [round(v, digits) for v in self.values],
        }


def summary(values: Sequence[float], unit: str | None = None, digits: int = 6) -> dict[str, Any]:
    """min / median / max of any per-repeat quantity (rates, ratios, memory)."""
    out: dict[str, Any] = {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
        "repeats": len(values),
    }
    if unit is not None:
        out["unit"] = unit
    return out


def interleaved(
    alternatives: dict[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int | dict[str, int] = 1,
    before_each: Callable[[str], None] | None = None,
    on_repeat: Callable[[int], None] | None = None,
) -> dict[str, Timing]:
    """Time each alternative ``repeats`` times, interleaved, the order rotated every repeat.

    Args:
        alternatives: name -> zero-argument callable (the timed work).
        repeats: timed calls per alternative.
        warmup: untimed calls per alternative first (imports, caches, allocator); one
            number for all, or name -> number.
        before_each: untimed set-up called with the name before every call (e.g. clear an output folder).
        on_repeat: called with the repeat index after each round (progress).

    Returns:
        name -> :class:`Timing` in the order of ``alternatives``.
    """
    names = list(alternatives)
    warmups = warmup if isinstance(warmup, dict) else dict.fromkeys(names, warmup)
    for name in names:
        for _ in range(warmups.get(name, 0)):
            if before_each is not None:
                before_each(name)
            alternatives[name]()
    timings = {name: Timing() for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if before_each is not None:
                before_each(name)
            start = time.perf_counter()
            alternatives[name]()
            timings[name].values.append(time.perf_counter() - start)
        if on_repeat is not None:
            on_repeat(r)
    return timings


def ratio(numerator: Timing, denominator: Timing) -> dict[str, Any]:
    """``numerator / denominator``: of the medians, and min / median / max of the per-repeat ratios."""
    per_repeat = [a / b for a, b in zip(numerator.values, denominator.values, strict=True) if b > 0]
    return {
        "of_medians": round(numerator.median / denominator.median, 4),
        "per_repeat": summary(per_repeat, digits=4),
    }


# --------------------------------------------------------------------------- targets and results
@dataclass(frozen=True)
class Target:
    """What a benchmark aims at: ``ratio >= value`` (``op`` ``>=``) or ``ratio <= value``."""

    value: float
    text: str
    op: str = ">="

    def met(self, measured: float | None) -> bool | None:
        if measured is None or not math.isfinite(measured):
            return None
        return measured >= self.value if self.op == ">=" else measured <= self.value

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "value": self.value, "text": self.text}


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN / inf -> None, numpy scalars -> Python, Paths -> str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(
    name: str,
    *,
    title: str,
    compares: str,
    ratio_label: str,
    ratio_value: float | None,
    target: Target,
    ratio_text: str | None = None,
    sizes: dict[str, Any],
    timings: dict[str, Any],
    results: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    device: str = "cpu",
    started: float | None = None,
    target_met: bool | None = None,
    results_dir: Path = RESULTS_DIR,
) -> dict[str, Any]:
    """Write ``<results_dir>/<name>.json`` and return the payload.

    Args:
        name: file stem, e.g. ``preprocess``.
        title: one line for tables ("Preprocessing").
        compares: what vs what ("hcc-exp preprocess_patient vs MONAI transform chain").
        ratio_label: how the ratio is formed ("MONAI time / hcc-exp time").
        ratio_value: the headline ratio (None when it could not be measured).
        ratio_text: how tables show the measured numbers (default ``"<ratio>x"``).
        target: the goal; ``target_met`` overrides ``target.met(ratio_value)`` when a
            benchmark's goal has a second condition (e.g. an equal score).
        sizes: every size parameter the run used.
        timings: name -> :meth:`Timing.to_dict` (or :func:`summary`) output.
        results: any other measured numbers (output comparisons, scores, memory).
        notes: free text: what holds a missed target back, pending runs, caveats.
        started: ``time.perf_counter()`` at the start of the script (wall time is recorded).
    """
    met = target.met(ratio_value) if target_met is None else target_met
    payload = {
        "schema": SCHEMA_VERSION,
        "benchmark": name,
        "title": title,
        "compares": compares,
        "ratio_label": ratio_label,
        "ratio": None if ratio_value is None else round(float(ratio_value), 4),
        "ratio_text": ratio_text,
        "target": target.to_dict(),
        "target_met": met,
        "machine": machine_info(device),
        "sizes": sizes,
        "timings": timings,
        "results": results or {},
        "notes": list(notes or []),
        "command": [Path(sys.executable).name, *sys.argv],
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": None if started is None else round(time.perf_counter() - started, 2),
    }
    payload = _clean(payload)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return payload


def print_result(payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> None:
    """A short Rich summary of one result on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{payload['title']}: {payload['compares']}", show_header=True)
    table.add_column("timing")
    for column in ("min", "median", "max", "unit"):
        table.add_column(column, justify="right")
    for key, t in payload["timings"].items():
        if isinstance(t, dict) and {"min", "median", "max"} <= set(t):
            table.add_row(key, *(_fmt(t[c]) for c in ("min", "median", "max")), str(t.get("unit", "")))
    console.print(table)
    met = {True: "[green]met[/]", False: "[red]missed[/]", None: "n/a"}[payload["target_met"]]
    console.print(
        f"{payload['ratio_label']}: [bold]{_fmt(payload['ratio'])}[/] (target {payload['target']['text']}: {met})"
    )
    for note in payload["notes"]:
        console.print(f"  note: {note}", highlight=False)
    console.print(f"-> {results_dir / (payload['benchmark'] + '.json')}")


def report_result(name: str, **fields: Any) -> dict[str, Any]:
    """The closing step of every benchmark: :func:`write_result` (same arguments), then :func:`print_result`.

    Returns:
        The payload written to ``<results_dir>/<name>.json``.
    """
    payload = write_result(name, **fields)
    print_result(payload, fields.get("results_dir", RESULTS_DIR))
    return payload


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------- shared data
def synthetic_cohort(patients: int, seed: int = 7) -> Path:
    """The synthetic cohort of ``patients`` / ``seed`` under ``WORK_DIR/cohorts`` (written once, then reused).

    The folder name carries the generator version, so a changed generator writes a new one.
    """
    import pandas as pd

    from hcc_exp.data.synthetic import SYNTHETIC_VERSION, write_synthetic_cohort

    folder = WORK_DIR / "cohorts" / f"synthetic-{patients}p-seed{seed}-v{SYNTHETIC_VERSION}"
    csv = folder / "cohort.csv"
    if csv.is_file() and (folder / "oracle.csv").is_file():
        if len(pd.read_csv(csv)) == patients:
            return folder
    write_synthetic_cohort(folder, patients, seed, progress=False)
    return folder


def fresh_dir(path: Path) -> Path:
    """Remove ``path`` if it exists and create it empty."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
