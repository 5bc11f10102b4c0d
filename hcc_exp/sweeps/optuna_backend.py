"""Optuna backend: the study, its trial queue, dead-worker recovery and the worker loop.

A grid (ablation) enqueues every arm x seed once as a WAITING trial; workers claim
WAITING trials atomically (``set_trial_state_values(RUNNING)`` succeeds for one
process only) and never sample new ones, so each cell runs once. Random / bayes
searches ask Optuna's sampler for new trials until ``trials`` is reached.

A worker that dies mid-trial leaves a RUNNING trial behind. It is failed and
re-queued (Optuna's ``RetryHeartbeatStaleTrialCallback``: same params and user attrs,
new trial number) when

- its worker process is gone (same host: pid and process start time in the trial's
  ``worker`` user attr), or
- its heartbeat is older than ``grace_period``: Optuna's RDB heartbeat for
  PostgreSQL, a per-trial heartbeat file next to the journal for journal storage
  (Optuna 5's ``JournalStorage`` has no heartbeat).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import inspect
import json
import logging
import math
import os
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from hcc_exp.errors import ConfigError, SweepError
from hcc_exp.sweeps.spec import SEARCH_ARM, ParameterSpec, ResolvedSweep, SweepSpec
from hcc_exp.sweeps.storage import StorageTarget, open_storage, retry_callback
from hcc_exp.tracking import make_tracker, provenance_tags, safe_name

logger = logging.getLogger(__name__)

SWEEP_ATTR = "hcc_exp_sweep"
"""Study user attr holding the resolved sweep (spec, base config, fingerprint)."""
WORKER_ATTR = "worker"
RUNS_DIR = "runs"
TRIALS_CSV = "trials.csv"
DEFAULT_TRAIN_FN = "hcc_exp.training.train:train"

TrainFn = Callable[..., Any]


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    # Heartbeats, the retry callback and constant_liar are "experimental" in Optuna 5;
    # the warnings would repeat in every worker log for every trial.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def import_train_fn(spec: str | TrainFn | None) -> TrainFn:
    """Resolve ``"module:function"`` (or a callable, or None for the real ``train``).

    Raises:
        SweepError: the module or function cannot be imported.
    """
    if spec is None:
        spec = DEFAULT_TRAIN_FN
    if callable(spec):
        return spec
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise SweepError(f"train_fn {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as exc:
        raise SweepError(f"train_fn {spec!r} cannot be imported: {exc}") from exc
    if not callable(fn):
        raise SweepError(f"train_fn {spec!r} is not callable")
    return fn


def train_fn_path(fn: str | TrainFn | None) -> str:
    """Dotted ``module:function`` path of ``fn`` that a worker process can import.

    Raises:
        SweepError: ``fn`` is a lambda, a local function or otherwise not importable by path.
    """
    if fn is None:
        return DEFAULT_TRAIN_FN
    if isinstance(fn, str):
        import_train_fn(fn)  # fail here, not in every worker
        return fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in qualname or module == "__main__":
        raise SweepError(
            f"train_fn {fn!r} cannot be imported by worker processes; pass a 'module:function' string "
            "of a module on the import path (or workers=0 to run in this process)"
        )
    path = f"{module}:{qualname}"
    if import_train_fn(path) is not fn:
        raise SweepError(f"train_fn {fn!r} is not reachable as {path}")
    return path


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


def _accepts(fn: TrainFn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- samplers / pruners
def study_direction(spec: SweepSpec) -> str:
    return spec.metric.goal


def make_sampler(spec: SweepSpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """TPE for bayes, random for random; a grid's trials are all enqueued (random never samples)."""
    seed = None if spec.sampler_seed is None else spec.sampler_seed + worker_index
    with _quiet_experimental():
        if spec.method == "bayes":
            # constant_liar: parallel workers do not all sample next to the same running trial.
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: SweepSpec, max_epochs: int) -> optuna.pruners.BasePruner:
    """The spec's pruner (``NopPruner`` for grids and ``pruner: none``).

    Raises:
        ConfigError: an option of ``pruner`` is not an argument of the Optuna pruner.
    """
    options = spec.pruner.options()
    try:
        if spec.pruner.type == "median":
            return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 2, **options})
        if spec.pruner.type == "hyperband":
            return optuna.pruners.HyperbandPruner(
                **{"min_resource": 1, "max_resource": max_epochs, "reduction_factor": 3, **options}
            )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sweep '{spec.name}': pruner {spec.pruner.type} options {options}: {exc}") from exc
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, key: str, param: ParameterSpec) -> Any:
    """Sample one parameter with the Optuna call matching its W&B distribution."""
    kind = param.kind
    if kind in {"constant", "categorical"}:
        values = param.grid_values()
        if all(v is None or isinstance(v, bool | int | float | str) for v in values):
            return trial.suggest_categorical(key, values)
        # Optuna choices must be scalars; lists (e.g. phases) travel as JSON text.
        chosen = trial.suggest_categorical(key, [json.dumps(v) for v in values])
        return json.loads(chosen)
    if kind == "int_uniform":
        return trial.suggest_int(key, int(param.min), int(param.max))
    if kind == "uniform":
        return trial.suggest_float(key, float(param.min), float(param.max))
    if kind == "q_uniform":
        return trial.suggest_float(key, float(param.min), float(param.max), step=float(param.q))
    if kind == "log_uniform_values":
        return trial.suggest_float(key, float(param.min), float(param.max), log=True)
    raise SweepError(f"parameter '{key}': distribution {kind} is not supported by the optuna backend")


