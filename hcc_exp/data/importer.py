"""``hcc-exp import SRC DST``: turn raw data into the cohort layout (:mod:`hcc_exp.data.contract`).

Raw data (``SRC``) is one folder per patient, holding per phase either a DICOM
series folder or a NIfTI file, plus NIfTI masks, and one clinical table (CSV or
XLSX). A YAML mapping file says which file is which and how the clinical
columns are called::

    clinical: clinical.xlsx            # CSV, TSV or XLSX, relative to SRC (or absolute)
    sheet: 0                           # XLSX only: sheet name or index (default 0)
    columns:                           # our column -> their column
      patient_id: "Patient ID"
      institution: "Centre"
      split: "Cohort"
      os_time_days: "OS_days"
      os_event: "Death"
      rfs_time_days: "RFS_days"
      rfs_event: "Recurrence or death"
      mvi: "MVI"
      bclc: "BCLC"
      tnm: "TNM"
      afp_ng_ml: "AFP"
      tumour_size_mm: "Size (mm)"
      age: "Age"
      sex: "Sex"
    values:                            # optional recoding: our column -> {their value: our value}
      split: {"training": "train", "validation": "internal", "test": "external"}
      sex: {"male": "M", "female": "F"}
      os_event: {"yes": 1, "no": 0}    # quote words: YAML reads bare yes/no as booleans
    phases:                            # our phase -> file / folder stem in each patient folder
      arterial: "ART"                  #   ART/ (a DICOM series) or ART.nii.gz / ART.nii
      portal: "PV"
      delayed: "DEL"
    masks:                             # NIfTI file stems (.nii.gz / .nii) in each patient folder
      tumour: "{phase}_tumour"         # {phase}: the phase's stem above (ART), {name}: ours (arterial)
      liver: "liver"                   # no placeholder: one liver mask shared by the phases
    folder_column: "Folder"            # optional: the column naming each patient's folder in SRC;
                                       #   default: the folder is named by the patient's raw ID
    drop_columns: ["Name", "DOB"]      # optional: their columns not to copy into cohort.csv

A required column (``contract.REQUIRED_COLUMNS``) missing from ``columns`` is
looked up in the table under its own name. Their other columns are copied to
``cohort.csv`` under their own names (except ``drop_columns``, the
``folder_column``, and a name that clashes with one of ours). A mask template
without placeholder is one file used for every phase (``liver`` then becomes
``liver.nii.gz``, ``tumour`` is copied to each ``<phase>_tumour.nii.gz``).

Only geometry and pixel values leave the raw files: DICOM series are read with
:func:`hcc_exp.data.io.read_volume` (no header dictionary), NIfTI headers are
stripped (:func:`hcc_exp.data.io.strip_metadata`), and no name, date or UID is
written or logged. Masks holding only 0 and 1 are stored as ``uint8``.

The cohort is built in a temporary sibling of ``DST`` and renamed onto it only
after :func:`hcc_exp.data.validate.validate_cohort` passes; a failed import
leaves ``DST`` as it was (absent if it was) and raises
:class:`~hcc_exp.errors.CohortValidationError` naming each patient, column and
source file concerned.
"""

from __future__ import annotations

import math
import os
import shutil
import string
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hcc_exp.config import PHASES
from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR, NIFTI_SUFFIXES, REQUIRED_COLUMNS
from hcc_exp.data.io import read_volume, strip_metadata, write_nifti
from hcc_exp.data.validate import SAFE_PATIENT_ID, ValidationReport, validate_cohort
from hcc_exp.errors import (
    CohortError,
    CohortImportError,
    CohortValidationError,
    DuplicatePatientError,
    InvalidValueError,
    MissingColumnError,
    MissingFileError,
    UnreadableTableError,
    UnreadableVolumeError,
)
from hcc_exp.progress import patient_progress

_TEMPLATE_FIELDS = frozenset({"phase", "name"})

CellValue = str | int | float | bool


def _template_fields(template: str) -> set[str]:
    return {fname for _, fname, _, _ in string.Formatter().parse(template) if fname is not None}


