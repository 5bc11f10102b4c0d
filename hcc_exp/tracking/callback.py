"""Lightning callback that forwards epoch-level metrics to a :class:`~hcc_exp.tracking.base.Tracker`."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl

from hcc_exp.tracking.base import Tracker


class TrackingCallback(pl.Callback):
    """Send ``trainer.callback_metrics`` to ``tracker.log_metrics(..., step=epoch)``.

    Two hooks, each (epoch, key) sent once:

    - ``on_validation_end``: the validation metrics of the epoch, as soon as they exist
      (a module computes epoch metrics such as the C-index in its own
      ``on_validation_epoch_end``, which Lightning runs after the callbacks' hook of that
      name, so that hook would miss them). At this point ``callback_metrics`` still
      holds the previous epoch's training metrics, so only values that changed since
      the previous epoch are sent here.
    - ``on_train_epoch_end`` (after validation in Lightning 2.x): everything not sent yet
      for the epoch, i.e. the training metrics.

    The sanity check is skipped. With ``check_val_every_n_epoch > 1`` the validation
    metrics of a skipped epoch are the last ones computed.
    """

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker
        self._sent: dict[int, set[str]] = {}
        self._previous_epoch: dict[str, float] = {}

    def _current(self, trainer: pl.Trainer) -> dict[str, float]:
        values = {}
        for key, value in trainer.callback_metrics.items():
            number = _scalar(value)
            if number is not None:
                values[key] = number
        return values

    def _send(self, epoch: int, metrics: dict[str, float]) -> None:
        sent = self._sent.setdefault(epoch, set())
        fresh = {k: v for k, v in metrics.items() if k not in sent}
        if fresh:
            sent.update(fresh)
            self.tracker.log_metrics(fresh, step=epoch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.tracker.active:
            return
        changed = {
            k: v for k, v in self._current(trainer).items() if not _same(self._previous_epoch.get(k), v)
        }
        self._send(int(trainer.current_epoch), changed)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.tracker.active:
            return
        current = self._current(trainer)
        self._send(int(trainer.current_epoch), current)
        self._previous_epoch = current


def _same(a: float | None, b: float) -> bool:
    return a is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def _scalar(value: Any) -> float | None:
    if hasattr(value, "numel"):
        if value.numel() != 1:
            return None
        return float(value.detach().cpu().item())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