# --------------------------------------------------------------------------- study
def _describe_difference(stored: dict[str, Any], resolved: ResolvedSweep) -> str:
    new = resolved.to_record()
    changed = [k for k in new["spec"] if k in stored.get("spec", {}) and stored["spec"][k] != new["spec"][k]]
    relevant = [k for k in changed if k in resolved.spec.fingerprint_payload()]
    if stored.get("base_config") != resolved.base_config:
        relevant.append("base config")
    return ", ".join(relevant) or "unknown fields"


def create_or_load_study(resolved: ResolvedSweep, storage: BaseStorage, *, worker_index: int = 0) -> optuna.Study:
    """Create the sweep's study (or load it) and record the resolved sweep in it.

    Raises:
        SweepError: a study of this name exists with a different spec (other arms,
            parameters, seeds, overrides or base config).
    """
    spec = resolved.spec
    with _quiet_experimental():
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction=study_direction(spec),
            sampler=make_sampler(spec, worker_index),
            pruner=make_pruner(spec, resolved.config_for({}, None).trainer.max_epochs),
            load_if_exists=True,
        )
    stored = study.user_attrs.get(SWEEP_ATTR)
    record = resolved.to_record()
    if stored is None:
        study.set_user_attr(SWEEP_ATTR, record)
    elif stored.get("fingerprint") != record["fingerprint"]:
        raise SweepError(
            f"a study named '{spec.name}' already exists in this storage with a different spec "
            f"(changed: {_describe_difference(stored, resolved)}). Rename the sweep (name:) to start a new "
            "study, or restore the original settings to resume it."
        )
    elif stored != record:
        study.set_user_attr(SWEEP_ATTR, record)  # e.g. a search extended with more trials
    return study


def load_study(
    target: StorageTarget, study_name: str, *, worker_index: int = 0
) -> tuple[optuna.Study, BaseStorage, ResolvedSweep]:
    """Open an existing sweep study (a worker, or ``--join`` from another machine).

    Raises:
        SweepError: no such study, or it was not created by hcc-exp.
    """
    storage = open_storage(target)
    try:
        summaries = optuna.get_all_study_names(storage)
    except Exception as exc:  # storage errors from SQLAlchemy or the journal
        raise SweepError(f"cannot read studies from {target.display}: {exc}") from exc
    if study_name not in summaries:
        raise SweepError(
            f"no study named '{study_name}' in {target.display} (studies there: {sorted(summaries) or 'none'}); "
            "start the sweep first with `hcc-exp sweep SPEC`"
        )
    probe = optuna.load_study(study_name=study_name, storage=storage)
    record = probe.user_attrs.get(SWEEP_ATTR)
    if record is None:
        raise SweepError(f"study '{study_name}' in {target.display} was not created by hcc-exp sweep")
    resolved = ResolvedSweep.from_record(record)
    spec = resolved.spec
    if target.kind == "rdb":  # reopen with this sweep's heartbeat settings
        storage = open_storage(
            target, heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_period, max_retry=spec.max_retry
        )
    with _quiet_experimental():
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(spec, worker_index),
            pruner=make_pruner(spec, resolved.config_for({}, None).trainer.max_epochs),
        )
    return study, storage, resolved


