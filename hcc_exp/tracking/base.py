"""Local tracking: every run keeps its own record under ``<run_dir>/tracking/``.

::

    <run_dir>/tracking/
      config.json      run_id, group, job_type, tags, started/finished, exit_code, config (flat dotted keys)
      history.jsonl    one line per log_metrics call: {"step": epoch or null, "time": unix s, metric: value}
      summary.json     final metrics (the keys of metrics.json), merged over log_summary calls
      images/          copies of logged images, <name>[_step<k>].<ext>
      tables/          logged tables as CSV
      artifacts.json   {"checkpoints": [...], "images": [...], "tables": [...]}

This is always on and needs no account; :class:`~hcc_exp.tracking.wandb_tracker.WandbTracker`
adds Weights & Biases on top of it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hcc_exp.errors import TrackingError

TRACKING_DIR = "tracking"
CONFIG_JSON = "config.json"
HISTORY_JSONL = "history.jsonl"
SUMMARY_JSON = "summary.json"
ARTIFACTS_JSON = "artifacts.json"
IMAGES_DIR = "images"
TABLES_DIR = "tables"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 128) -> str:
    """``text`` reduced to ``[A-Za-z0-9._-]`` (file, W&B artifact and run-id safe)."""
    cleaned = _UNSAFE.sub("-", text).strip("-.") or "x"
    return cleaned[:max_len]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_number(value: float) -> float | None:
    # Strict JSON has no NaN/inf; a missing metric (e.g. C-index without events) is null.
    return value if math.isfinite(value) else None


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``metrics`` as ``{key: float}``; tensors, numpy scalars and ints are converted.

    Raises:
        TrackingError: a value is not a single number (names the key).
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            try:
                value = value.item()
            except (ValueError, RuntimeError) as exc:
                raise TrackingError(f"metric '{key}' is not a scalar: {exc}") from exc
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrackingError(f"metric '{key}' must be a number, got {type(value).__name__}")
        out[str(key)] = float(value)
    return out


class Tracker:
    """Run tracking to local files only (always on).

    A tracker can be created with defaults for ``group``, ``job_type`` and ``tags``
    (a sweep knows its name and arm; ``train`` does not); those given at construction
    win over the ones passed to :meth:`start`, and tags are merged.

    Args:
        group: group of related runs (the sweep name); overrides ``start(group=...)``.
        job_type: kind of run (``train``, ``sweep``); overrides ``start(job_type=...)``.
        tags: extra tags added to those given to :meth:`start`.
    """

    def __init__(self, *, group: str | None = None, job_type: str | None = None, tags: Sequence[str] = ()) -> None:
        self._preset_group = group
        self._preset_job_type = job_type
        self._preset_tags = list(tags)
        self._active = False
        self._finished = False
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.group: str | None = None
        self.job_type: str | None = None
        self.tags: list[str] = []
        self.config: dict[str, Any] = {}
        self._summary: dict[str, float] = {}
        self._artifacts: dict[str, list[dict[str, Any]]] = {"checkpoints": [], "images": [], "tables": []}
        self._record: dict[str, Any] = {}

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """Started and not yet finished."""
        return self._active

    @property
    def folder(self) -> Path:
        """``<run_dir>/tracking``."""
        self._require_active()
        assert self.run_dir is not None  # set by start
        return self.run_dir / TRACKING_DIR

    def _require_active(self) -> None:
        if not self._active:
            raise TrackingError(f"{type(self).__name__} is not started: call start() before logging")

    # ------------------------------------------------------------------ API
    def start(
        self,
        *,
        run_id: str,
        run_dir: Path,
        config: Mapping[str, Any],
        group: str | None = None,
        job_type: str = "train",
        tags: Sequence[str] = (),
    ) -> None:
        """Begin a run: ``config`` is the resolved config as flat dotted keys."""
        if self._active:
            raise TrackingError(f"tracker already started for run {self.run_id}; call finish() first")
        self.run_id = run_id
        self.run_dir = Path(run_dir)
        self.group = self._preset_group if self._preset_group is not None else group
        self.job_type = self._preset_job_type if self._preset_job_type is not None else job_type
        self.tags = list(dict.fromkeys([*self._preset_tags, *tags]))
        self.config = dict(config)
        self._summary = {}
        self._artifacts = {"checkpoints": [], "images": [], "tables": []}
        self._active = True
        self._finished = False
        self.folder.mkdir(parents=True, exist_ok=True)
        self._record = {
            "run_id": self.run_id,
            "group": self.group,
            "job_type": self.job_type,
            "tags": self.tags,
            "started": _now(),
            "finished": None,
            "exit_code": None,
            "config": self.config,
        }
        self._write_json(CONFIG_JSON, self._record)
        # A restarted run in the same folder starts a new history.
        (self.folder / HISTORY_JSONL).write_text("", encoding="utf-8")

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Append one row of metrics (``step`` = epoch for per-epoch metrics)."""
        self._require_active()
        values = scalar_metrics(metrics)
        row: dict[str, Any] = {"step": step, "time": round(time.time(), 3)}
        row.update({k: _json_number(v) for k, v in values.items()})
        with (self.folder / HISTORY_JSONL).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def log_images(self, images: Mapping[str, Path], step: int | None = None) -> None:
        """Copy PNG (or other) images into ``tracking/images``; keys name them (``cam/os``)."""
        self._require_active()
        folder = self.folder / IMAGES_DIR
        folder.mkdir(exist_ok=True)
        for name, path in images.items():
            path = Path(path)
            if not path.is_file():
                raise TrackingError(f"image '{name}': file {path} does not exist")
            suffix = "" if step is None else f"_step{step}"
            target = folder / f"{safe_name(name)}{suffix}{path.suffix}"
            shutil.copyfile(path, target)
            self._artifacts["images"].append(
                {"name": name, "step": step, "path": str(target.relative_to(self.run_dir))}
            )
        self._write_json(ARTIFACTS_JSON, self._artifacts)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Final metrics of the run (same keys as ``metrics.json``); later calls update earlier ones."""
        self._require_active()
        self._summary.update(scalar_metrics(metrics))
        self._write_json(SUMMARY_JSON, {k: _json_number(v) for k, v in self._summary.items()})

    def log_checkpoint(self, path: Path, *, name: str, metadata: Mapping[str, Any]) -> None:
        """Record the best checkpoint (not copied: it stays in the run folder)."""
        self._require_active()
        path = Path(path)
        if not path.is_file():
            raise TrackingError(f"checkpoint '{name}': file {path} does not exist")
        self._artifacts["checkpoints"].append(
            {"name": name, "path": str(path), "size_bytes": path.stat().st_size, "metadata": dict(metadata)}
        )
        self._write_json(ARTIFACTS_JSON, self._artifacts)

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        """Save a table as ``tracking/tables/<name>.csv``."""
        self._require_active()
        folder = self.folder / TABLES_DIR
        folder.mkdir(exist_ok=True)
        target = folder / f"{safe_name(name)}.csv"
        frame.to_csv(target, index=False)
        self._artifacts["tables"].append({"name": name, "path": str(target.relative_to(self.run_dir))})
        self._write_json(ARTIFACTS_JSON, self._artifacts)

    def finish(self, exit_code: int = 0) -> None:
        """End the run; a second call (e.g. from an error path) does nothing."""
        if not self._active:
            return
        self._record.update(finished=_now(), exit_code=int(exit_code))
        self._write_json(CONFIG_JSON, self._record)
        self._write_json(ARTIFACTS_JSON, self._artifacts)
        self._active = False
        self._finished = True

    # ------------------------------------------------------------------ helpers
    def _write_json(self, name: str, payload: Any) -> None:
        target = self.folder / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        tmp.replace(target)
