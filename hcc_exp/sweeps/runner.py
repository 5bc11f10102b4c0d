"""Run a sweep: validate the YAML, prepare the study, supervise worker processes, write trials.csv.

Sweep folder (``<runs root>/<sweep name>/``, runs root = ``tracking.runs_dir`` of the base config)::

    sweep.yaml           the resolved spec (base path absolute, overrides merged)
    base_params.yaml     the base config the trials started from
    optuna.journal       the study (default journal storage; absent with PostgreSQL)
    optuna.journal.heartbeats/   per-trial heartbeat files of running trials
    runs/<number>-<arm>-s<seed>/ one run folder per trial (docs/ARCHITECTURE.md)
    logs/worker-<i>.log  worker output
    wandb/               offline W&B runs, group = sweep name
    trials.csv           number, arm, seed, state, value, run_dir, duration_s, ...
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import optuna
import yaml
from optuna.storages import BaseStorage

from hcc_exp.errors import ConfigError, SweepError
from hcc_exp.sweeps.optuna_backend import (
    RUNS_DIR,
    TRIALS_CSV,
    TrainFn,
    TrialRecord,
    create_or_load_study,
    enqueue_missing,
    import_train_fn,
    load_study,
    make_pruner,
    recover_stale_trials,
    run_worker,
    sweep_status,
    train_fn_path,
    trial_records,
    write_trials_csv,
)
from hcc_exp.sweeps.spec import ResolvedSweep, load_sweep_spec
from hcc_exp.sweeps.storage import StorageTarget, open_storage, resolve_storage
from hcc_exp.sweeps.worker import STORAGE_ENV

logger = logging.getLogger(__name__)

SWEEP_YAML = "sweep.yaml"
BASE_PARAMS = "base_params.yaml"
LOGS_DIR = "logs"
POLL_S = 0.5


# --------------------------------------------------------------------------- summary
@dataclass
class SweepSummary:
    """Outcome of :func:`run_sweep`.

    Attributes:
        name: sweep name.
        sweep_dir: the sweep folder.
        backend: ``optuna`` or ``wandb``.
        method: grid / random / bayes.
        metric, goal: the objective.
        storage: where the study lives (password masked).
        expected: grid cells (arm x seed) or the trial budget.
        finished: cells COMPLETE (grid) or trials finished and not being retried (search).
        trials: every trial of the study (all machines), oldest first.
        cells: (arm, seed) of a grid, in spec order.
        trials_csv: the written ``trials.csv`` (None for the W&B backend).
        wandb_sweep_id: the W&B sweep id (W&B backend only).
    """

    name: str
    sweep_dir: Path
    backend: str
    method: str
    metric: str
    goal: str
    storage: str
    expected: int
    trials: list[TrialRecord] = field(default_factory=list)
    cells: list[tuple[str, int]] = field(default_factory=list)
    finished: int = 0
    trials_csv: Path | None = None
    wandb_sweep_id: str | None = None

    @property
    def state_counts(self) -> dict[str, int]:
        return dict(Counter(t.state for t in self.trials))

    @property
    def missing(self) -> list[tuple[str, int]]:
        """Grid cells without a COMPLETE trial."""
        done = {(t.arm, t.seed) for t in self.trials if t.state == "COMPLETE"}
        return [c for c in self.cells if c not in done]

    @property
    def complete(self) -> bool:
        """Every arm x seed COMPLETE (grid), or the whole trial budget finished (search)."""
        if self.backend != "optuna":
            return True
        if self.method == "grid":
            return not self.missing
        return self.finished >= self.expected

    @property
    def best(self) -> TrialRecord | None:
        scored = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
        if not scored:
            return None
        pick = max if self.goal == "maximize" else min
        return pick(scored, key=lambda t: t.value)

    def to_rich_table(self) -> Any:
        """A Rich table: one row per arm (grid) or the best trials (search)."""
        from rich.table import Table

        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(self.state_counts.items()))
        table = Table(
            title=f"Sweep {self.name} ({self.backend}, {self.method}) - {counts or 'no trials'}",
            caption=f"{self.sweep_dir}  storage: {self.storage}",
        )
        complete = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        if self.method == "grid":
            for column in ("arm", "seeds complete", f"{self.metric} mean", "min", "max"):
                table.add_column(column)
            arms = list(dict.fromkeys(arm for arm, _ in self.cells))
            for arm in arms:
                values = [t.value for t in complete if t.arm == arm]
                seeds = sum(1 for c in self.cells if c[0] == arm)
                row = [arm, f"{len(values)}/{seeds}"]
                row += (
                    [f"{sum(values) / len(values):.4f}", f"{min(values):.4f}", f"{max(values):.4f}"]
                    if values
                    else ["-", "-", "-"]
                )
                table.add_row(*row)
        else:
            for column in ("trial", "state", self.metric, "params"):
                table.add_column(column)
            ranked = sorted(complete, key=lambda t: t.value, reverse=self.goal == "maximize")[:10]
            for t in ranked:
                params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
                table.add_row(str(t.number), t.state, f"{t.value:.4f}", params)
        return table

    def __str__(self) -> str:
        states = ", ".join(f"{k}={v}" for k, v in sorted(self.state_counts.items()))
        return f"sweep {self.name}: {states}; complete={self.complete}; folder {self.sweep_dir}"


# --------------------------------------------------------------------------- preparation
@dataclass
class PreparedSweep:
    """A sweep whose study exists, whose folder is written and whose grid cells are queued."""

    resolved: ResolvedSweep
    sweep_dir: Path
    target: StorageTarget
    study: optuna.Study
    storage: BaseStorage
    enqueued: list[tuple[str, int]]


def sweep_dir_for(resolved: ResolvedSweep, runs_root: Path | None = None) -> Path:
    """``<runs root>/<sweep name>``; the runs root defaults to the base config's ``tracking.runs_dir``."""
    root = Path(runs_root) if runs_root is not None else resolved.config_for({}, None).tracking.runs_dir
    return root / resolved.spec.name


