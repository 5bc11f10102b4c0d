"""The run folder: every file name a training run writes, declared once, and the one way to read them.

``hcc-exp train`` (:func:`hcc_exp.training.train.train`) writes it, ``evaluate``, ``cam``,
``predict``, ``table`` and ``report`` read it (nnU-Net's ``paths`` / ``get_output_folder``
is the model: one module owns the layout)::

    <run_dir>/
      config.yaml               resolved ExperimentConfig
      meta.json                 run_id, provenance, cohort_dir, cache_dir, cache_key, started/finished
      metrics.json              flat "<split>/<task>/<metric>" floats of the best checkpoint
      predictions.csv           patient_id, split, os_risk, rfs_risk, mvi_prob (every split)
      checkpoints/best.ckpt     Lightning checkpoint (``torch.load(..., weights_only=True)`` works)
      checkpoints/risk_model.json   training-split risk cut-offs and Breslow baselines
      logs/metrics.csv          per-epoch Lightning CSV log
      tracking/, wandb/         the tracker's own records (:mod:`hcc_exp.tracking`)
      evaluation/               written by ``hcc-exp evaluate``
      cam/                      written by ``hcc-exp cam``

A relative ``cache_dir`` or ``cohort_dir`` in ``meta.json`` is resolved by one rule,
:func:`resolve_recorded_path`. Training writes into a hidden staging sibling
(:class:`StagedRunFolder`) and moves its files into place only once the run is complete, so
a failed run leaves no half-written folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.data.io import atomic_path, swap_into_place
from hcc_exp.errors import OutputFolderError, RunFolderError
from hcc_exp.vocabulary import MVI_PROBABILITY, PATIENT_ID, SPLIT, risk_column

CONFIG_YAML = "config.yaml"
META_JSON = "meta.json"
METRICS_JSON = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = Path(CHECKPOINTS_DIR) / "best.ckpt"
RISK_MODEL_JSON = Path(CHECKPOINTS_DIR) / "risk_model.json"
LOGS_DIR = "logs"
LOG_METRICS_CSV = Path(LOGS_DIR) / "metrics.csv"
EVALUATION_DIR = "evaluation"
EVALUATION_REASONS_JSON = "reasons.json"
"""``evaluation/reasons.json``: metric key -> why it could not be computed (beside ``evaluation/metrics.json``)."""
EVALUATION_TABLES_DIR = "tables"
EVALUATION_FIGURES_DIR = "figures"
CAM_DIR = "cam"

PREDICTION_COLUMNS: tuple[str, ...] = (PATIENT_ID, SPLIT, risk_column("os"), risk_column("rfs"), MVI_PROBABILITY)
"""Columns of ``predictions.csv``."""
RECORDED_PATHS: tuple[str, ...] = ("cohort_dir", "cache_dir")
"""``meta.json`` keys holding a path, resolved by :func:`resolve_recorded_path` on reading."""
PUBLISH_ORDER: tuple[str, ...] = (CHECKPOINTS_DIR, LOGS_DIR, PREDICTIONS_CSV, CONFIG_YAML, METRICS_JSON, META_JSON)
"""Order in which a staged run's entries move into place: ``meta.json`` (with ``finished``) last."""
STAGING_MARK = ".staging-"


def resolve_recorded_path(raw: str | Path, run_dir: Path | str) -> Path:
    """A path recorded in ``meta.json``, resolved by the one rule every reader uses.

    Absolute: as written. Relative: it belongs to the run's project, so the run folder's
    ancestors are tried first (the nearest one holding it), and the path as written (the working
    directory) last, so another project's ``data/raw`` under the working directory cannot shadow
    the run's. Training records absolute paths; relative ones come from hand-made or moved folders.

    >>> resolve_recorded_path("/data/cache", "runs/x")
    PosixPath('/data/cache')
    """
    path = Path(raw)
    if path.is_absolute():
        return path
    for ancestor in Path(run_dir).resolve().parents:
        if (ancestor / path).exists():
            return ancestor / path
    return path


def is_staging_folder(path: Path | str) -> bool:
    """Whether ``path`` is an unfinished run's staging folder (hidden, ``.<name>.staging-<token>``)."""
    name = Path(path).name
    return name.startswith(".") and STAGING_MARK in name


