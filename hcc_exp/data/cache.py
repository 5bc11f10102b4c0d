"""Layout of the preprocessed cache (written by ``hcc-exp preprocess``, read by training).

::

    CACHE_ROOT/<cache_key>/              cache_key = "<params_hash>-<input_hash>"
      manifest.json                      params, hashes, phases, regions, shape, spacing, per-patient info
      labels.csv                         the cohort.csv rows, LABEL_COLUMNS only (patient_id, split, outcomes, clinical)
      patients/<patient_id>/image.npy    (P, D, H, W) float16/float32 in [0, 1]; P = 3 phases in PHASES order
      patients/<patient_id>/masks.npy    (P, R, D, H, W) uint8 in {0, 1}; R = REGIONS order
    CACHE_ROOT/current.json              {"cache_key": ...} of the latest completed preprocess

``params_hash`` comes from :meth:`PreprocessConfig.params_hash`; ``input_hash``
hashes the cohort's files, so re-running with the same parameters and data is a
no-op and any change writes a new key. A cache folder appears only once
complete (written under a temporary name, then renamed by :func:`publish_cache_folder`,
which never replaces a completed cache).

Everything in the cache is a function of the cohort's bytes and the recipe: no
time, duration or machine path is written here (DVC tracks the folder, and its hash
must not depend on when or where it was built). Those facts of a build are returned
as :class:`CacheBuild` for logs and a run's ``meta.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.data.contract import REQUIRED_COLUMNS, read_cohort_table, typed_cohort_table
from hcc_exp.data.io import atomic_path, swap_into_place
from hcc_exp.errors import PreprocessError, RunFolderError
from hcc_exp.vocabulary import PATIENT_ID, REGIONS, SPLIT  # noqa: F401  (REGIONS re-exported: mask channels)

MANIFEST = "manifest.json"
LABELS = "labels.csv"
PATIENTS_DIR = "patients"
IMAGE_NPY = "image.npy"
MASKS_NPY = "masks.npy"
CURRENT = "current.json"
CACHE_VERSION = 2
"""2: no creation time, duration or cohort path in the manifest; labels.csv keeps LABEL_COLUMNS only."""

LABEL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS
"""The cohort.csv columns the pipeline reads (identifier, split, outcomes, clinical); others stay out."""


@dataclass(frozen=True)
class CacheBuild:
    """How a cache came about in this process (never written into the cache).

    Attributes:
        cohort_dir: the cohort folder, absolute.
        reused: the cache existed already (nothing was written).
        seconds: wall time of the whole call.
        patient_seconds: per patient, wall time of its preprocessing (empty when reused).
        expected_bytes: the arrays' size on disk (:func:`hcc_exp.data.preprocessing.expected_cache_bytes`).
    """

    cohort_dir: str
    reused: bool
    seconds: float
    patient_seconds: dict[str, float] = field(default_factory=dict)
    expected_bytes: int = 0


@dataclass(frozen=True)
class PreprocessedCohort:
    """A completed cache folder.

    Attributes:
        root: the ``CACHE_ROOT/<cache_key>`` folder.
        manifest: the parsed ``manifest.json``.
        labels: ``labels.csv`` as a DataFrame indexed by position, ``patient_id`` as str.
        build: set by the preprocessing call that returned this object, else None.
    """

    root: Path
    manifest: dict[str, Any]
    labels: pd.DataFrame
    build: CacheBuild | None = field(default=None, compare=False)

    @classmethod
    def open(cls, root: Path | str) -> PreprocessedCohort:
        root = Path(root)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise RunFolderError(f"{root} is not a preprocessed cache: {MANIFEST} missing (run `hcc-exp preprocess`)")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        # The one reading of the cohort table: identifiers are text (a patient called "NA" stays "NA").
        labels = typed_cohort_table(read_cohort_table(root / LABELS))
        return cls(root, manifest, labels)

    @property
    def cache_key(self) -> str:
        return str(self.manifest["cache_key"])

    @property
    def phases(self) -> tuple[str, ...]:
        return tuple(self.manifest["phases"])

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(self.manifest["shape_zyx"])  # type: ignore[return-value]

    def patient_ids(self, split: str | None = None) -> list[str]:
        frame = self.labels if split is None else self.labels[self.labels[SPLIT] == split]
        return frame[PATIENT_ID].astype(str).tolist()

    def image_path(self, patient_id: str) -> Path:
        return self.root / PATIENTS_DIR / patient_id / IMAGE_NPY

    def masks_path(self, patient_id: str) -> Path:
        return self.root / PATIENTS_DIR / patient_id / MASKS_NPY

    def load(self, patient_id: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image (P, D, H, W), masks (P, R, D, H, W))`` of one patient."""
        mode = "r" if mmap else None
        return np.load(self.image_path(patient_id), mmap_mode=mode), np.load(self.masks_path(patient_id), mmap_mode=mode)


def current_cache(cache_root: Path | str) -> PreprocessedCohort:
    """The cache named by ``CACHE_ROOT/current.json`` (the latest completed preprocess)."""
    cache_root = Path(cache_root)
    pointer = cache_root / CURRENT
    if not pointer.is_file():
        raise RunFolderError(f"no preprocessed cache under {cache_root}: run `hcc-exp preprocess` first")
    key = json.loads(pointer.read_text(encoding="utf-8"))["cache_key"]
    return PreprocessedCohort.open(cache_root / key)


def write_labels(table: pd.DataFrame, folder: Path) -> None:
    """Write ``FOLDER/labels.csv``: the :data:`LABEL_COLUMNS` of ``table`` in that order, values as given.

    ``table`` holds the cohort's text (read with ``dtype=str``), so values are copied, not re-formatted.
    """
    table.loc[:, list(LABEL_COLUMNS)].to_csv(folder / LABELS, index=False, lineterminator="\n")


def write_manifest(manifest: dict[str, Any], folder: Path) -> None:
    """Write ``FOLDER/manifest.json`` (indented JSON, keys in the order given)."""
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def publish_cache_folder(staged: Path, final: Path) -> bool:
    """Move a complete staged cache folder to ``CACHE_ROOT/<key>``; a completed cache is never replaced.

    Through :func:`hcc_exp.data.io.swap_into_place` with ``replace=False``: when another run
    completed the same key meanwhile (same parameters, same inputs: the same arrays), its folder
    is kept and ``staged`` is removed. A folder at ``final`` without ``manifest.json`` is no cache.

    Returns:
        True when ``staged`` became the cache, False when an existing one was kept.

    Raises:
        PreprocessError: ``final`` exists but holds no ``manifest.json`` (``staged`` is kept for the caller).
    """
    (published,) = swap_into_place([(Path(staged), Path(final))], replace=False)
    if published:
        return True
    if not (Path(final) / MANIFEST).is_file():
        raise PreprocessError(f"{final} exists but is not a complete cache (no {MANIFEST}): remove it and re-run")
    shutil.rmtree(staged, ignore_errors=True)
    return False


def write_current(cache_root: Path, key: str) -> None:
    """Point ``CACHE_ROOT/current.json`` at ``key`` (atomic)."""
    with atomic_path(Path(cache_root) / CURRENT) as pointer:
        pointer.write_text(json.dumps({"cache_key": key}) + "\n", encoding="utf-8")
