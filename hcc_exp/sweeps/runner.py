"""Run a sweep: validate the YAML, prepare the study, supervise worker processes, write trials.csv.

The sweep folder's layout is :mod:`hcc_exp.sweeps.folder`; Slurm submission is
:mod:`hcc_exp.sweeps.slurm`, GPU placement :mod:`hcc_exp.sweeps.placement`.

The supervisor handles SIGTERM (``timeout``, a scheduler) like Ctrl-C: it stops its
workers, whose running trials are failed and re-queued, so a re-run retries them.
Workers also die with the supervisor when it is killed outright
(:func:`hcc_exp.sweeps.liveness.die_with_parent`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages import BaseStorage

from hcc_exp.errors import ConfigError, SweepError
from hcc_exp.processes import sigterm_unwinds
from hcc_exp.sweeps.folder import SweepFolder, journal_enqueue_lock
from hcc_exp.sweeps.liveness import recover_stale_trials
from hcc_exp.sweeps.optuna_backend import (
    TrainFn,
    create_or_load_study,
    enqueue_missing,
    import_train_fn,
    load_study,
    make_pruner,
    run_worker,
    train_fn_path,
)
from hcc_exp.sweeps.placement import DevicePool, visible_gpus
from hcc_exp.sweeps.slurm_jobs import job_states
from hcc_exp.sweeps.spec import ResolvedSweep, load_sweep_spec
from hcc_exp.sweeps.status import (
    SweepStatusReport,
    SweepSummary,
    cell_states,
    sweep_status,
    trial_records,
    write_trials_csv,
)
from hcc_exp.sweeps.storage import StorageTarget, open_storage, resolve_storage
from hcc_exp.sweeps.worker import PARENT_ENV, STORAGE_ENV

logger = logging.getLogger(__name__)

POLL_S = 0.5
__all__ = ["SweepSummary", "prepare_sweep", "run_sweep", "worker_command"]


# --------------------------------------------------------------------------- preparation
@dataclass
class PreparedSweep:
    """A sweep whose study exists, whose folder is written and whose grid cells are queued."""

    resolved: ResolvedSweep
    folder: SweepFolder
    target: StorageTarget
    study: optuna.Study
    storage: BaseStorage
    enqueued: list[tuple[str, int]]

    @property
    def sweep_dir(self) -> Path:
        return self.folder.root


def sweep_dir_for(resolved: ResolvedSweep, runs_root: Path | None = None) -> Path:
    """``<runs root>/<sweep name>``; the runs root defaults to the base config's ``tracking.runs_dir``."""
    return SweepFolder.for_sweep(resolved, runs_root).root


def resolve_join(join: str, sweep_dir: Path) -> StorageTarget:
    """The storage of ``--join``: a database URL or an existing journal file, checked before anything is written.

    Raises:
        SweepError: an unsupported URL, or a path that is not an existing journal file.
    """
    target = resolve_storage(join, sweep_dir)
    if target.kind == "journal" and not target.journal_path.is_file():
        raise SweepError(
            f"--join {join!r}: not a storage URL (postgresql://user:pass@host/db) and no journal file "
            f"exists at {target.journal_path}; nothing was written"
        )
    return target


