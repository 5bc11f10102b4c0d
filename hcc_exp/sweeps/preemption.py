"""Preemption of a running trial: checkpoint it, re-queue it, resume it from the checkpoint.

On Slurm, submitit turns the pre-timeout / preemption signal (``--signal=USR1@<delay>``)
into a call of :meth:`hcc_exp.sweeps.slurm.SweepTask.checkpoint` in the worker's main
thread, then requeues the array task and exits. That call lands here
(:func:`checkpoint_running_trial`):

1. the trial's checkpoint is Lightning's ``checkpoints/last.ckpt`` in its run folder,
   written by ``ModelCheckpoint(save_last=True)`` after every validation. It is not
   re-saved here: a save from inside the signal handler can catch the loop between
   the end of an epoch's training batches and its validation, and Lightning cannot
   resume from that state (the restored epoch ends without ``val/loss``). At most the
   epoch in progress is repeated;
2. the trial is failed ("preempted") and re-queued with ``resume_from`` = that
   checkpoint (relative to the sweep folder); preemptions do not count as retries.

The retry (run by the requeued task or any other worker) reuses the run folder and
passes ``resume_from`` to ``train``, which hands it to ``trainer.fit(ckpt_path=...)``:
epochs continue where they stopped. The callback records ``start_epoch`` and
``epochs_done`` on each attempt, which shows the continuation in the study.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from hcc_exp.sweeps.folder import SweepFolder
from hcc_exp.sweeps.liveness import fail_and_requeue

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
"""Where Lightning's ``ModelCheckpoint(save_last=True)`` of ``train`` writes (run-folder relative)."""
START_EPOCH_ATTR = "start_epoch"
EPOCHS_DONE_ATTR = "epochs_done"


@dataclass
class ActiveTrial:
    """The trial this process runs right now (at most one per worker process)."""

    study: optuna.Study
    storage: BaseStorage
    folder: SweepFolder
    number: int
    max_retry: int
    requeued: bool = False

    @property
    def run_dir(self) -> Path | None:
        recorded = self.storage.get_trial(self._trial_id()).user_attrs.get("run_dir")
        return None if not recorded else self.folder.root / recorded

    def _trial_id(self) -> int:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, self.number)


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


def checkpoint_running_trial(reason: str = "preempted") -> str | None:
    """Re-queue the running trial with its last checkpoint (called from the preemption signal handler).

    Returns:
        The checkpoint the retry resumes from (sweep-folder relative), or None when
        there is none (the retry starts over) or no trial is running.
    """
    active = _ACTIVE
    if active is None or active.requeued:
        return None
    resume: str | None = None
    run_dir = active.run_dir
    if run_dir is not None and (run_dir / LAST_CHECKPOINT).is_file():
        resume = active.folder.relative(run_dir / LAST_CHECKPOINT)
    message = f"{reason}; resumes from {resume}" if resume else f"{reason}; no checkpoint, starts over"
    fail_and_requeue(
        active.study, active.storage, active.number, message, active.max_retry, preempted=True, resume_from=resume
    )
    active.requeued = True
    logger.warning("trial %d %s", active.number, message)
    return resume


def progress_callback(trial: optuna.Trial) -> Any:
    """A Lightning callback recording each attempt's first epoch and the epochs done (user attrs of the trial)."""
    from lightning.pytorch.callbacks import Callback

    class TrialProgress(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            trial.set_user_attr(START_EPOCH_ATTR, int(trainer.current_epoch))

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            trial.set_user_attr(EPOCHS_DONE_ATTR, int(trainer.current_epoch) + 1)

    return TrialProgress()