def iter_run_folders(parent: Path | str) -> Iterator[RunFolder]:
    """Run folders directly under ``parent`` (those with a ``meta.json``), by name; staging folders skipped."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for child in sorted(parent.iterdir()):
        if child.is_dir() and not is_staging_folder(child) and (child / META_JSON).is_file():
            yield RunFolder(child)


@dataclass(frozen=True)
class RunFolder:
    """One run folder; paths of its files and readers / atomic writers for them.

    Attributes:
        root: the folder (``runs/<run_id>``, ``runs/demo``, ``<sweep>/runs/<trial>``).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of_checkpoint(cls, checkpoint: Path | str) -> RunFolder:
        """The run folder of ``RUN_DIR/checkpoints/best.ckpt``."""
        return cls(Path(checkpoint).resolve().parent.parent)

    # ------------------------------------------------------------------ paths
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_yaml(self) -> Path:
        return self.root / CONFIG_YAML

    @property
    def meta_json(self) -> Path:
        return self.root / META_JSON

    @property
    def metrics_json(self) -> Path:
        return self.root / METRICS_JSON

    @property
    def predictions_csv(self) -> Path:
        return self.root / PREDICTIONS_CSV

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def best_checkpoint(self) -> Path:
        return self.root / BEST_CHECKPOINT

    @property
    def risk_model_json(self) -> Path:
        return self.root / RISK_MODEL_JSON

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def log_metrics_csv(self) -> Path:
        return self.root / LOG_METRICS_CSV

    @property
    def evaluation_dir(self) -> Path:
        return self.root / EVALUATION_DIR

    @property
    def evaluation_metrics_json(self) -> Path:
        return self.root / EVALUATION_DIR / METRICS_JSON

    @property
    def evaluation_reasons_json(self) -> Path:
        return self.root / EVALUATION_DIR / EVALUATION_REASONS_JSON

    @property
    def cam_dir(self) -> Path:
        return self.root / CAM_DIR

    # ------------------------------------------------------------------ reading
    def require(self, *paths: Path) -> None:
        """Raise :class:`RunFolderError` naming the first of ``paths`` (files of this run) that is missing."""
        for path in paths:
            if not path.is_file():
                raise RunFolderError(f"{self.root} is not a finished run: {path.relative_to(self.root)} missing")

    def read_meta(self) -> dict[str, Any]:
        """``meta.json`` as a dict, with ``cohort_dir`` / ``cache_dir`` resolved by :func:`resolve_recorded_path`.

        Raises:
            RunFolderError: the file is missing, not valid JSON, or not a JSON object.
        """
        if not self.meta_json.is_file():
            raise RunFolderError(f"{self.root} is not a run folder: {META_JSON} missing")
        meta = _read_json_object(self.meta_json)
        for key in RECORDED_PATHS:
            if meta.get(key) not in (None, ""):
                meta[key] = str(resolve_recorded_path(str(meta[key]), self.root))
        return meta

    def cache_dir(self) -> Path:
        """The preprocessed cache the run was trained on (``meta.json: cache_dir``, resolved)."""
        meta = self.read_meta()
        if meta.get("cache_dir") in (None, ""):
            raise RunFolderError(f"{self.meta_json}: no 'cache_dir' key")
        return Path(meta["cache_dir"])

    def open_cache(self) -> PreprocessedCohort:
        """The run's preprocessed cache, opened (its labels are the run's outcomes)."""
        return PreprocessedCohort.open(self.cache_dir())

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` as written (floats, NaN where a statistic was undefined)."""
        if not self.metrics_json.is_file():
            raise RunFolderError(f"run folder {self.root} has no {METRICS_JSON}")
        return _read_json_object(self.metrics_json)

    def read_evaluation_metrics(self) -> dict[str, Any] | None:
        """``evaluation/metrics.json``, or None before ``hcc-exp evaluate`` ran."""
        path = self.evaluation_metrics_json
        return _read_json_object(path) if path.is_file() else None

    def read_predictions(self, required: tuple[str, ...] = (PATIENT_ID, SPLIT)) -> pd.DataFrame:
        """``predictions.csv`` with ``patient_id`` as text.

        Raises:
            RunFolderError: the file is missing or lacks one of ``required``.
        """
        path = self.predictions_csv
        if not path.is_file():
            raise RunFolderError(f"run folder {self.root} has no {PREDICTIONS_CSV}")
        frame = pd.read_csv(path, dtype={PATIENT_ID: str}, keep_default_na=False, na_values=[""])
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise RunFolderError(f"{path}: missing column(s) {missing}")
        return frame

    # ------------------------------------------------------------------ writing
    def write_json(self, path: Path, payload: Mapping[str, Any], *, sort_keys: bool = True) -> Path:
        """Write ``payload`` as indented JSON through :func:`~hcc_exp.data.io.atomic_path` (NaN kept as NaN)."""
        text = json.dumps(dict(payload), indent=2, sort_keys=sort_keys, default=_json_default, allow_nan=True)
        return self.write_text(path, text)

    def write_text(self, path: Path, text: str) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    def write_csv(self, path: Path, frame: pd.DataFrame, *, float_format: str = "%.8g") -> Path:
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format=float_format)
        return path


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return data


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- output folders
def check_output_folder(path: Path | str, what: str) -> Path:
    """Refuse, before any work, an output folder that cannot be created or written.

    Creates nothing. ``path`` may exist (a folder) or not; its nearest existing ancestor must
    be a writable folder.

    Raises:
        OutputFolderError: ``path`` or an ancestor is a file, or the folder is not writable.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"lies under the file {probe}"
        raise OutputFolderError(f"{what} {path} {where}, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{what} {path} cannot be written: {probe} is not writable")
    return path


def make_output_folder(path: Path | str, what: str) -> Path:
    """``mkdir -p`` of an output folder; filesystem refusals become :class:`OutputFolderError`."""
    path = check_output_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"{what} {path} cannot be created: {exc.strerror or exc}") from exc
    return path


# --------------------------------------------------------------------------- staged writing
class StagedRunFolder:
    """A run folder written in a hidden staging sibling and moved into place when complete.

    ``target`` is where the run will be; :attr:`stage` (``.<name>.staging-<token>`` beside it) is
    where training writes. :meth:`publish` moves the staged entries into ``target`` (the whole
    folder in one rename when ``target`` does not exist; otherwise entry by entry in
    :data:`PUBLISH_ORDER`, each replaced in one rename, so a re-run into ``runs/demo`` keeps
    ``evaluation/`` beside it as before; all entries or none, by :func:`hcc_exp.data.io.swap_into_place`).
    Used as a context manager, leaving on an exception (or
    without :meth:`publish`) removes the staging folder, and ``target`` too when this run created it.

    Raises:
        OutputFolderError: ``target`` is a file or its folder cannot be written (on construction).
    """

    def __init__(self, target: Path | str) -> None:
        self.target = RunFolder(Path(target))
        check_output_folder(self.target.root, "run folder")
        self.target_existed = self.target.root.exists()
        absolute = Path(os.path.abspath(self.target.root))  # "runs/x/.." or "." name their folder too
        parent = absolute.parent
        # Folders this run creates above the target (e.g. runs/): removed again if the run fails.
        self.created_parents = [p for p in (parent, *parent.parents) if not p.exists()]
        make_output_folder(parent, "run folder parent")
        staging = parent / f".{absolute.name}{STAGING_MARK}{secrets.token_hex(4)}"
        try:
            staging.mkdir()
        except OSError as exc:
            raise OutputFolderError(f"run folder {self.target.root} cannot be written: {exc.strerror or exc}") from exc
        self.stage = RunFolder(staging)
        self.published = False

    def __enter__(self) -> StagedRunFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.published:
            self.discard()

    def publish(self) -> RunFolder:
        """Move the staged run into ``target``; returns ``target``."""
        target = self.target.root
        if not target.exists():
            swap_into_place([(self.stage.root, target)])
        else:
            entries = sorted(p.name for p in self.stage.root.iterdir())
            ordered = [n for n in PUBLISH_ORDER if n in entries]
            ordered = [n for n in entries if n not in ordered] + ordered
            # All entries or none: a failed rename puts back every entry already replaced.
            swap_into_place([(self.stage.root / name, target / name) for name in ordered])
            self.stage.root.rmdir()
        self.published = True
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.stage.root, ignore_errors=True)
        if not self.target_existed and self.target.root.exists() and not self.published:
            shutil.rmtree(self.target.root, ignore_errors=True)
        if not self.published:
            for folder in self.created_parents:  # innermost first; only while still empty
                try:
                    folder.rmdir()
                except OSError:
                    break