def _check_relative_name(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    parts = Path(value).parts
    if Path(value).is_absolute() or ".." in parts:
        raise ValueError(f"{what} {value!r} must be a name inside the patient folder")
    return value


class MaskNames(BaseModel):
    """File stems of the masks in each patient folder (``.nii.gz`` / ``.nii`` added).

    ``{phase}`` stands for the phase's stem in :attr:`ImportMapping.phases` (e.g. ``ART``),
    ``{name}`` for our phase name (e.g. ``arterial``).
    """

    model_config = ConfigDict(extra="forbid")

    tumour: str = "{phase}_tumour"
    liver: str = "liver"

    @field_validator("tumour", "liver")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            unknown = _template_fields(v) - _TEMPLATE_FIELDS
        except ValueError as exc:
            raise ValueError(f"bad template {v!r}: {exc}") from exc
        if unknown:
            raise ValueError(
                f"template {v!r} uses unknown placeholder(s) {sorted(unknown)}; allowed: {{phase}}, {{name}}"
            )
        return _check_relative_name(v, "mask name")

    def per_phase(self, kind: str) -> bool:
        """Whether the ``kind`` (``tumour`` / ``liver``) mask is one file per phase."""
        return bool(_template_fields(getattr(self, kind)))

    def stem(self, kind: str, phase: str, phase_stem: str) -> str:
        return getattr(self, kind).format(phase=phase_stem, name=phase)


class ImportMapping(BaseModel):
    """How raw data maps onto the cohort contract (see the module docstring for the YAML format).

    Attributes:
        clinical: clinical table (``.csv``, ``.tsv``, ``.xlsx``), relative to SRC or absolute.
        sheet: XLSX sheet name or 0-based index.
        columns: our column -> their column (required columns default to their own name).
        values: our column -> {their value: our value}; values not listed are kept as they are.
        phases: our phase -> stem of the DICOM folder or NIfTI file in each patient folder.
        masks: mask file stems.
        folder_column: their column naming each patient's folder; default: the raw patient ID.
        drop_columns: their columns not copied into ``cohort.csv``.
    """

    model_config = ConfigDict(extra="forbid")

    clinical: Path
    sheet: str | int = 0
    columns: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[CellValue, CellValue]] = Field(default_factory=dict)
    phases: dict[str, str]
    masks: MaskNames = Field(default_factory=MaskNames)
    folder_column: str | None = None
    drop_columns: list[str] = Field(default_factory=list)

    @field_validator("phases")
    @classmethod
    def _all_phases(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(PHASES))
        missing = [p for p in PHASES if p not in v]
        if unknown or missing:
            raise ValueError(f"phases must map exactly {list(PHASES)}; unknown {unknown}, missing {missing}")
        for stem in v.values():
            _check_relative_name(stem, "phase stem")
        return {p: v[p] for p in PHASES}

    @model_validator(mode="after")
    def _values_name_our_columns(self) -> ImportMapping:
        ours = set(REQUIRED_COLUMNS) | set(self.columns)
        unknown = sorted(set(self.values) - ours)
        if unknown:
            raise ValueError(f"values: unknown column(s) {unknown}; recode only columns of cohort.csv")
        return self

    def their_column(self, ours: str) -> str:
        return self.columns.get(ours, ours)

    @classmethod
    def from_yaml(cls, path: Path | str) -> ImportMapping:
        """Load a mapping file.

        Raises:
            CohortImportError: the file is missing, not YAML, or does not match the schema.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CohortImportError(f"cannot read mapping file {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise CohortImportError(f"mapping file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise CohortImportError(
                f"mapping file {path} must hold a mapping (clinical, columns, phases, ...)"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            raise CohortImportError(f"mapping file {path}: {problems}") from exc


# --------------------------------------------------------------------------- clinical table
def _canonical(value: Any) -> str | None:
    """Text of a table cell as written to cohort.csv (``None`` for an empty cell).

    Integral numbers lose their ``.0`` (Excel reads 1 as 1.0 in a column with blanks), so that
    identifiers and event indicators come out as ``7`` and ``1``.
    """
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class _Recoder:
    """Recode one column's cells: exact text match first, then numeric match (``1`` == ``1.0``)."""

    def __init__(self, mapping: dict[CellValue, CellValue]) -> None:
        self.by_text = {_canonical(k): v for k, v in mapping.items()}
        self.by_number: dict[float, CellValue] = {}
        for k, v in mapping.items():
            if not isinstance(k, bool) and (number := _as_number(_canonical(k) or "")) is not None:
                self.by_number[number] = v

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        if text in self.by_text:
            return _canonical(self.by_text[text])
        number = _as_number(text)
        if number is not None and number in self.by_number:
            return _canonical(self.by_number[number])
        return text