def _write_sweep_folder(resolved: ResolvedSweep, sweep_dir: Path) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / RUNS_DIR).mkdir(exist_ok=True)
    spec = resolved.spec
    if resolved.base_path is not None:
        spec = spec.model_copy(update={"base": str(resolved.base_path)})
    header = f"# Resolved copy of {resolved.source} (overrides merged); written by hcc-exp sweep.\n"
    (sweep_dir / SWEEP_YAML).write_text(header + spec.to_yaml(), encoding="utf-8")
    (sweep_dir / BASE_PARAMS).write_text(yaml.safe_dump(resolved.base_config, sort_keys=False), encoding="utf-8")


def prepare_sweep(
    spec_path: Path | str,
    *,
    overrides: dict[str, Any] | None = None,
    runs_root: Path | None = None,
    join: str | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
) -> PreparedSweep:
    """Validate the YAML, open or create the study, re-queue dead trials and enqueue missing cells.

    Nothing is created when the YAML is invalid.

    Args:
        spec_path: the sweep YAML.
        overrides: dotted config keys applied to every trial (``--set``).
        runs_root: parent of the sweep folder (default ``tracking.runs_dir``).
        join: storage URL (or journal path) of a study started elsewhere; the study's
            own spec is then used and nothing is enqueued.
        seeds, name: replace the spec's seeds / name (``--seeds``, ``--name``).

    Raises:
        ConfigError: invalid YAML, unknown keys, wrong types.
        SweepError: storage problems, a same-named study with another spec, a missing study to join.
    """
    resolved = load_sweep_spec(spec_path, overrides, seeds=seeds, name=name)
    spec = resolved.spec
    if spec.backend != "optuna":
        raise SweepError(f"sweep '{spec.name}' uses backend: {spec.backend}; only Optuna sweeps have a study")
    make_pruner(spec, resolved.config_for({}, None).trainer.max_epochs)  # bad pruner options: refuse before writing
    sweep_dir = sweep_dir_for(resolved, runs_root)
    target = resolve_storage(join if join is not None else spec.storage, sweep_dir)
    if join is not None:
        study, storage, stored = load_study(target, spec.name)
        if stored.fingerprint() != resolved.fingerprint():
            logger.warning(
                "joining study '%s': the local %s differs from the study's spec; running the study's trials",
                spec.name,
                spec_path,
            )
        resolved = stored
        _write_sweep_folder(resolved, sweep_dir)
        recover_stale_trials(study, storage, target, resolved.spec)
        return PreparedSweep(resolved, sweep_dir, target, study, storage, [])
    storage = open_storage(
        target, heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_period, max_retry=spec.max_retry
    )
    with _enqueue_lock(target):
        study = create_or_load_study(resolved, storage)
        _write_sweep_folder(resolved, sweep_dir)
        recover_stale_trials(study, storage, target, spec)
        enqueued = enqueue_missing(study, resolved)
    return PreparedSweep(resolved, sweep_dir, target, study, storage, enqueued)