def _trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def enqueue_missing(study: optuna.Study, resolved: ResolvedSweep) -> list[tuple[str, int]]:
    """Enqueue every arm x seed that has no WAITING, RUNNING or COMPLETE trial yet.

    Failed trials (an exception, or a dead worker past its retries) do not count,
    so re-running a sweep retries them. Returns the (arm, seed) cells enqueued.
    """
    present = {
        (t.user_attrs.get("arm"), t.user_attrs.get("seed"))
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE))
    }
    added = []
    for cell in resolved.cells():
        if cell.key in present:
            continue
        study.enqueue_trial(
            params={"arm": cell.arm, "seed": cell.seed},
            user_attrs={"arm": cell.arm, "seed": cell.seed},
            skip_if_exists=False,
        )
        present.add(cell.key)
        added.append(cell.key)
    return added


# --------------------------------------------------------------------------- dead workers
def _heartbeat_file(target: StorageTarget, number: int) -> Path:
    return target.heartbeat_dir / f"trial-{number}.json"


def _stale_reason(trial: FrozenTrial, target: StorageTarget, grace_period: int, now: float) -> str | None:
    worker = trial.user_attrs.get(WORKER_ATTR)
    # A re-queued copy inherits the dead attempt's user attrs: they only count for this trial number.
    if isinstance(worker, dict) and worker.get("trial") == trial.number:
        if worker.get("host") == socket.gethostname() and worker.get("pid"):
            if not process_alive(int(worker["pid"]), worker.get("token")):
                return f"worker process {worker['pid']} on {worker['host']} is gone"
    if target.kind != "journal":
        return None  # Optuna's RDB heartbeat covers other machines (fail_stale_trials)
    beat = _heartbeat_file(target, trial.number)
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


def recover_stale_trials(
    study: optuna.Study, storage: BaseStorage, target: StorageTarget, spec: SweepSpec
) -> list[int]:
    """Fail the RUNNING trials whose worker died, and re-queue them (up to ``max_retry`` times).

    Args:
        study: the sweep study.
        storage: the storage object the study was opened with.
        target: where it lives (journal heartbeat files sit next to the journal).
        spec: grace period and retry count.

    Returns:
        Numbers of the trials failed here.
    """
    now = time.time()
    callback = retry_callback(spec.max_retry)
    failed: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(trial, target, spec.grace_period, now)
        if reason is None:
            continue
        trial_id = _trial_id(storage, study, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "failure", f"worker died: {reason}")
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another process recovered (or the worker finished) it first
        logger.warning("trial %d failed: worker died (%s); re-queued", trial.number, reason)
        with _quiet_experimental():
            callback(study, storage.get_trial(trial_id))
        failed.append(trial.number)
        with contextlib.suppress(OSError):
            _heartbeat_file(target, trial.number).unlink(missing_ok=True)
    if target.kind == "rdb":
        with _quiet_experimental():
            fail_stale_trials(study)
    return failed


class _Heartbeat:
    """Beats for one running trial: Optuna's RDB heartbeat, or a touched file for journal storage."""

    def __init__(self, storage: BaseStorage, target: StorageTarget, trial_id: int, number: int, interval: int) -> None:
        self._storage = storage
        self._target = target
        self._trial_id = trial_id
        self._file = _heartbeat_file(target, number) if target.kind == "journal" else None
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

    def __enter__(self) -> _Heartbeat:
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


# --------------------------------------------------------------------------- status
@dataclass
class TrialRecord:
    """One row of ``trials.csv``."""

    number: int
    arm: str | None
    seed: int | None
    state: str
    value: float | None
    run_dir: str | None
    duration_s: float | None
    params: dict[str, Any] = field(default_factory=dict)
    retry_of: int | None = None
    error: str | None = None


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    records = []
    for t in study.get_trials(deepcopy=False):
        duration = None
        if t.datetime_start and t.datetime_complete:
            duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        records.append(
            TrialRecord(
                number=t.number,
                arm=t.user_attrs.get("arm"),
                seed=t.user_attrs.get("seed"),
                state=t.state.name,
                value=t.value if t.state == TrialState.COMPLETE else None,
                run_dir=t.user_attrs.get("run_dir"),
                duration_s=duration,
                params={k: v for k, v in t.params.items() if k not in {"arm", "seed"}},
                retry_of=t.system_attrs.get("failed_trial"),
                error=t.user_attrs.get("error") or t.user_attrs.get("failure"),
            )
        )
    return records