def prepare_sweep(
    spec_path: Path | str,
    *,
    overrides: dict[str, Any] | None = None,
    runs_root: Path | None = None,
    join: str | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
    resolved: ResolvedSweep | None = None,
) -> PreparedSweep:
    """Validate the YAML, open or create the study, re-queue dead trials and enqueue missing cells.

    Nothing is created when the YAML (or the ``join`` storage) is invalid.

    Args:
        spec_path: the sweep YAML.
        overrides: dotted config keys applied to every trial (``--set``).
        runs_root: parent of the sweep folder (default ``tracking.runs_dir``).
        join: storage URL (or journal path) of a study started elsewhere; the study's
            own spec is then used and nothing is enqueued.
        seeds, name: replace the spec's seeds / name (``--seeds``, ``--name``).
        resolved: the already loaded spec (skips reading ``spec_path`` again).

    Raises:
        ConfigError: invalid YAML, unknown keys, wrong types.
        SweepError: storage problems, a same-named study with another spec, a missing study to join.
    """
    if resolved is None:
        resolved = load_sweep_spec(spec_path, overrides, seeds=seeds, name=name)
    spec = resolved.spec
    if spec.backend != "optuna":
        raise SweepError(f"sweep '{spec.name}' uses backend: {spec.backend}; only Optuna sweeps have a study")
    make_pruner(spec, resolved.config_for({}, None).trainer.max_epochs)  # bad pruner options: refuse before writing
    folder = SweepFolder.for_sweep(resolved, runs_root)
    if join is not None:
        target = resolve_join(join, folder.root)
        study, storage, stored = load_study(target, spec.name)
        if stored.fingerprint() != resolved.fingerprint():
            logger.warning(
                "joining study '%s': the local %s differs from the study's spec; running the study's trials",
                spec.name,
                spec_path,
            )
        resolved = stored
        folder.write_resolved(resolved)
        recover_stale_trials(study, storage, target, resolved.spec)
        return PreparedSweep(resolved, folder, target, study, storage, [])
    target = resolve_storage(spec.storage, folder.root)
    storage = open_storage(
        target, heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_period, max_retry=spec.max_retry
    )
    with _enqueue_lock(target):
        study = create_or_load_study(resolved, storage)
        folder.write_resolved(resolved)
        recover_stale_trials(study, storage, target, spec)
        enqueued = enqueue_missing(study, resolved)
    return PreparedSweep(resolved, folder, target, study, storage, enqueued)