@contextlib.contextmanager
def _enqueue_lock(target: StorageTarget) -> Iterator[None]:
    """Serialise "look at the queue, then enqueue" between two sweeps started at once on one journal.

    (PostgreSQL studies are started once and joined with ``--join``, which never enqueues.)
    """
    if target.kind != "journal":
        yield
        return
    # Not "<journal>.lock": JournalFileSymlinkLock uses that name.
    with open(target.url + ".enqueue.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- workers
def worker_command(
    prepared: PreparedSweep, train_fn: str, worker_index: int, *, workers: int = 1
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one worker process (the storage travels in the environment)."""
    argv = [
        sys.executable,
        "-m",
        "hcc_exp.sweeps.worker",
        "--sweep-dir",
        str(prepared.sweep_dir.resolve()),
        "--study",
        prepared.resolved.spec.name,
        "--train-fn",
        train_fn,
        "--worker-index",
        str(worker_index),
    ]
    env = dict(os.environ)
    env[STORAGE_ENV] = prepared.target.url
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join([cwd, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    # Share the CPUs between workers unless the user chose a thread count.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))
    return argv, env


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    log: IO[bytes]
    log_path: Path


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace", encoding="utf-8").splitlines()[-lines:])
    except OSError:
        return ""


def _stop_workers(workers: list[_Worker], timeout_s: float = 15.0) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            worker.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        worker.log.close()


def _supervise(prepared: PreparedSweep, *, workers: int, train_fn: str, progress: bool) -> None:
    """Keep up to ``workers`` worker processes busy until no trial is waiting or running."""
    logs = prepared.sweep_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    spec = prepared.resolved.spec
    alive: list[_Worker] = []
    crashes: list[str] = []
    max_crashes = 2 * workers + 2
    next_index = 0
    progress_bar = None
    task = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress_bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        )
    with progress_bar if progress_bar is not None else contextlib.nullcontext():
        try:
            while True:
                for worker in list(alive):
                    rc = worker.process.poll()
                    if rc is None:
                        continue
                    alive.remove(worker)
                    worker.log.close()
                    if rc != 0:
                        crashes.append(f"worker-{worker.index} exit {rc}:\n{_log_tail(worker.log_path)}")
                if len(crashes) > max_crashes:
                    raise SweepError(
                        f"sweep '{spec.name}': worker processes keep failing ({len(crashes)} exits); "
                        f"logs in {logs}. Last:\n{crashes[-1]}"
                    )
                recover_stale_trials(prepared.study, prepared.storage, prepared.target, spec)
                status = sweep_status(prepared.study, prepared.resolved)
                if progress_bar is not None:
                    info = f"running {status.running}, waiting {status.waiting}, workers {len(alive)}"
                    if task is None:
                        task = progress_bar.add_task(f"sweep {spec.name}", total=status.expected, info=info)
                    progress_bar.update(task, completed=status.done, info=info)
                wanted = min(workers, status.waiting + status.budget_left + len(alive)) if status.work_left else 0
                for _ in range(max(0, wanted - len(alive))):
                    argv, env = worker_command(prepared, train_fn, next_index, workers=workers)
                    log_path = logs / f"worker-{next_index}.log"
                    handle = log_path.open("ab")
                    process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
                    alive.append(_Worker(next_index, process, handle, log_path))
                    next_index += 1
                if not alive and not status.work_left and status.running == 0:
                    break
                time.sleep(POLL_S)
        except BaseException:
            _stop_workers(alive)
            raise


# --------------------------------------------------------------------------- entry points
def _summary(prepared: PreparedSweep) -> SweepSummary:
    resolved = prepared.resolved
    spec = resolved.spec
    records = trial_records(prepared.study)
    csv_path = write_trials_csv(records, prepared.sweep_dir / TRIALS_CSV)
    status = sweep_status(prepared.study, resolved)
    return SweepSummary(
        name=spec.name,
        sweep_dir=prepared.sweep_dir,
        backend="optuna",
        method=spec.method,
        metric=spec.metric.name,
        goal=spec.metric.goal,
        storage=prepared.target.display,
        expected=status.expected,
        trials=records,
        cells=[c.key for c in resolved.cells()],
        trials_csv=csv_path,
        finished=status.done,
    )


def run_sweep(
    spec_path: Path | str,
    *,
    workers: int = 1,
    join: str | None = None,
    overrides: dict[str, Any] | None = None,
    train_fn: str | TrainFn | None = None,
    progress: bool = True,
    runs_root: Path | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
) -> SweepSummary:
    """Run (or resume) the sweep described by ``spec_path``.

    Args:
        spec_path: sweep YAML (``sweeps/ablation.yaml``).
        workers: local worker processes sharing the study (0 = run trials in this process).
        join: storage URL of a study started on another machine: add this machine's workers to it.
        overrides: dotted config keys for every trial (``--set trainer.max_epochs=1``).
        train_fn: ``"module:function"`` or an importable callable; default ``hcc_exp.training.train:train``.
        progress: Rich progress bar.
        runs_root: parent of the sweep folder (default: the base config's ``tracking.runs_dir``).
        seeds: replace the spec's seeds (``--seeds 0``: one seed per arm for a quick run).
        name: replace the spec's name, i.e. the study and ``runs/<name>`` (``--name``).

    Returns:
        The summary of every trial in the study; ``trials.csv`` is written in the sweep folder.

    Raises:
        ConfigError: the YAML is invalid (before anything runs or is written).
        SweepError: storage, worker or W&B problems.
    """
    if workers < 0:
        raise SweepError(f"workers must be >= 0, got {workers}")
    resolved = load_sweep_spec(spec_path, overrides, seeds=seeds, name=name)
    spec = resolved.spec
    if spec.backend == "wandb":
        if join is not None:
            raise SweepError("--join adds workers to an Optuna study; W&B sweeps are joined with `wandb agent`")
        from hcc_exp.sweeps.wandb_backend import run_wandb_sweep

        sweep_dir = sweep_dir_for(resolved, runs_root)
        sweep_id = run_wandb_sweep(resolved, sweep_dir=sweep_dir, train_fn=import_train_fn(train_fn))
        return SweepSummary(
            name=spec.name,
            sweep_dir=sweep_dir,
            backend="wandb",
            method=spec.method,
            metric=spec.metric.name,
            goal=spec.metric.goal,
            storage="W&B server",
            expected=len(resolved.cells()) or (spec.trials or 0),
            wandb_sweep_id=sweep_id,
        )
    fn_path = train_fn_path(train_fn) if workers > 0 else None
    fn = import_train_fn(train_fn) if workers == 0 else None
    prepared = prepare_sweep(spec_path, overrides=overrides, runs_root=runs_root, join=join, seeds=seeds, name=name)
    try:
        if workers == 0:
            run_worker(prepared.target, spec.name, sweep_dir=prepared.sweep_dir, train_fn=fn)
        else:
            assert fn_path is not None
            _supervise(prepared, workers=workers, train_fn=fn_path, progress=progress)
    except BaseException:
        # Interrupted or failed: still leave an up-to-date trials.csv behind.
        with contextlib.suppress(Exception):
            write_trials_csv(trial_records(prepared.study), prepared.sweep_dir / TRIALS_CSV)
        raise
    return _summary(prepared)


def _sweep_folder(sweep: Path) -> Path:
    sweep = Path(sweep)
    if sweep.is_dir():
        return sweep
    if sweep.is_file():
        try:
            resolved = load_sweep_spec(sweep)
        except ConfigError as exc:
            raise SweepError(f"{sweep}: not a sweep folder, and not a valid sweep YAML: {exc}") from exc
        folder = sweep_dir_for(resolved)
        if folder.is_dir():
            return folder
        raise SweepError(f"sweep '{resolved.spec.name}' has no folder at {folder} yet (run it first)")
    raise SweepError(f"{sweep} is neither a sweep folder nor a sweep YAML")


def sweep_storage(sweep: Path) -> tuple[StorageTarget, BaseStorage]:
    """The storage of a sweep folder (from its ``sweep.yaml``), opened.

    Raises:
        SweepError: not a sweep folder, or its journal file is missing.
    """
    folder = _sweep_folder(sweep)
    spec_file = folder / SWEEP_YAML
    if not spec_file.is_file():
        raise SweepError(f"{folder} has no {SWEEP_YAML}: not a sweep folder")
    raw = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
    target = resolve_storage(raw.get("storage"), folder)
    if target.kind == "journal" and not target.journal_path.is_file():
        raise SweepError(f"sweep folder {folder} has no study journal at {target.journal_path}")
    return target, open_storage(target)


def open_dashboard(sweep: Path, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on the sweep's storage (journal or URL); blocks until interrupted.

    Args:
        sweep: the sweep folder (``runs/<name>``) or its YAML.
        host, port: where the dashboard listens (http://host:port).
    """
    from optuna_dashboard import run_server

    target, storage = sweep_storage(sweep)
    logger.info("optuna-dashboard on http://%s:%d for %s", host, port, target.display)
    run_server(storage, host=host, port=port)


def sync_sweep(sweep: Path) -> list[Path]:
    """Upload the sweep's offline W&B runs (``wandb sync``); see :func:`hcc_exp.tracking.sync_offline_runs`."""
    from hcc_exp.tracking import sync_offline_runs

    return sync_offline_runs(_sweep_folder(sweep))
