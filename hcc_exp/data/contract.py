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

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcc_exp.errors import MissingFileError, UnreadableTableError
from hcc_exp.vocabulary import INSTITUTION, PATIENT_ID, PHASES, SPLIT, SPLITS

COHORT_CSV = "cohort.csv"
ORACLE_CSV = "oracle.csv"
IMAGES_DIR = "images"
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
NUMERIC_CLINICAL_COLUMNS: tuple[str, ...] = ("afp_ng_ml", "tumour_size_mm", "age")
NUMERIC_COLUMNS: tuple[str, ...] = (*TIME_COLUMNS, *EVENT_COLUMNS, *NUMERIC_CLINICAL_COLUMNS)
CATEGORICAL_COLUMNS: dict[str, tuple[str, ...]] = {SPLIT: SPLITS, "bclc": BCLC_STAGES, "tnm": TNM_STAGES, "sex": SEXES}
IDENTIFIER_COLUMNS: tuple[str, ...] = (PATIENT_ID, INSTITUTION)
"""Free-text names: only an empty cell is missing (a patient or institution called ``NA`` is a name)."""
STRING_COLUMNS: tuple[str, ...] = (*IDENTIFIER_COLUMNS, *CATEGORICAL_COLUMNS)
"""Columns kept as text (so that ``007`` stays ``007`` and BCLC ``0`` is a stage, not a number)."""
MISSING_MARKERS: frozenset[str] = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A"})
"""Cells read as missing in every column except :data:`IDENTIFIER_COLUMNS` (where only ``""`` is)."""

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def _list_folder(folder: Path) -> tuple[set[str], set[str]]:
    """(file names, folder names) directly in ``folder`` (empty if it does not exist): one listing, not one stat per name."""
    files: set[str] = set()
    folders: set[str] = set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file():
                        files.add(entry.name)
                    elif entry.is_dir():
                        folders.add(entry.name)
                except OSError:
                    continue
    except (FileNotFoundError, NotADirectoryError):
        pass
    return files, folders


def _first_existing(folder: Path, stem: str, files: set[str]) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        if f"{stem}{suffix}" in files:
            return folder / f"{stem}{suffix}"
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
        files, folders = _list_folder(folder)
        shared_liver = _first_existing(folder, "liver", files)
        for phase in phases:
            nifti = _first_existing(folder, phase, files)
            images[phase] = nifti if nifti is not None else (folder / phase if phase in folders else None)
            tumours[phase] = _first_existing(folder, f"{phase}_tumour", files)
            livers[phase] = _first_existing(folder, f"{phase}_liver", files) or shared_liver
        return cls(str(patient_id), folder, images, tumours, livers)

    def expected_name(self, kind: str, phase: str) -> Path:
        """Where a missing file was expected (for error messages)."""
        names = {
            "image": f"{phase}.nii.gz (or DICOM folder {phase}/)",
            "tumour": f"{phase}_tumour.nii.gz",
            "liver": f"liver.nii.gz (or {phase}_liver.nii.gz)",
        }
        return self.folder / names[kind]


# --------------------------------------------------------------------------- the table
def _canonical(column: str, value: str) -> str:
    """The spelling every command sees: ``" Train "`` -> ``"train"``, ``"m"`` -> ``"M"``, ``"iii"`` -> ``"III"``."""
    if column == SPLIT:
        return value.lower()
    return value.upper()


def read_cohort_table(source: Path | str) -> pd.DataFrame:
    """Read ``cohort.csv`` (or a table in its format, e.g. a cache's ``labels.csv``) the one way every command does.

    Every cell is read as text and normalised once, here: surrounding whitespace is stripped
    from column names and values (a UTF-8 byte-order mark too); :data:`IDENTIFIER_COLUMNS` are
    missing only when empty (a patient called ``NA`` is a patient), other columns also on
    :data:`MISSING_MARKERS`; the categorical columns get their canonical case (``" Train "`` ->
    ``"train"``). ``hcc-exp check`` validates exactly this table, and preprocessing, training and
    prediction read it through this function, so whatever ``check`` accepts is what they see.
    Values are not otherwise checked (:mod:`hcc_exp.data.validate` does that).

    Args:
        source: a cohort folder (``cohort.csv`` is read) or the path of the CSV file itself.

    Returns:
        One row per line, every column ``object`` dtype: ``str`` values, ``NaN`` where missing.

    Raises:
        MissingFileError: the file does not exist.
        UnreadableTableError: not a table (empty file, bad quoting, not UTF-8), or two columns
            share a name once stripped.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cohort.csv"
    >>> _ = path.write_text("patient_id , split,os_time_days\\n NA , Train ,NA\\n")
    >>> read_cohort_table(path).iloc[0].to_dict()
    {'patient_id': 'NA', 'split': 'train', 'os_time_days': nan}
    """
    path = Path(source)
    if path.is_dir():
        path = path / COHORT_CSV
    if not path.is_file():
        raise MissingFileError(f"{path.name} does not exist", path=path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error, OSError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UnreadableTableError(f"cannot parse table: {reason}", path=path) from exc
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UnreadableTableError(f"column(s) {', '.join(map(repr, repeated))} appear more than once", path=path)
    table.columns = names
    for column in table.columns:
        values = table[column].str.strip()
        missing = values.eq("") if column in IDENTIFIER_COLUMNS else values.isin(MISSING_MARKERS)
        if column in CATEGORICAL_COLUMNS:
            values = values.map(lambda v, c=column: _canonical(c, v))
        table[column] = values.where(~missing, np.nan).astype(object)
    return table


def typed_cohort_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (from :func:`read_cohort_table`) with :data:`NUMERIC_COLUMNS` as numbers.

    Times (days) and clinical measurements become ``float`` (or ``int`` where every value is
    whole, as pandas parses them); a value that is not a number becomes ``NaN``. Text columns
    are left as they are.
    """
    typed = table.copy()
    for column in NUMERIC_COLUMNS:
        if column in typed.columns:
            typed[column] = pd.to_numeric(typed[column], errors="coerce")
    return typed
