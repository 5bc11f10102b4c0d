"""Sweeps on Slurm: N array tasks through submitit, each one worker on the sweep's shared study.

``hcc-exp sweep FILE --launcher slurm --array N`` prepares the study (as a local sweep
does: folder, study, grid cells queued), submits one Slurm job array of N tasks and
returns. Each task runs :func:`hcc_exp.sweeps.optuna_backend.run_worker` until the
sweep is finished, waiting while other tasks still run trials (a trial whose task
died is re-queued by the heartbeat and run by a surviving task).

Storage: PostgreSQL (the default for clusters: Optuna's RDB heartbeat works across
nodes); a journal file only with a warning (every node must see the same file on a
shared file system, and NFS-style locking is slow); SQLite is refused.

Preemption and time limits: sbatch gets ``--signal=USR1@<signal_delay_s>``; submitit
calls :meth:`SweepTask.checkpoint` on that signal, which checkpoints and re-queues the
running trial (:mod:`hcc_exp.sweeps.preemption`), then submitit requeues the task.
The requeued task (or any other) resumes the trial from its checkpoint.

The sweep folder records every submission in ``launch.json`` (job id, array size,
settings, each task's log path); submitit's own files go to ``slurm/``. Job states for
``hcc-exp sweep-status`` come from :mod:`hcc_exp.sweeps.slurm_jobs`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hcc_exp.errors import ConfigError, SweepError
from hcc_exp.sweeps import preemption
from hcc_exp.sweeps.folder import SweepFolder
from hcc_exp.sweeps.launcher import LauncherSpec
from hcc_exp.sweeps.optuna_backend import run_worker
from hcc_exp.sweeps.runner import prepare_sweep
from hcc_exp.sweeps.spec import load_sweep_spec
from hcc_exp.sweeps.storage import StorageTarget, is_network_filesystem, resolve_storage
from hcc_exp.sweeps.train_fn import train_fn_path
from hcc_exp.sweeps.worker import STORAGE_ENV

PREEMPT_SIGNAL = "USR1"
PREEMPT_ENV = "SUBMITIT_PREEMPT_SIGNAL"
# submitit reads the signal name when it is imported, in this process and in the job.
os.environ.setdefault(PREEMPT_ENV, PREEMPT_SIGNAL)

import submitit  # noqa: E402
from submitit.helpers import Checkpointable  # noqa: E402

logger = logging.getLogger(__name__)


class SweepTask(Checkpointable):
    """What one Slurm array task runs: a worker on the study until the sweep is finished.

    Only paths and names are pickled into the submission; the storage URL (it may hold a
    password) travels in the job's environment (``$HCC_EXP_SWEEP_STORAGE``).
    """

    def __init__(self, sweep_dir: str, study: str, train_fn: str) -> None:
        self.sweep_dir = sweep_dir
        self.study = study
        self.train_fn = train_fn

    def __call__(self, task_index: int) -> int:
        logging.basicConfig(
            level=logging.INFO,
            format=f"%(asctime)s task-{task_index}[%(process)d] %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
            force=True,
        )
        attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        target = resolve_storage(os.environ.get(STORAGE_ENV) or None, Path(self.sweep_dir))
        ran = run_worker(
            target, self.study, sweep_dir=Path(self.sweep_dir), train_fn=self.train_fn,
            worker_index=task_index, wait_for_running=True, attempt=attempt, resumable=True,
        )  # fmt: skip
        logger.info("sweep %s finished for this task; ran %d trial(s) (attempt %d)", self.study, ran, attempt)
        return ran

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """On the preemption / pre-timeout signal: checkpoint and re-queue the running trial, then requeue."""
        preemption.checkpoint_running_trial(reason=f"preempted (Slurm signal {PREEMPT_SIGNAL})")
        return super().checkpoint(*args, **kwargs)


@dataclass(frozen=True)
class SlurmLaunch:
    """One submission: its array job and where each task logs."""

    job_id: str
    array: int
    tasks: list[str]
    folder: SweepFolder
    task_logs: list[Path]
    storage: str

    def follow_hint(self) -> str:
        return (
            f"submitted Slurm array job {self.job_id} ({self.array} task(s)); study storage {self.storage}\n"
            f"  follow:  hcc-exp sweep-status {self.folder.root}\n"
            f"  jobs:    squeue -j {self.job_id}\n"
            f"  logs:    {self.task_logs[0]} ..."
        )


def check_cluster_storage(target: StorageTarget) -> str | None:
    """Refuse storages Slurm workers on several nodes cannot share; a warning text for a journal.

    Raises:
        SweepError: SQLite (one file, locked per node), or another non-PostgreSQL database.
    """
    if target.kind == "rdb":
        if target.url.startswith("sqlite"):
            raise SweepError(
                f"storage {target.display}: SQLite cannot be shared by Slurm tasks on several nodes; use a "
                "PostgreSQL URL (storage: postgresql://user:${PGPASSWORD}@host/db), see README 'Running on a cluster'"
            )
        if not target.url.startswith("postgresql"):
            raise SweepError(f"storage {target.display}: Slurm sweeps need PostgreSQL")
        return None
    fstype = is_network_filesystem(target.journal_path)
    where = f"a {fstype} file system" if fstype else "a local disk of this machine"
    return (
        f"journal storage {target.journal_path} on Slurm: every task must see this file, which is on {where}; "
        "a journal on a shared file system works but locks slowly and has no database heartbeat. "
        "PostgreSQL is the supported storage for clusters (storage: postgresql://...)."
    )


def submit_sweep(prepared: Any, launcher: LauncherSpec, train_fn: str) -> SlurmLaunch:
    """Submit ``launcher.array`` array tasks on the prepared sweep; returns at once.

    Args:
        prepared: a :class:`hcc_exp.sweeps.runner.PreparedSweep` (study created, cells queued).
        launcher: the Slurm settings (YAML ``launcher:`` merged with the command line).
        train_fn: ``module:function`` the tasks import.

    Raises:
        SweepError: no ``sbatch`` here, an unusable storage, or sbatch refused the job.
    """
    if shutil.which("sbatch") is None:
        raise SweepError("--launcher slurm: sbatch is not on PATH (run this on a Slurm login node)")
    warning = check_cluster_storage(prepared.target)
    if warning:
        logger.warning("%s", warning)
    folder: SweepFolder = prepared.folder
    folder.slurm_dir.mkdir(parents=True, exist_ok=True)
    os.environ[STORAGE_ENV] = prepared.target.url  # exported to the job by sbatch, never written to disk
    cwd = os.getcwd()
    os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *filter(None, [os.environ.get("PYTHONPATH")])])
    submitit.slurm.slurm.SlurmJobEnvironment.USR_SIG = PREEMPT_SIGNAL  # even if submitit was imported earlier
    executor = submitit.SlurmExecutor(folder=folder.slurm_dir / "%j", max_num_timeout=launcher.max_requeue)
    parameters: dict[str, Any] = {
        "job_name": f"hcc-sweep-{prepared.resolved.spec.name}",
        "time": launcher.time_min,
        "signal_delay_s": launcher.signal_delay_s,
        "array_parallelism": launcher.array,
        "setup": [f"export {PREEMPT_ENV}={PREEMPT_SIGNAL}", *launcher.setup],
        "additional_parameters": {"requeue": True, **launcher.slurm_set},
    }
    for key in ("partition", "gpus_per_task", "cpus_per_task", "mem"):
        value = getattr(launcher, key)
        if value is not None:
            parameters[key] = value
    executor.update_parameters(**parameters)
    task = SweepTask(str(folder.root.resolve()), prepared.resolved.spec.name, train_fn)
    try:
        jobs = executor.map_array(task, list(range(launcher.array)))
    except Exception as exc:  # submitit raises subprocess / its own errors with sbatch's message
        raise SweepError(f"sbatch refused the sweep's job array: {exc}") from exc
    job_id = jobs[0].job_id.split("_")[0]  # submitit submits a single task as a plain job, not an array
    logs = [Path(job.paths.stderr) for job in jobs]
    folder.write_launch(
        {
            "job_id": job_id,
            "tasks": [job.job_id for job in jobs],
            "array": launcher.array,
            "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": launcher.model_dump(mode="json"),
            "storage": prepared.target.display,
            "train_fn": train_fn,
            "task_logs": [str(p) for p in logs],
            "task_stdout": [str(job.paths.stdout) for job in jobs],
        }
    )
    return SlurmLaunch(job_id, launcher.array, [job.job_id for job in jobs], folder, logs, prepared.target.display)


def launch_sweep(
    spec_path: Path | str,
    *,
    settings: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    train_fn: str | None = None,
    runs_root: Path | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
) -> SlurmLaunch:
    """Prepare the sweep and submit it to Slurm (``hcc-exp sweep FILE --launcher slurm``).

    Args:
        spec_path: the sweep YAML; its ``launcher:`` section gives the defaults.
        settings: command-line launcher settings (``array``, ``partition``, ...); they win.
        overrides, train_fn, runs_root, seeds, name: as for :func:`hcc_exp.sweeps.runner.run_sweep`.

    Raises:
        ConfigError: invalid YAML or launcher settings (nothing written).
        SweepError: storage refused for Slurm, no sbatch, or the submission failed.
    """
    resolved = load_sweep_spec(spec_path, overrides, seeds=seeds, name=name)
    merged = {**resolved.spec.launcher.model_dump(), **{k: v for k, v in (settings or {}).items() if v is not None}}
    try:
        launcher = LauncherSpec.model_validate({**merged, "type": "slurm"})
    except ValidationError as exc:
        raise ConfigError(f"{spec_path}: launcher settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    if resolved.spec.backend != "optuna":
        raise SweepError("--launcher slurm runs Optuna sweeps (W&B sweeps run `wandb agent` in your own jobs)")
    fn_path = train_fn_path(train_fn)
    check_cluster_storage(resolve_storage(resolved.spec.storage, SweepFolder.for_sweep(resolved, runs_root).root))
    if shutil.which("sbatch") is None:
        raise SweepError("--launcher slurm: sbatch is not on PATH (run this on a Slurm login node)")
    prepared = prepare_sweep(spec_path, runs_root=runs_root, resolved=resolved)
    return submit_sweep(prepared, launcher, fn_path)
