"""Run tracking: local files always, Weights & Biases (offline by default) on top.

This package is the only one that imports ``wandb``. Training receives a
:class:`Tracker`; :func:`make_tracker` picks the local-only or the W&B one from
``config.tracking``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hcc_exp.config import TrackingConfig
from hcc_exp.tracking.base import Tracker, TrackingError, safe_name
from hcc_exp.tracking.provenance import data_version, git_state, provenance_tags
from hcc_exp.tracking.wandb_tracker import (
    WandbTracker,
    find_offline_runs,
    resolve_wandb_mode,
    sync_offline_runs,
    wandb_credentials_available,
    wandb_server_unavailable,
)

if TYPE_CHECKING:
    from hcc_exp.tracking.callback import TrackingCallback
    from hcc_exp.tracking.offline import OfflineRun, read_offline_run

__all__ = [
    "OfflineRun",
    "Tracker",
    "TrackingCallback",
    "TrackingError",
    "WandbTracker",
    "data_version",
    "find_offline_runs",
    "git_state",
    "make_tracker",
    "provenance_tags",
    "read_offline_run",
    "resolve_wandb_mode",
    "safe_name",
    "sync_offline_runs",
    "wandb_credentials_available",
    "wandb_server_unavailable",
]


def make_tracker(
    tracking_cfg: TrackingConfig,
    *,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    wandb_dir: Path | None = None,
    adopt_active_run: bool = False,
) -> Tracker:
    """A :class:`WandbTracker` when ``tracking_cfg.wandb`` and the mode is not disabled, else a :class:`Tracker`.

    ``group``/``job_type``/``tags`` are defaults the run keeps whatever ``start`` is
    given (a sweep sets its name and the arm); ``wandb_dir`` receives ``wandb/``
    (default: the run folder).
    """
    if tracking_cfg.wandb and resolve_wandb_mode(tracking_cfg.wandb_mode) != "disabled":
        return WandbTracker(
            project=tracking_cfg.wandb_project,
            mode=tracking_cfg.wandb_mode,
            wandb_dir=wandb_dir,
            adopt_active_run=adopt_active_run,
            group=group,
            job_type=job_type,
            tags=tags,
        )
    return Tracker(group=group, job_type=job_type, tags=tags)


def __getattr__(name: str) -> Any:
    # Lazy: the callback imports Lightning and the reader imports wandb's protobufs,
    # which a sweep's parent process or the CLI's help should not pay for.
    if name == "TrackingCallback":
        from hcc_exp.tracking.callback import TrackingCallback

        return TrackingCallback
    if name in {"OfflineRun", "read_offline_run"}:
        from hcc_exp.tracking import offline

        return getattr(offline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
