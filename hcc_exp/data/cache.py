"""Layout of the preprocessed cache (written by ``hcc-exp preprocess``, read by training).

::

    CACHE_ROOT/<cache_key>/              cache_key = "<params_hash>-<input_hash>"
      manifest.json                      params, hashes, phases, regions, shape, spacing, per-patient info
      labels.csv                         the cohort.csv rows (patient_id, split, outcomes, clinical)
      patients/<patient_id>/image.npy    (P, D, H, W) float16/float32 in [0, 1]; P = 3 phases in PHASES order
      patients/<patient_id>/masks.npy    (P, R, D, H, W) uint8 in {0, 1}; R = REGIONS order
    CACHE_ROOT/current.json              {"cache_key": ...} of the latest completed preprocess

``params_hash`` comes from :meth:`PreprocessConfig.params_hash`; ``input_hash``
hashes the cohort's files, so re-running with the same parameters and data is a
no-op and any change writes a new key. A cache folder appears only once
complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.data.contract import read_cohort_table, typed_cohort_table
from hcc_exp.errors import RunFolderError
from hcc_exp.vocabulary import REGIONS  # noqa: F401  (re-exported: mask channels liver, margin band, tumour)

MANIFEST = "manifest.json"
LABELS = "labels.csv"
PATIENTS_DIR = "patients"
CURRENT = "current.json"
CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessedCohort:
    """A completed cache folder.

    Attributes:
        root: the ``CACHE_ROOT/<cache_key>`` folder.
        manifest: the parsed ``manifest.json``.
        labels: ``labels.csv`` as a DataFrame indexed by position, ``patient_id`` as str.
    """

    root: Path
    manifest: dict[str, Any]
    labels: pd.DataFrame

    @classmethod
    def open(cls, root: Path | str) -> PreprocessedCohort:
        root = Path(root)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise RunFolderError(f"{root} is not a preprocessed cache: {MANIFEST} missing (run `hcc-exp preprocess`)")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        labels = typed_cohort_table(read_cohort_table(root / LABELS))  # ids as text: a patient `NA` stays `NA`
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
        frame = self.labels if split is None else self.labels[self.labels["split"] == split]
        return frame["patient_id"].astype(str).tolist()

    def image_path(self, patient_id: str) -> Path:
        return self.root / PATIENTS_DIR / patient_id / "image.npy"

    def masks_path(self, patient_id: str) -> Path:
        return self.root / PATIENTS_DIR / patient_id / "masks.npy"

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