def write_trials_csv(records: list[TrialRecord], path: Path) -> Path:
    """``number, arm, seed, state, value, run_dir, duration_s, retry_of, error, params.<key>...``."""
    param_keys = sorted({k for r in records for k in r.params})
    columns = ["number", "arm", "seed", "state", "value", "run_dir", "duration_s", "retry_of", "error"]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns + [f"params.{k}" for k in param_keys])
        for r in records:
            writer.writerow(
                [r.number, r.arm, r.seed, r.state, r.value, r.run_dir, r.duration_s, r.retry_of, r.error]
                + [r.params.get(k) for k in param_keys]
            )
    tmp.replace(path)
    return path


@dataclass
class SweepStatus:
    """Counts that decide whether work remains.

    Attributes:
        expected: grid cells, or the trial budget of a search.
        done: cells with a COMPLETE trial (grid), or finished trials not being retried (search).
        waiting, running: trials in those states.
        budget_left: search trials still to be created.
    """

    expected: int
    done: int
    waiting: int
    running: int
    budget_left: int

    @property
    def work_left(self) -> bool:
        return self.waiting > 0 or self.budget_left > 0

    @property
    def finished(self) -> bool:
        return not self.work_left and self.running == 0


def sweep_status(study: optuna.Study, resolved: ResolvedSweep) -> SweepStatus:
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if resolved.spec.method == "grid":
        cells = {c.key for c in resolved.cells()}
        complete = {
            (t.user_attrs.get("arm"), t.user_attrs.get("seed")) for t in trials if t.state == TrialState.COMPLETE
        }
        return SweepStatus(len(cells), len(cells & complete), waiting, running, 0)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    originals = [t for t in trials if "failed_trial" not in t.system_attrs]
    done = sum(t.state.is_finished() and t.number not in retried for t in trials)
    budget = resolved.spec.trials or 0
    return SweepStatus(budget, done, waiting, running, max(0, budget - len(originals)))


# --------------------------------------------------------------------------- worker
@dataclass
class WorkerContext:
    """Everything one worker needs to run trials of a sweep."""

    study: optuna.Study
    storage: BaseStorage
    resolved: ResolvedSweep
    target: StorageTarget
    sweep_dir: Path
    train_fn: TrainFn
    provenance: list[str] = field(default_factory=list)


def _claim_waiting(study: optuna.Study, storage: BaseStorage) -> optuna.Trial | None:
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = _trial_id(storage, study, frozen.number)
        try:
            # Succeeds for exactly one process per trial (journal replay / SQL row update).
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def claim_next_trial(ctx: WorkerContext) -> optuna.Trial | None:
    """The next trial to run, or None when this worker has nothing to do."""
    if ctx.resolved.spec.method == "grid":
        return _claim_waiting(ctx.study, ctx.storage)
    status = sweep_status(ctx.study, ctx.resolved)
    if not status.work_left:
        return None
    with _quiet_experimental():
        return ctx.study.ask()  # pops a re-queued trial first, else samples a new one


def _trial_setup(ctx: WorkerContext, trial: optuna.Trial) -> tuple[str, int, dict[str, Any]]:
    resolved = ctx.resolved
    if resolved.spec.method == "grid":
        cells = resolved.cells()
        arm = trial.user_attrs.get("arm")
        seed = trial.user_attrs.get("seed")
        by_arm = {c.arm: c.settings for c in cells}
        if arm not in by_arm or seed not in resolved.seeds:
            raise SweepError(f"trial {trial.number}: arm {arm!r} / seed {seed!r} is not a cell of this sweep")
        # Fixed by enqueue_trial: shows arm and seed as params in optuna-dashboard.
        trial.suggest_categorical("arm", sorted(by_arm))
        trial.suggest_categorical("seed", resolved.seeds)
        return arm, int(seed), dict(by_arm[arm])
    seed = resolved.seeds[0]
    settings = {key: suggest(trial, key, param) for key, param in resolved.spec.parameters.items()}
    trial.set_user_attr("arm", SEARCH_ARM)
    trial.set_user_attr("seed", seed)
    return SEARCH_ARM, seed, settings