@contextlib.contextmanager
def _enqueue_lock(target: StorageTarget) -> Iterator[None]:
    """Serialise "look at the queue, then enqueue" between two sweeps started at once on one journal.

    (PostgreSQL studies are started once and joined with ``--join``, which never enqueues.)
    """
    if target.kind != "journal":
        yield
        return
    with open(journal_enqueue_lock(target.url), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- workers
def worker_command(
    prepared: PreparedSweep, train_fn: str, worker_index: int, *, workers: int = 1, device: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one worker process (the storage travels in the environment).

    ``device``: the worker's ``CUDA_VISIBLE_DEVICES`` (one GPU id), None to leave it as it is.
    The worker dies with this process (``$HCC_EXP_SWEEP_PARENT``).
    """
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
    env[PARENT_ENV] = str(os.getpid())
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join([cwd, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    # Share the CPUs between workers unless the user chose a thread count.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))
    return argv, env


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    log: IO[bytes]
    log_path: Path
    device: str | None = None


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


def _progress_bar(progress: bool) -> Any:
    if not progress:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )  # fmt: skip


def _supervise(
    prepared: PreparedSweep, *, workers: int, train_fn: str, progress: bool, devices: DevicePool | None = None
) -> None:
    """Keep up to ``workers`` worker processes busy until no trial is waiting or running."""
    folder = prepared.folder
    folder.logs_dir.mkdir(parents=True, exist_ok=True)
    spec = prepared.resolved.spec
    alive: list[_Worker] = []
    crashes: list[str] = []
    max_crashes = 2 * workers + 2
    next_index = 0
    progress_bar = _progress_bar(progress)
    task = None
    with sigterm_unwinds(), progress_bar if progress_bar is not None else contextlib.nullcontext():
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
                        f"logs in {folder.logs_dir}. Last:\n{crashes[-1]}"
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
                    device = devices.acquire([w.device for w in alive]) if devices is not None else None
                    argv, env = worker_command(prepared, train_fn, next_index, workers=workers, device=device)
                    log_path = folder.worker_log(next_index)
                    handle = log_path.open("ab")
                    process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
                    alive.append(_Worker(next_index, process, handle, log_path, device))
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
    csv_path = write_trials_csv(records, prepared.folder)
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
    trials_per_gpu: int = 1,
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
        trials_per_gpu: on a machine with GPUs, workers per GPU (each worker sees one GPU).

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
    devices = DevicePool.for_workers(visible_gpus(), workers, trials_per_gpu) if workers > 0 else None
    prepared = prepare_sweep(spec_path, runs_root=runs_root, join=join, resolved=resolved)
    try:
        if workers == 0:
            with sigterm_unwinds():  # the trial running in this process is re-queued on SIGTERM
                run_worker(prepared.target, spec.name, sweep_dir=prepared.sweep_dir, train_fn=fn)
        else:
            assert fn_path is not None
            _supervise(prepared, workers=workers, train_fn=fn_path, progress=progress, devices=devices)
    except BaseException:
        # Interrupted or failed: still leave an up-to-date trials.csv behind.
        with contextlib.suppress(Exception):
            write_trials_csv(trial_records(prepared.study), prepared.folder)
        raise
    return _summary(prepared)


def sweep_launcher(spec_path: Path | str, launcher: str | None) -> str:
    """``local`` or ``slurm``: the ``--launcher`` option, else the YAML's ``launcher.type``.

    Raises:
        SweepError: an unknown launcher name.
        ConfigError: the YAML is invalid (when it has to be read).
    """
    if launcher is None:
        return load_sweep_spec(spec_path).spec.launcher.type
    if launcher not in {"local", "slurm"}:
        raise SweepError(f"--launcher {launcher!r}: expected local or slurm")
    return launcher


def find_sweep_folder(sweep: Path) -> SweepFolder:
    """The sweep folder of ``sweep``: the folder itself, or the folder of a sweep YAML.

    Raises:
        SweepError: neither a folder nor a valid sweep YAML, or the sweep has not run yet.
    """
    sweep = Path(sweep)
    if sweep.is_dir():
        return SweepFolder(sweep)
    if sweep.is_file():
        try:
            resolved = load_sweep_spec(sweep)
        except ConfigError as exc:
            raise SweepError(f"{sweep}: not a sweep folder, and not a valid sweep YAML: {exc}") from exc
        folder = SweepFolder.for_sweep(resolved)
        if folder.root.is_dir():
            return folder
        raise SweepError(f"sweep '{resolved.spec.name}' has no folder at {folder.root} yet (run it first)")
    raise SweepError(f"{sweep} is neither a sweep folder nor a sweep YAML")


def sweep_storage(sweep: Path) -> tuple[StorageTarget, BaseStorage]:
    """The storage of a sweep folder (from its ``sweep.yaml``), opened.

    Raises:
        SweepError: not a sweep folder, or its journal file is missing.
    """
    folder = find_sweep_folder(sweep)
    spec = folder.read_spec()
    target = resolve_storage(spec.storage, folder.root)
    if target.kind == "journal" and not target.journal_path.is_file():
        raise SweepError(f"sweep folder {folder.root} has no study journal at {target.journal_path}")
    return target, open_storage(target)


def sweep_status_report(sweep: Path) -> SweepStatusReport:
    """Per arm and seed: state, where it runs, retries, value, duration; Slurm task states if launched there.

    Raises:
        SweepError: not a sweep folder, its storage is missing, or the study is not there.
    """
    folder = find_sweep_folder(sweep)
    target, storage = sweep_storage(folder.root)
    name = folder.read_spec().name
    study, _, resolved = load_study(target, name)
    launches = folder.read_launches()
    states: dict[str, str] = {}
    if launches:
        states = job_states([str(launch["job_id"]) for launch in launches if launch.get("job_id")])
    return SweepStatusReport(name, folder.root, target.display, cell_states(study, resolved, states), launches, states)


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

    return sync_offline_runs(find_sweep_folder(sweep).root)
