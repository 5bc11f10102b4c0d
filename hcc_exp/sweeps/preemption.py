"""Preemption of a running trial: keep its checkpoint, re-queue it, resume it from the checkpoint.

On Slurm, submitit turns the pre-timeout / preemption signal (``--signal=USR1@<delay>``)
into a call of :meth:`hcc_exp.sweeps.slurm.SweepTask.checkpoint` in the worker's main
thread, then requeues the array task and exits. That call lands here
(:func:`checkpoint_running_trial`).

``train`` writes a run in a staging folder that is removed when training stops early, so
the trial's checkpoint must be taken out before the process exits:

1. during training, :func:`progress_callbacks` adds a Lightning ``ModelCheckpoint`` that
   writes ``checkpoints/last.ckpt`` (in the staging folder) after every epoch, after the best-model
   checkpoint was updated; the best score travels in that checkpoint (``train`` strips
   ``ModelCheckpoint``'s own state, which holds machine paths);
2. on the signal, ``last.ckpt`` and ``best.ckpt`` are copied to
   ``<sweep>/resume/<trial run name>/`` (:meth:`~hcc_exp.sweeps.folder.SweepFolder.resume_dir`)
   and the trial is failed ("preempted") and re-queued with ``resume_from`` = that
   ``last.ckpt``; preemptions do not count as retries. The checkpoint is not re-saved
   in the signal handler: the loop may be between an epoch's training batches and its
   validation, a state Lightning cannot resume from. At most the epoch in progress is
   repeated;
3. the retry passes ``resume_from`` to ``train`` (``trainer.fit(ckpt_path=...)``): epochs,
   optimizer and early stopping continue; the callback restores the best checkpoint and
   its score, so the run's ``best.ckpt`` is the best over all epochs. The resume folder
   is removed once the trial completes.

The callback records ``start_epoch`` and ``epochs_done`` on each attempt, which shows the
continuation in the study.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from hcc_exp.sweeps.folder import SweepFolder
from hcc_exp.sweeps.liveness import fail_and_requeue

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
START_EPOCH_ATTR = "start_epoch"
EPOCHS_DONE_ATTR = "epochs_done"
_STATE_KEY = "hcc_exp_resume"


@dataclass
class ActiveTrial:
    """The trial this process runs right now (at most one per worker process)."""

    study: optuna.Study
    storage: BaseStorage
    folder: SweepFolder
    number: int
    max_retry: int
    last_dir: Path | None = None  # where the live training writes last.ckpt (inside its staging folder)
    best_dir: Path | None = None
    requeued: bool = False

    def resume_dir(self) -> Path | None:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        recorded = self.storage.get_trial(trial_id).user_attrs.get("run_dir")
        return None if not recorded else self.folder.resume_dir(Path(recorded).name)


_ACTIVE: ActiveTrial | None = None


@contextlib.contextmanager
def active_trial(
    study: optuna.Study, storage: BaseStorage, folder: SweepFolder, number: int, max_retry: int
) -> Iterator[ActiveTrial]:
    """Register the trial this worker runs, for the preemption handler."""
    global _ACTIVE
    active = ActiveTrial(study, storage, folder, number, max_retry)
    _ACTIVE = active
    try:
        yield active
    finally:
        _ACTIVE = None


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def checkpoint_running_trial(reason: str = "preempted") -> str | None:
    """Save the running trial's last checkpoint aside and re-queue the trial (preemption signal handler).

    Returns:
        The checkpoint the retry resumes from (sweep-folder relative), or None when
        there is none (the retry starts over) or no trial is running.
    """
    active = _ACTIVE
    if active is None or active.requeued:
        return None
    resume: str | None = None
    dest = active.resume_dir()
    if dest is not None:
        live_last = active.last_dir / LAST_CHECKPOINT if active.last_dir is not None else None
        if live_last is not None and live_last.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            live_best = active.best_dir / BEST_CHECKPOINT if active.best_dir is not None else None
            if live_best is not None and live_best.is_file():
                _copy(live_best, dest / BEST_CHECKPOINT)
            _copy(live_last, dest / LAST_CHECKPOINT)
        if (dest / LAST_CHECKPOINT).is_file():  # this attempt's, or the one it resumed from
            resume = active.folder.relative(dest / LAST_CHECKPOINT)
    message = f"{reason}; resumes from {resume}" if resume else f"{reason}; no checkpoint, starts over"
    fail_and_requeue(
        active.study, active.storage, active.number, message, active.max_retry, preempted=True, resume_from=resume
    )
    active.requeued = True
    logger.warning("trial %d %s", active.number, message)
    return resume


def progress_callbacks(trial: optuna.Trial, resume_best: Path | None = None) -> list[Any]:
    """Lightning callbacks of a resumable trial: a ``last.ckpt`` writer and the progress / resume bookkeeping.

    Args:
        trial: the running trial (gets ``start_epoch`` / ``epochs_done`` user attrs).
        resume_best: ``best.ckpt`` saved with the checkpoint this attempt resumes from.
    """
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    # monitor=None, top-1: the newest epoch, saved as last.ckpt after the best-model checkpoint of that epoch.
    last = ModelCheckpoint(filename=Path(LAST_CHECKPOINT).stem, save_top_k=1, monitor=None, enable_version_counter=False)

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.restored: dict[str, Any] | None = None

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            best = trainer.checkpoint_callback
            if best is not None and best.dirpath and last.dirpath is None:
                last.dirpath = best.dirpath  # checkpoints/last.ckpt beside best.ckpt (in the staging folder)

        def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
            self.restored = checkpoint.get(_STATE_KEY)

        def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
            best = trainer.checkpoint_callback
            if best is not None and best.best_model_score is not None:
                checkpoint[_STATE_KEY] = {"best_model_score": float(best.best_model_score)}

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            best = trainer.checkpoint_callback
            if _ACTIVE is not None:
                _ACTIVE.last_dir = Path(last.dirpath) if last.dirpath else None
                _ACTIVE.best_dir = Path(best.dirpath) if best is not None and best.dirpath else None
            if self.restored and resume_best is not None and resume_best.is_file() and best is not None:
                import torch

                target = Path(best.dirpath) / BEST_CHECKPOINT
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(resume_best, target)
                score = torch.tensor(float(self.restored["best_model_score"]))
                best.best_model_score, best.best_model_path = score, str(target)
                best.best_k_models, best.kth_best_model_path, best.kth_value = {str(target): score}, str(target), score
            trial.set_user_attr(START_EPOCH_ATTR, int(trainer.current_epoch))

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            trial.set_user_attr(EPOCHS_DONE_ATTR, int(trainer.current_epoch) + 1)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            if _ACTIVE is not None:
                _ACTIVE.last_dir = None
            if last.dirpath:  # finished: the run folder keeps best.ckpt only
                with contextlib.suppress(OSError):
                    (Path(last.dirpath) / LAST_CHECKPOINT).unlink(missing_ok=True)

    progress = TrialProgress()
    return [progress, last]
