"""The cohort contract: the one on-disk format every command reads.

A cohort is a folder::

    COHORT/
      cohort.csv                      one row per patient (columns below)
      images/<patient_id>/
        arterial.nii.gz | arterial/   CT volume: NIfTI, or a folder of DICOM slices
        portal.nii.gz   | portal/
        delayed.nii.gz  | delayed/
        arterial_tumour.nii.gz        binary tumour mask on the phase's grid (one per phase)
        portal_tumour.nii.gz
        delayed_tumour.nii.gz
        liver.nii.gz                  binary liver mask shared by the phases, or
        <phase>_liver.nii.gz          one liver mask per phase (takes precedence)

Times are in days from surgery; events are 0 (censored) / 1 (event). RFS counts
relapse or death, so ``rfs_time_days <= os_time_days`` and a death at
``os_time_days`` implies an RFS event at or before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hcc_exp.config import PHASES

COHORT_CSV = "cohort.csv"
ORACLE_CSV = "oracle.csv"
IMAGES_DIR = "images"
SPLITS: tuple[str, ...] = ("train", "internal", "external")
BCLC_STAGES: tuple[str, ...] = ("0", "A", "B", "C", "D")
TNM_STAGES: tuple[str, ...] = ("I", "II", "III", "IV")
SEXES: tuple[str, ...] = ("F", "M")

OUTCOME_COLUMNS: tuple[str, ...] = (
    "os_time_days",
    "os_event",
    "rfs_time_days",
    "rfs_event",
    "mvi",
)
CLINICAL_COLUMNS: tuple[str, ...] = ("bclc", "tnm", "afp_ng_ml", "tumour_size_mm", "age", "sex")
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "institution", "split", *OUTCOME_COLUMNS, *CLINICAL_COLUMNS)
"""Columns ``cohort.csv`` must have; unknown extra columns are kept and ignored."""

EVENT_COLUMNS: tuple[str, ...] = ("os_event", "rfs_event", "mvi")
TIME_COLUMNS: tuple[str, ...] = ("os_time_days", "rfs_time_days")

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def _first_existing(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class PatientFiles:
    """Resolved paths of one patient's volumes and masks (``None`` where missing).

    Attributes:
        patient_id: the cohort's own identifier.
        folder: ``images/<patient_id>``.
        images: phase -> CT volume (NIfTI file or DICOM series folder).
        tumour_masks: phase -> tumour mask file.
        liver_masks: phase -> liver mask file (the shared one where no per-phase mask exists).
    """

    patient_id: str
    folder: Path
    images: dict[str, Path | None]
    tumour_masks: dict[str, Path | None]
    liver_masks: dict[str, Path | None]

    @classmethod
    def resolve(cls, cohort_dir: Path, patient_id: str, phases: tuple[str, ...] = PHASES) -> PatientFiles:
        folder = Path(cohort_dir) / IMAGES_DIR / str(patient_id)
        images: dict[str, Path | None] = {}
        tumours: dict[str, Path | None] = {}
        livers: dict[str, Path | None] = {}
        shared_liver = _first_existing(folder, "liver")
        for phase in phases:
            nifti = _first_existing(folder, phase)
            dicom_dir = folder / phase
            images[phase] = nifti if nifti is not None else (dicom_dir if dicom_dir.is_dir() else None)
            tumours[phase] = _first_existing(folder, f"{phase}_tumour")
            livers[phase] = _first_existing(folder, f"{phase}_liver") or shared_liver
        return cls(str(patient_id), folder, images, tumours, livers)

    def expected_name(self, kind: str, phase: str) -> Path:
        """Where a missing file was expected (for error messages)."""
        names = {
            "image": f"{phase}.nii.gz (or DICOM folder {phase}/)",
            "tumour": f"{phase}_tumour.nii.gz",
            "liver": f"liver.nii.gz (or {phase}_liver.nii.gz)",
        }
        return self.folder / names[kind]
