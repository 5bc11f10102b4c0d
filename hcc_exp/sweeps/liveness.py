"""Liveness of sweep workers: heartbeats, dead-worker recovery, re-queueing and dying with the parent.

A worker that dies mid-trial leaves a RUNNING trial behind. It is failed and
re-queued (same params and user attrs, new trial number; :class:`RetryCallback`,
Optuna's ``RetryHeartbeatStaleTrialCallback`` semantics) when

- its worker process is gone (same host: pid and process start time in the trial's
  ``worker`` user attr), or
- its heartbeat is older than ``grace_period``: Optuna's RDB heartbeat for
  PostgreSQL, a per-trial heartbeat file next to the journal for journal storage
  (Optuna 5's ``JournalStorage`` has no heartbeat).

A preempted trial (Slurm's pre-timeout signal) is re-queued at once with the path of
its checkpoint; preemptions do not count against ``max_retry``.

A worker process also dies with the process that started it (:func:`die_with_parent`):
a supervisor stopped by SIGKILL or SIGTERM leaves no worker training on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from hcc_exp.processes import set_parent_death_signal
from hcc_exp.sweeps.folder import journal_heartbeat_dir
from hcc_exp.sweeps.spec import SweepSpec

logger = logging.getLogger(__name__)

WORKER_ATTR = "worker"
"""Trial user attr: host, pid, process start token and trial number of the worker running it."""
PREEMPTIONS_ATTR = "preemptions"
RESUME_ATTR = "resume_from"
"""Trial user attr of a re-queued preempted trial: the checkpoint its retry resumes from."""
_NOT_INHERITED = ("failure", "error")


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    # Heartbeats, the retry callback and constant_liar are "experimental" in Optuna 5;
    # the warnings would repeat in every worker log for every trial.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


# --------------------------------------------------------------------------- processes
def process_token(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, Linux); None if unknown or gone.

    Together with the pid it identifies a process even after its pid is reused.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if not fields or fields[0] in {"Z", "X"}:  # zombie / dead: it will not beat again
        return None
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, token: str | None) -> bool:
    """Whether the process ``pid`` that had start time ``token`` still runs."""
    if Path("/proc").is_dir() and Path("/proc/self/stat").is_file():
        current = process_token(pid)
        return current is not None and (token is None or current == token)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_identity(number: int) -> dict[str, Any]:
    """The ``worker`` user attr of a trial this process runs."""
    pid = os.getpid()
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": pid, "token": process_token(pid), "trial": number}
    if os.environ.get("SLURM_JOB_ID"):
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        identity["slurm_job"] = f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]
    return identity


def die_with_parent(parent_pid: int | None, *, poll_s: float = 1.0) -> bool:
    """Make this process end when ``parent_pid`` (the supervisor) does.

    Two mechanisms, because either alone has a gap: Linux's ``PR_SET_PDEATHSIG``
    (:func:`hcc_exp.processes.set_parent_death_signal`) delivers SIGTERM when the parent thread exits (handled like Ctrl-C, so the running
    trial is re-queued); a daemon thread checks the parent's pid every ``poll_s``
    seconds (other systems, or a parent that died before the prctl call).

    Returns:
        Whether the parent-death signal was installed (Linux only).
    """
    if parent_pid is None or parent_pid <= 1:
        return False
    # SIGTERM, not hcc_exp.processes' SIGKILL: the worker must unwind to re-queue its trial.
    installed = set_parent_death_signal(signal.SIGTERM)
    parent_token = process_token(parent_pid)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid or not process_alive(parent_pid, parent_token):
                logger.warning("supervisor %d is gone; stopping this worker", parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
                os._exit(128 + signal.SIGTERM)  # the SIGTERM unwinding hung
            time.sleep(poll_s)

    if os.getppid() != parent_pid:  # already orphaned before we got here
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    return installed


# --------------------------------------------------------------------------- re-queueing
class RetryCallback:
    """Re-queue a failed trial as WAITING (params and user attrs kept), up to ``max_retry`` times.

    Optuna's ``RetryHeartbeatStaleTrialCallback`` with two differences: the copy does
    not inherit the dead attempt's ``failure`` / ``error``, and preemptions
    (``preempted=True``) are always re-queued and do not count as retries.
    ``system_attrs["failed_trial"]`` is the first attempt, ``retry_history`` every one.
    """

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(
        self, study: optuna.Study, trial: FrozenTrial, *, preempted: bool = False, **user_attrs: Any
    ) -> int | None:
        system_attrs: dict[str, Any] = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
        system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in _NOT_INHERITED}
        attrs.pop(RESUME_ATTR, None)
        preemptions = int(attrs.get(PREEMPTIONS_ATTR, 0)) + int(preempted)
        attrs[PREEMPTIONS_ATTR] = preemptions
        if not preempted and self.max_retry < len(system_attrs["retry_history"]) - preemptions:
            return None
        attrs.update(user_attrs)
        with quiet_experimental():
            study.add_trial(
                optuna.create_trial(
                    state=TrialState.WAITING,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs=attrs,
                    system_attrs=system_attrs,
                )
            )
        return len(study.get_trials(deepcopy=False)) - 1


def fail_and_requeue(
    study: optuna.Study,
    storage: BaseStorage,
    number: int,
    reason: str,
    max_retry: int,
    *,
    preempted: bool = False,
    resume_from: str | None = None,
) -> bool:
    """Fail RUNNING trial ``number`` with ``reason`` and re-queue it; False if it had already finished."""
    tid = trial_id(storage, study, number)
    try:
        storage.set_trial_user_attr(tid, "failure", reason)
        if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False  # another process recovered (or the worker finished) it first
    extra = {RESUME_ATTR: resume_from} if resume_from else {}
    RetryCallback(max_retry)(study, storage.get_trial(tid), preempted=preempted, **extra)
    return True


# --------------------------------------------------------------------------- dead workers
def heartbeat_file(heartbeat_dir: Path, number: int) -> Path:
    return heartbeat_dir / f"trial-{number}.json"


def _stale_reason(trial: FrozenTrial, heartbeat_dir: Path | None, grace_period: int, now: float) -> str | None:
    worker = trial.user_attrs.get(WORKER_ATTR)
    # A re-queued copy inherits the dead attempt's user attrs: they only count for this trial number.
    if isinstance(worker, dict) and worker.get("trial") == trial.number:
        if worker.get("host") == socket.gethostname() and worker.get("pid"):
            if not process_alive(int(worker["pid"]), worker.get("token")):
                return f"worker process {worker['pid']} on {worker['host']} is gone"
    if heartbeat_dir is None:
        return None  # Optuna's RDB heartbeat covers other machines (fail_stale_trials)
    beat = heartbeat_file(heartbeat_dir, trial.number)
    try:
        age = now - beat.stat().st_mtime
    except FileNotFoundError:
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        age = now - started
        if age > grace_period:
            return f"no heartbeat file for {age:.0f} s"
        return None
    if age > grace_period:
        return f"no heartbeat for {age:.0f} s (grace period {grace_period} s)"
    return None


def journal_heartbeats(target: Any) -> Path | None:
    """The heartbeat folder of a journal storage target; None for RDB storages."""
    return journal_heartbeat_dir(target.url) if target.kind == "journal" else None


def recover_stale_trials(study: optuna.Study, storage: BaseStorage, target: Any, spec: SweepSpec) -> list[int]:
    """Fail RUNNING trials whose worker is dead and re-queue them (up to ``max_retry`` times).

    Args:
        study: the sweep study.
        storage: the storage object the study was opened with.
        target: where it lives (:class:`~hcc_exp.sweeps.storage.StorageTarget`; journal
            heartbeat files sit next to the journal).
        spec: grace period and retry count.

    Returns:
        Numbers of the trials failed here.
    """
    now = time.time()
    beats = journal_heartbeats(target)
    failed: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(trial, beats, spec.grace_period, now)
        if reason is None:
            continue
        if not fail_and_requeue(study, storage, trial.number, f"worker died: {reason}", spec.max_retry):
            continue
        logger.warning("trial %d failed: worker died (%s); re-queued", trial.number, reason)
        failed.append(trial.number)
        if beats is not None:
            with contextlib.suppress(OSError):
                heartbeat_file(beats, trial.number).unlink(missing_ok=True)
    if target.kind == "rdb":
        with quiet_experimental():
            fail_stale_trials(study)
    return failed


class Heartbeat:
    """Beats for one running trial: Optuna's RDB heartbeat, or a touched file for journal storage."""

    def __init__(self, storage: BaseStorage, target: Any, trial_id: int, number: int, interval: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        beats = journal_heartbeats(target)
        self._file = heartbeat_file(beats, number) if beats is not None else None
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{number}", daemon=True)

    def _beat(self) -> None:
        if self._file is not None:
            self._file.touch()
        else:
            self._storage.record_heartbeat(self._trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception as exc:  # a lost beat is not fatal; the grace period covers several
                logger.warning("heartbeat failed: %s", exc)

    def __enter__(self) -> Heartbeat:
        if self._file is not None:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            self._file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}), encoding="utf-8")
        else:
            self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.unlink(missing_ok=True)
