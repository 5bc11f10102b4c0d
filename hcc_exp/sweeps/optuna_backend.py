"""Optuna backend: the study, its trial queue and the worker loop.

A grid (ablation) enqueues every arm x seed once as a WAITING trial; workers claim
WAITING trials atomically (``set_trial_state_values(RUNNING)`` succeeds for one
process only) and never sample new ones, so each cell runs once. Random / bayes
searches ask Optuna's sampler for new trials until ``trials`` is reached.

Dead workers, heartbeats and re-queueing live in :mod:`hcc_exp.sweeps.liveness`;
a preempted trial's checkpoint and resume in :mod:`hcc_exp.sweeps.preemption`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from hcc_exp.errors import ConfigError, SweepError
from hcc_exp.sweeps import preemption
from hcc_exp.sweeps.folder import SweepFolder
from hcc_exp.sweeps.liveness import (
    RESUME_ATTR,
    WORKER_ATTR,
    Heartbeat,
    fail_and_requeue,
    quiet_experimental,
    recover_stale_trials,
    trial_id,
    worker_identity,
)
from hcc_exp.sweeps.spec import SEARCH_ARM, ParameterSpec, ResolvedSweep, SweepSpec
from hcc_exp.sweeps.status import sweep_status
from hcc_exp.sweeps.storage import StorageTarget, open_storage
from hcc_exp.sweeps.train_fn import TrainFn, accepts, import_train_fn, train_fn_path
from hcc_exp.tracking import make_tracker, provenance_tags

logger = logging.getLogger(__name__)

SWEEP_ATTR = "hcc_exp_sweep"
"""Study user attr holding the resolved sweep (spec, base config, fingerprint)."""
__all__ = ["WORKER_ATTR", "TrainFn", "import_train_fn", "recover_stale_trials", "train_fn_path"]  # as before



# --------------------------------------------------------------------------- helpers
def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- samplers / pruners
def study_direction(spec: SweepSpec) -> str:
    return spec.metric.goal


def worker_sampler_seed(sampler_seed: int | None, worker_index: int, attempt: int = 0) -> int | None:
    """A sampler seed per worker from the sweep's ``sampler_seed``, the worker (task) index and its attempt.

    Workers that share one seed sample the same parameters (Optuna issue 3790); a
    requeued Slurm task (``attempt`` = ``SLURM_RESTART_COUNT``) must not replay its first
    attempt's samples either. ``numpy.random.SeedSequence`` mixes the three so that
    nearby inputs give unrelated streams; None stays None (unseeded).

    >>> worker_sampler_seed(7, 0) == worker_sampler_seed(7, 0) != worker_sampler_seed(7, 1)
    True
    """
    if sampler_seed is None:
        return None
    return int(np.random.SeedSequence([int(sampler_seed), int(worker_index), int(attempt)]).generate_state(1)[0])


def make_sampler(spec: SweepSpec, worker_index: int = 0, attempt: int = 0) -> optuna.samplers.BaseSampler:
    """TPE for bayes, random for random; a grid's trials are all enqueued (random never samples)."""
    seed = worker_sampler_seed(spec.sampler_seed, worker_index, attempt)
    with quiet_experimental():
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
    with quiet_experimental():
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
    target: StorageTarget, study_name: str, *, worker_index: int = 0, attempt: int = 0
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
    with quiet_experimental():
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(spec, worker_index, attempt),
            pruner=make_pruner(spec, resolved.config_for({}, None).trainer.max_epochs),
        )
    return study, storage, resolved


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


# --------------------------------------------------------------------------- worker
@dataclass
class WorkerContext:
    """Everything one worker needs to run trials of a sweep."""

    study: optuna.Study
    storage: BaseStorage
    resolved: ResolvedSweep
    target: StorageTarget
    folder: SweepFolder
    train_fn: TrainFn
    provenance: list[str] = field(default_factory=list)
    resumable: bool = False  # keep a last.ckpt per epoch so a preempted trial can resume (Slurm tasks)

    @property
    def sweep_dir(self) -> Path:
        return self.folder.root


def _claim_waiting(study: optuna.Study, storage: BaseStorage) -> optuna.Trial | None:
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        tid = trial_id(storage, study, frozen.number)
        try:
            # Succeeds for exactly one process per trial (journal replay / SQL row update).
            if storage.set_trial_state_values(tid, state=TrialState.RUNNING):
                return optuna.Trial(study, tid)
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
    with quiet_experimental():
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


def _run_dir_and_resume(ctx: WorkerContext, trial: optuna.Trial, arm: str, seed: int) -> tuple[Path, Path | None]:
    """A re-queued preempted trial continues its predecessor's run folder from its saved checkpoint."""
    resume = trial.user_attrs.get(RESUME_ATTR)
    inherited = trial.user_attrs.get("run_dir")
    if resume and inherited and accepts(ctx.train_fn, "resume_from"):
        checkpoint = ctx.folder.root / resume
        if checkpoint.is_file():
            return ctx.folder.root / inherited, checkpoint
        logger.warning("trial %d: checkpoint %s is gone; the trial starts over", trial.number, checkpoint)
    return ctx.folder.trial_run_dir(trial.number, arm, seed), None