def _train_and_score(ctx: WorkerContext, trial: optuna.Trial) -> tuple[TrialState, float | None]:
    """Run ``train_fn`` for the trial; the state to report and the objective value."""
    spec = ctx.resolved.spec
    tracker = None
    state = TrialState.FAIL
    try:
        arm, seed, settings = _trial_setup(ctx, trial)
        config = ctx.resolved.config_for(settings, seed)
        run_dir = ctx.sweep_dir / RUNS_DIR / f"{trial.number:04d}-{safe_name(arm, 60)}-s{seed}"
        trial.set_user_attr("run_dir", str(run_dir.relative_to(ctx.sweep_dir)))
        trial.set_user_attr("host", socket.gethostname())
        tracker = make_tracker(
            config.tracking,
            group=spec.name,
            job_type="sweep",
            tags=[f"sweep:{spec.name}", f"arm:{arm}", f"seed:{seed}", *ctx.provenance],
            wandb_dir=ctx.sweep_dir,
        )
        callbacks = []
        if spec.method != "grid" and spec.pruner.type != "none":
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=spec.prune_metric))
        logger.info("trial %d: arm %s seed %d -> %s", trial.number, arm, seed, run_dir)
        extra = {"progress": False} if _accepts(ctx.train_fn, "progress") else {}  # no bars in worker logs
        result = ctx.train_fn(config, run_dir=run_dir, tracker=tracker, callbacks=callbacks, **extra)
        metrics = dict(getattr(result, "metrics", {}) or {})
        if spec.metric.name not in metrics:
            raise SweepError(
                f"train returned no metric '{spec.metric.name}' (sweep metric); it returned {sorted(metrics) or 'none'}"
            )
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items() if _finite(v)})
        value = float(metrics[spec.metric.name])
        if not math.isfinite(value):
            raise SweepError(f"the sweep metric '{spec.metric.name}' is {value} (e.g. a split without events)")
        state = TrialState.COMPLETE
        return state, value
    except optuna.TrialPruned as exc:
        state = TrialState.PRUNED
        logger.info("trial %d pruned: %s", trial.number, exc)
        return state, None
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
        logger.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
        return state, None
    finally:
        if tracker is not None and tracker.active:
            tracker.finish(exit_code=0 if state == TrialState.COMPLETE else 1)


def run_trial(ctx: WorkerContext, trial: optuna.Trial) -> TrialState:
    """Train one claimed trial and report it; returns its final state.

    The heartbeat runs until the result is stored, so the trial never looks dead
    between the end of training and ``tell``. ``KeyboardInterrupt`` / ``SystemExit``
    (SIGTERM) fail the trial, re-queue it and propagate.
    """
    spec = ctx.resolved.spec
    study = ctx.study
    trial_id = _trial_id(ctx.storage, study, trial.number)
    started = time.perf_counter()
    trial.set_user_attr(
        WORKER_ATTR,
        {"host": socket.gethostname(), "pid": os.getpid(), "token": process_token(os.getpid()), "trial": trial.number},
    )
    with _Heartbeat(ctx.storage, ctx.target, trial_id, trial.number, spec.heartbeat_interval):
        try:
            state, value = _train_and_score(ctx, trial)
        except (KeyboardInterrupt, SystemExit):
            trial.set_user_attr("failure", "worker interrupted")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            with _quiet_experimental():
                retry_callback(spec.max_retry)(study, ctx.storage.get_trial(trial_id))
            raise
        frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    if frozen.state != state:
        logger.warning(
            "trial %d had already been marked %s by another worker (lost heartbeat?); its result is dropped",
            trial.number,
            frozen.state.name,
        )
    logger.info("trial %d %s value=%s (%.1f s)", trial.number, frozen.state.name, value, time.perf_counter() - started)
    return frozen.state


def run_worker(
    target: StorageTarget,
    study_name: str,
    *,
    sweep_dir: Path,
    train_fn: str | TrainFn | None = None,
    worker_index: int = 0,
    max_trials: int | None = None,
) -> int:
    """Run trials of an existing sweep study until nothing is left to claim.

    Args:
        target: the study's storage.
        study_name: the sweep name.
        sweep_dir: this machine's sweep folder (run folders go to ``<sweep_dir>/runs``).
        train_fn: ``"module:function"``, a callable, or None for ``hcc_exp.training.train:train``.
        worker_index: offsets the sampler seed so parallel workers sample differently.
        max_trials: stop after this many trials (None: until the queue is empty).

    Returns:
        The number of trials this worker ran.
    """
    study, storage, resolved = load_study(target, study_name, worker_index=worker_index)
    ctx = WorkerContext(
        study=study,
        storage=storage,
        resolved=resolved,
        target=target,
        sweep_dir=Path(sweep_dir),
        train_fn=import_train_fn(train_fn),
        provenance=provenance_tags(Path.cwd()),
    )
    ran = 0
    while max_trials is None or ran < max_trials:
        recover_stale_trials(study, storage, target, resolved.spec)
        trial = claim_next_trial(ctx)
        if trial is None:
            break
        run_trial(ctx, trial)
        ran += 1
    return ran