def _read_clinical(src: Path, path: Path, sheet: str | int) -> pd.DataFrame:
    if not path.is_file():
        raise CohortValidationError(src, [MissingFileError("clinical table does not exist", path=path)])
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            table = pd.read_excel(path, sheet_name=sheet, dtype=object, keep_default_na=False)  # `NA` is a name
        elif suffix in (".csv", ".tsv", ".txt"):
            table = pd.read_csv(path, dtype=str, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False)
        else:
            raise CohortImportError(
                f"clinical table {path}: unsupported format {suffix!r} (use .csv, .tsv or .xlsx)"
            )
    except CohortImportError:
        raise
    except Exception as exc:  # pandas / openpyxl raise many types for a bad file
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CohortValidationError(
            src, [UnreadableTableError(f"cannot read clinical table: {reason}", path=path)]
        ) from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _build_table(
    src: Path, raw: pd.DataFrame, mapping: ImportMapping, clinical_path: Path
) -> tuple[pd.DataFrame, list[str]]:
    """Our cohort table (all cells text or ``None``) and each row's patient folder name.

    Raises:
        CohortValidationError: a mapped column is absent from the clinical table.
    """
    ours = list(dict.fromkeys([*REQUIRED_COLUMNS, *mapping.columns]))
    wanted = {c: mapping.their_column(c) for c in ours}
    if mapping.folder_column is not None:
        wanted_folder = {"(folder)": mapping.folder_column}
    else:
        wanted_folder = {}
    missing = [
        MissingColumnError(
            f"clinical column '{theirs}' not found (columns: {', '.join(map(str, raw.columns))})",
            column=our,
            path=clinical_path,
        )
        for our, theirs in {**wanted, **wanted_folder}.items()
        if theirs not in raw.columns
    ]
    if missing:
        raise CohortValidationError(src, missing)

    out = pd.DataFrame(index=raw.index)
    for our, theirs in wanted.items():
        cells = raw[theirs].map(_canonical)
        if our in mapping.values:
            cells = cells.map(_Recoder(mapping.values[our]))
        out[our] = cells
    used = set(wanted.values()) | set(mapping.drop_columns) | set(wanted_folder.values())
    for theirs in raw.columns:
        if theirs not in used and theirs not in out.columns:
            out[theirs] = raw[theirs].map(_canonical)
    source = raw[mapping.folder_column] if mapping.folder_column else raw[mapping.their_column("patient_id")]
    folders = [_canonical(v) or "" for v in source]
    return out.reset_index(drop=True), folders


# --------------------------------------------------------------------------- volumes
def _find_volume(folder: Path, stem: str, *, allow_dicom: bool) -> Path | None:
    if allow_dicom and (folder / stem).is_dir():
        return folder / stem
    for suffix in NIFTI_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _clean_mask(mask: sitk.Image) -> sitk.Image:
    """Pixels and geometry only; ``uint8`` when the values are exactly 0 / 1."""
    mask = strip_metadata(mask)
    if mask.GetNumberOfComponentsPerPixel() == 1 and mask.GetPixelID() != sitk.sitkUInt8:
        array = sitk.GetArrayViewFromImage(mask)
        if not np.any((array != 0) & (array != 1)):
            mask = sitk.Cast(mask, sitk.sitkUInt8)
    return mask


@dataclass(frozen=True)
class _Copy:
    """One file to write: ``target`` (name in the patient's cohort folder) from ``source``."""

    target: str
    source: Path
    is_image: bool