def _train_and_score(ctx: WorkerContext, trial: optuna.Trial) -> tuple[TrialState, float | None]:
    """Run ``train_fn`` for the trial; the state to report and the objective value."""
    spec = ctx.resolved.spec
    tracker = None
    state = TrialState.FAIL
    try:
        arm, seed, settings = _trial_setup(ctx, trial)
        config = ctx.resolved.config_for(settings, seed)
        run_dir, resume_from = _run_dir_and_resume(ctx, trial, arm, seed)
        trial.set_user_attr("run_dir", ctx.folder.relative(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        tracker = make_tracker(
            config.tracking,
            group=spec.name,
            job_type="sweep",
            tags=[f"sweep:{spec.name}", f"arm:{arm}", f"seed:{seed}", *ctx.provenance],
            wandb_dir=ctx.folder.wandb_dir,
        )
        callbacks = []
        if spec.method != "grid" and spec.pruner.type != "none":
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=spec.prune_metric))
        extra: dict[str, Any] = {"progress": False} if accepts(ctx.train_fn, "progress") else {}  # no bars in logs
        if accepts(ctx.train_fn, "resume_from") and (ctx.resumable or resume_from is not None):
            # A Lightning train function: it keeps a checkpoint to resume from after a preemption.
            resume_best = resume_from.with_name(preemption.BEST_CHECKPOINT) if resume_from else None
            callbacks += preemption.progress_callbacks(trial, resume_best)
            extra["resume_from"] = resume_from
        logger.info(
            "trial %d: arm %s seed %d -> %s%s", trial.number, arm, seed, run_dir,
            f" (resuming from {resume_from})" if resume_from else "",
        )  # fmt: skip
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
        if resume_from is not None:  # the run folder is complete: its resume checkpoints are done with
            shutil.rmtree(resume_from.parent, ignore_errors=True)
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
    (SIGTERM) fail the trial, re-queue it and propagate; a trial already re-queued by
    the preemption handler (with its checkpoint) is left as that handler marked it.
    """
    spec = ctx.resolved.spec
    study = ctx.study
    tid = trial_id(ctx.storage, study, trial.number)
    started = time.perf_counter()
    trial.set_user_attr(WORKER_ATTR, worker_identity(trial.number))
    with Heartbeat(ctx.storage, ctx.target, tid, trial.number, spec.heartbeat_interval), preemption.active_trial(
        study, ctx.storage, ctx.folder, trial.number, spec.max_retry
    ) as active:
        try:
            state, value = _train_and_score(ctx, trial)
        except (KeyboardInterrupt, SystemExit) as exc:
            if not active.requeued:
                fail_and_requeue(study, ctx.storage, trial.number, "worker interrupted", spec.max_retry)
                logger.warning("trial %d: worker interrupted (%r); failed and re-queued", trial.number, exc)
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
    wait_for_running: bool = False,
    attempt: int = 0,
    resumable: bool = False,
) -> int:
    """Run trials of an existing sweep study until nothing is left to claim.

    Args:
        target: the study's storage.
        study_name: the sweep name.
        sweep_dir: this machine's sweep folder (run folders go to ``<sweep_dir>/runs``).
        train_fn: ``"module:function"``, a callable, or None for ``hcc_exp.training.train:train``.
        worker_index: with ``attempt``, seeds this worker's sampler (:func:`worker_sampler_seed`).
        max_trials: stop after this many trials (None: until the queue is empty).
        wait_for_running: when nothing is waiting but other workers still run trials,
            wait (recovering dead workers' trials) instead of stopping: a Slurm array task
            has no supervisor to start a worker for a trial re-queued later.
        attempt: how often this worker was restarted (Slurm requeue count).
        resumable: write a checkpoint every epoch so that a preempted trial resumes (Slurm).

    Returns:
        The number of trials this worker ran.
    """
    study, storage, resolved = load_study(target, study_name, worker_index=worker_index, attempt=attempt)
    ctx = WorkerContext(
        study=study,
        storage=storage,
        resolved=resolved,
        target=target,
        folder=SweepFolder(Path(sweep_dir)),
        train_fn=import_train_fn(train_fn),
        provenance=provenance_tags(Path.cwd()),
        resumable=resumable,
    )
    ran = 0
    while max_trials is None or ran < max_trials:
        recover_stale_trials(study, storage, target, resolved.spec)
        trial = claim_next_trial(ctx)
        if trial is None:
            if wait_for_running and sweep_status(study, resolved).running > 0:
                time.sleep(min(5.0, float(resolved.spec.heartbeat_interval)))
                continue
            break
        run_trial(ctx, trial)
        ran += 1
    return ran