def _plan_patient(
    src_folder: Path, patient_id: str, mapping: ImportMapping, errors: list[CohortError]
) -> list[_Copy]:
    """Locate one patient's volumes and masks (nothing is read); append what is missing to ``errors``."""
    if not src_folder.is_dir():
        errors.append(MissingFileError("patient folder not found", patient_id=patient_id, path=src_folder))
        return []
    plan: list[_Copy] = []

    def add(what: str, stem: str, target: str, is_image: bool) -> None:
        source = _find_volume(src_folder, stem, allow_dicom=is_image)
        if source is None:
            dicom = f"a DICOM series folder {stem}/ or " if is_image else ""
            errors.append(
                MissingFileError(
                    f"{what} not found: expected {dicom}{stem}.nii.gz or {stem}.nii",
                    patient_id=patient_id,
                    path=src_folder / stem,
                )
            )
        else:
            plan.append(_Copy(target, source, is_image))

    for phase, stem in mapping.phases.items():
        add(f"{phase} image", stem, f"{phase}.nii.gz", True)
    for phase, phase_stem in mapping.phases.items():
        add(
            f"{phase} tumour mask",
            mapping.masks.stem("tumour", phase, phase_stem),
            f"{phase}_tumour.nii.gz",
            False,
        )
    if mapping.masks.per_phase("liver"):
        for phase, phase_stem in mapping.phases.items():
            add(
                f"{phase} liver mask",
                mapping.masks.stem("liver", phase, phase_stem),
                f"{phase}_liver.nii.gz",
                False,
            )
    else:
        first = next(iter(mapping.phases))
        add("liver mask", mapping.masks.stem("liver", first, mapping.phases[first]), "liver.nii.gz", False)
    return plan


def _write_patient(
    plan: list[_Copy], out_folder: Path, patient_id: str, errors: list[CohortError]
) -> dict[Path, Path]:
    """Read each source once and write its targets; append unreadable volumes to ``errors``.

    Returns:
        output file -> source file or DICOM folder, for what was written.
    """
    out_folder.mkdir(parents=True, exist_ok=True)
    uses = Counter(copy.source for copy in plan)
    volumes: dict[Path, sitk.Image | None] = {}
    written: dict[Path, Path] = {}
    for copy in plan:
        if copy.source not in volumes:
            try:
                volume = read_volume(copy.source, patient_id=patient_id)
                volumes[copy.source] = strip_metadata(volume) if copy.is_image else _clean_mask(volume)
            except UnreadableVolumeError as exc:
                errors.append(UnreadableVolumeError(exc.message, patient_id=patient_id, path=copy.source))
                volumes[copy.source] = None
        volume = volumes[copy.source]
        if volume is not None:
            write_nifti(volume, out_folder / copy.target)
            written[out_folder / copy.target] = copy.source
        uses[copy.source] -= 1
        if uses[copy.source] == 0:
            volumes[copy.source] = None  # CT volumes are large: keep only what is still to be written
    return written


# --------------------------------------------------------------------------- entry point
def _restate(problem: CohortError, *, path: str | None, message: str | None = None) -> CohortError:
    return type(problem)(
        problem.message if message is None else message,
        patient_id=problem.patient_id,
        path=path,
        column=problem.column,
    )


def _prepare_destination(src: Path, dst: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise CohortImportError(f"destination {dst} exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()):
        if not overwrite:
            raise CohortImportError(
                f"destination {dst} exists and is not empty (pass --overwrite, or overwrite=True from Python, to replace it)"
            )
        src_resolved, dst_resolved = src.resolve(), dst.resolve()
        if src_resolved == dst_resolved or dst_resolved in src_resolved.parents:
            raise CohortImportError(f"destination {dst} holds the source {src}; refusing to overwrite it")


def _move_into_place(tmp: Path, dst: Path) -> None:
    """Rename ``tmp`` onto ``dst``; an existing ``dst`` is set aside first and removed after."""
    old = None
    if dst.exists():
        if not any(dst.iterdir()):
            dst.rmdir()
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.replaced-", dir=dst.parent))
            os.replace(dst, old / "cohort")
    try:
        os.replace(tmp, dst)
    except OSError:
        if old is not None:
            os.replace(old / "cohort", dst)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def import_cohort(
    src: Path | str,
    dst: Path | str,
    mapping: ImportMapping | Path | str,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> ValidationReport:
    """Import raw data from ``src`` into a cohort at ``dst`` (see the module docstring).

    Args:
        src: raw data folder (patient folders and the clinical table).
        dst: cohort folder to create; must be absent or empty unless ``overwrite``.
        mapping: an :class:`ImportMapping` or the path of its YAML file.
        progress: show transient Rich progress bars (import, then validation).
        overwrite: replace a non-empty ``dst`` (only once the new cohort is valid).

    Returns:
        The validation report of the new cohort (``cohort_dir == dst``).

    Raises:
        CohortImportError: bad mapping file, or a destination that cannot be written.
        CohortValidationError: missing columns, patient folders or files, unreadable volumes, or
            any problem ``hcc-exp check`` finds in the result; paths name the source files.
    """
    src, dst = Path(src), Path(dst)
    if not isinstance(mapping, ImportMapping):
        mapping = ImportMapping.from_yaml(mapping)
    if not src.is_dir():
        raise CohortImportError(f"source folder {src} does not exist")
    _prepare_destination(src, dst, overwrite)

    clinical_path = mapping.clinical if mapping.clinical.is_absolute() else src / mapping.clinical
    table, folders = _build_table(
        src, _read_clinical(src, clinical_path, mapping.sheet), mapping, clinical_path
    )

    # Locate every file first, so that a missing one is reported before anything is read or written.
    errors: list[CohortError] = []
    plans = {
        patient_id: _plan_patient(src / folder, patient_id, mapping, errors)
        for patient_id, folder in _importable_patients(table, folders, clinical_path, errors)
    }
    if errors:
        raise CohortValidationError(src, errors)

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.importing-", dir=dst.parent))
    try:
        sources: dict[Path, Path] = {tmp / COHORT_CSV: clinical_path}
        with patient_progress("importing", enabled=progress) as bar:
            task = bar.add_task("patients", total=len(plans))
            for patient_id, plan in plans.items():
                sources.update(_write_patient(plan, tmp / IMAGES_DIR / patient_id, patient_id, errors))
                bar.advance(task)
        if errors:
            raise CohortValidationError(src, errors)

        table.to_csv(tmp / COHORT_CSV, index=False)
        report = validate_cohort(tmp, phases=tuple(mapping.phases), progress=progress)
        restated = _restate_report(report, tmp, dst, sources, mapping)
        if restated.errors:
            raise CohortValidationError(src, restated.errors)
        _move_into_place(tmp, dst)
        return restated
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _importable_patients(
    table: pd.DataFrame, folders: list[str], clinical_path: Path, errors: list[CohortError]
) -> list[tuple[str, str]]:
    """(patient_id, source folder name) of the rows whose images can be imported.

    A row without an identifier, with one that cannot name a folder, or repeating an earlier
    one is reported here; the rest of its checks happen in validation.
    """
    patients: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, (patient_id, folder) in enumerate(zip(table["patient_id"], folders, strict=True)):
        if patient_id is None:
            errors.append(
                InvalidValueError(
                    f"line {i + 2}: patient_id is missing", column="patient_id", path=clinical_path
                )
            )
        elif not SAFE_PATIENT_ID.fullmatch(patient_id):
            errors.append(
                InvalidValueError(
                    "patient_id cannot name a folder (no '/', '\\', leading '.')",
                    patient_id=patient_id,
                    column="patient_id",
                    path=clinical_path,
                )
            )
        elif patient_id in seen:
            errors.append(
                DuplicatePatientError(
                    "patient_id appears more than once",
                    patient_id=patient_id,
                    column="patient_id",
                    path=clinical_path,
                )
            )
        elif not folder or Path(folder).is_absolute() or ".." in Path(folder).parts:
            errors.append(
                InvalidValueError(
                    f"patient folder name {folder!r} is not a folder inside the source",
                    patient_id=patient_id,
                    path=clinical_path,
                )
            )
        else:
            seen.add(patient_id)
            patients.append((patient_id, folder))
    return patients


def _restate_report(
    report: ValidationReport, tmp: Path, dst: Path, sources: dict[Path, Path], mapping: ImportMapping
) -> ValidationReport:
    """The report with paths naming the source files (errors) or ``dst`` (warnings)."""

    def source_of(problem: CohortError) -> CohortError:
        message = problem.message
        if problem.path is not None and Path(problem.path) == tmp / COHORT_CSV and problem.column is not None:
            theirs = mapping.their_column(problem.column)
            if theirs != problem.column:
                message = f"{message} (clinical column '{theirs}')"
        if problem.path is None:
            return _restate(problem, path=None, message=message)
        path = Path(problem.path)
        if path in sources:
            return _restate(problem, path=str(sources[path]), message=message)
        return _restate(problem, path=problem.path.replace(str(tmp), str(dst)), message=message)

    def in_dst(problem: CohortError) -> CohortError:
        return _restate(
            problem, path=None if problem.path is None else problem.path.replace(str(tmp), str(dst))
        )

    return ValidationReport(
        cohort_dir=dst,
        errors=[source_of(e) for e in report.errors],
        warnings=[in_dst(w) for w in report.warnings],
        summary=report.summary,
    )
