"""``hcc-exp check COHORT``: validate a cohort against the contract and summarise it.

:func:`validate_cohort` looks at everything and reports *every* problem it finds
(each one a :class:`~hcc_exp.errors.CohortError` naming the patient, the file or
the column): the ``cohort.csv`` table first (columns, identifiers, splits,
times, events, clinical values, RFS/OS consistency), then each patient's
volumes and masks (presence, readability, mask grid, binary masks, empty
tumour, tumour inside the liver, geometry shared by the phases). A split with
no OS or RFS event is a warning (:class:`~hcc_exp.errors.NoEventsWarning`),
not an error. Nothing is written.

Other commands call :func:`require_valid` (validate, raise if not ok) so that
none starts on a cohort that fails ``check``, and :func:`load_cohort_table`
for the typed table.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from rich.console import Console
from rich.table import Table

from hcc_exp.config import PHASES
from hcc_exp.data.contract import (
    BCLC_STAGES,
    COHORT_CSV,
    EVENT_COLUMNS,
    IMAGES_DIR,
    REQUIRED_COLUMNS,
    SEXES,
    SPLITS,
    TIME_COLUMNS,
    TNM_STAGES,
    PatientFiles,
)
from hcc_exp.data.io import physical_extent_mm, read_volume, same_grid
from hcc_exp.errors import (
    CohortError,
    CohortValidationError,
    DicomSeriesError,
    DuplicatePatientError,
    EmptyMaskError,
    GridMismatchError,
    InconsistentOutcomeError,
    InvalidEventError,
    InvalidTimeError,
    InvalidValueError,
    MissingColumnError,
    MissingFileError,
    NoEventsWarning,
    NonBinaryMaskError,
    PhaseGeometryError,
    TumourOutsideLiverError,
    UnknownSplitError,
    UnreadableTableError,
    UnreadableVolumeError,
)
from hcc_exp.progress import patient_progress

STRING_COLUMNS: tuple[str, ...] = ("patient_id", "institution", "split", "bclc", "tnm", "sex")
"""Columns read as text (so that ``007`` stays ``007`` and BCLC ``0`` is a stage, not a number)."""
NUMERIC_CLINICAL_COLUMNS: tuple[str, ...] = ("afp_ng_ml", "tumour_size_mm", "age")
CATEGORICAL_COLUMNS: dict[str, tuple[str, ...]] = {"bclc": BCLC_STAGES, "tnm": TNM_STAGES, "sex": SEXES}

TUMOUR_OUTSIDE_LIVER_MAX_FRACTION = 0.5
"""A tumour with more than this fraction of its voxels outside the liver mask is an error."""
PHASE_GEOMETRY_TOLERANCE_VOXELS = 1.0
"""Phases may differ in origin / physical extent by at most this many voxels (of the coarser phase)."""
PHASE_DIRECTION_TOLERANCE = 1e-3
"""Largest allowed difference between two phases' direction cosines."""

SAFE_PATIENT_ID = re.compile(r"[^/\\.\x00-\x1f][^/\\\x00-\x1f]*")
"""What a patient_id may be (it names a folder under images/): no path separator, leading dot or control character."""


# --------------------------------------------------------------------------- report
@dataclass(frozen=True)
class SplitSummary:
    """Counts and outcome rates of one split (or of the whole cohort, ``split == "all"``).

    Attributes:
        split: ``train`` / ``internal`` / ``external``, or ``all``.
        n_patients: patients in the split.
        institutions: institution -> number of patients.
        os_events: deaths (``os_event == 1``).
        rfs_events: relapses or deaths (``rfs_event == 1``).
        mvi_positive: patients with ``mvi == 1``.
        median_followup_days: median follow-up in days by the reverse Kaplan-Meier method on OS
            (censoring as the event); ``inf`` when the reverse curve never reaches 0.5.
    """

    split: str
    n_patients: int
    institutions: dict[str, int]
    os_events: int
    rfs_events: int
    mvi_positive: int
    median_followup_days: float

    @property
    def os_event_rate(self) -> float:
        return self.os_events / self.n_patients if self.n_patients else math.nan

    @property
    def rfs_event_rate(self) -> float:
        return self.rfs_events / self.n_patients if self.n_patients else math.nan

    @property
    def mvi_rate(self) -> float:
        return self.mvi_positive / self.n_patients if self.n_patients else math.nan


@dataclass(frozen=True)
class CohortSummary:
    """What a cohort holds, computed over the patients whose ``cohort.csv`` row is valid.

    Attributes:
        splits: split -> its summary, in ``SPLITS`` order, splits without patients left out.
        overall: the whole cohort (``split == "all"``).
        spacing_range_mm: phase -> (smallest, largest) voxel spacing (x, y, z) in mm over the
            patients whose volume was read; empty when images were not checked.
    """

    splits: dict[str, SplitSummary]
    overall: SplitSummary
    spacing_range_mm: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = field(
        default_factory=dict
    )

    @property
    def patients_per_split(self) -> dict[str, int]:
        return {name: s.n_patients for name, s in self.splits.items()}

    @property
    def patients_per_institution(self) -> dict[str, int]:
        return dict(self.overall.institutions)


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_cohort`.

    Attributes:
        cohort_dir: the cohort folder checked.
        errors: every problem found, in the order found (table first, then patients).
        warnings: problems that do not stop a run (e.g. :class:`NoEventsWarning`).
        summary: counts and rates; ``None`` when ``cohort.csv`` is missing, unreadable or lacks
            required columns.
    """

    cohort_dir: Path
    errors: list[CohortError]
    warnings: list[CohortError]
    summary: CohortSummary | None

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`CohortValidationError` holding every error, if there is any."""
        if self.errors:
            raise CohortValidationError(self.cohort_dir, self.errors)


# --------------------------------------------------------------------------- table
@dataclass
class _TableCheck:
    """The parsed table, its problems, and which rows passed every row-level check."""

    table: pd.DataFrame | None
    errors: list[CohortError]
    valid_rows: pd.Series | None  # bool per row


def _check_table(cohort_dir: Path) -> _TableCheck:
    csv_path = cohort_dir / COHORT_CSV
    if not csv_path.is_file():
        return _TableCheck(None, [MissingFileError("cohort.csv does not exist", path=csv_path)], None)
    try:
        raw = pd.read_csv(csv_path, dtype={c: str for c in STRING_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return _TableCheck(None, [UnreadableTableError(f"cannot parse table: {reason}", path=csv_path)], None)

    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        errors: list[CohortError] = [
            MissingColumnError("required column is missing", column=c, path=csv_path) for c in missing
        ]
        return _TableCheck(None, errors, None)

    table = raw.copy()
    for col in STRING_COLUMNS:
        table[col] = table[col].map(lambda v: v.strip() if isinstance(v, str) else v)
        table[col] = table[col].replace("", np.nan)

    errors = []
    bad = pd.Series(False, index=table.index)

    def row_error(i, exc_type, message: str, column: str) -> None:
        pid = table.at[i, "patient_id"]
        if isinstance(pid, str):
            errors.append(exc_type(message, patient_id=pid, column=column, path=csv_path))
        else:
            errors.append(exc_type(f"line {i + 2}: {message}", column=column, path=csv_path))
        bad.at[i] = True

    # identifiers
    for i, pid in table["patient_id"].items():
        if not isinstance(pid, str):
            row_error(i, InvalidValueError, "patient_id is missing", "patient_id")
        elif not SAFE_PATIENT_ID.fullmatch(pid):
            row_error(
                i,
                InvalidValueError,
                f"patient_id {pid!r} cannot name a folder (no '/', '\\', leading '.')",
                "patient_id",
            )
    counts = table["patient_id"].dropna().value_counts()
    for pid, n in counts[counts > 1].items():
        lines = [str(i + 2) for i in table.index[table["patient_id"] == pid]]
        errors.append(
            DuplicatePatientError(
                f"patient_id appears {n} times (lines {', '.join(lines)})",
                patient_id=pid,
                column="patient_id",
                path=csv_path,
            )
        )
        bad[table["patient_id"] == pid] = True

    for i, split in table["split"].items():
        if split not in SPLITS:
            shown = "missing" if not isinstance(split, str) else repr(split)
            row_error(i, UnknownSplitError, f"split is {shown}; allowed: {', '.join(SPLITS)}", "split")
    for i, inst in table["institution"].items():
        if not isinstance(inst, str):
            row_error(i, InvalidValueError, "institution is missing", "institution")

    # outcomes
    numeric: dict[str, pd.Series] = {}
    for col in (*TIME_COLUMNS, *EVENT_COLUMNS, *NUMERIC_CLINICAL_COLUMNS):
        numeric[col] = pd.to_numeric(table[col], errors="coerce")
    for col in TIME_COLUMNS:
        for i, value in numeric[col].items():
            original = table.at[i, col]
            if pd.isna(original):
                row_error(i, InvalidTimeError, "time is missing", col)
            elif not np.isfinite(value):
                row_error(i, InvalidTimeError, f"time {original!r} is not a finite number of days", col)
            elif value < 0:
                row_error(i, InvalidTimeError, f"time {original!r} is negative", col)
    for col in EVENT_COLUMNS:
        for i, value in numeric[col].items():
            original = table.at[i, col]
            if pd.isna(original):
                row_error(i, InvalidEventError, "value is missing; expected 0 or 1", col)
            elif value not in (0, 1):
                row_error(i, InvalidEventError, f"value {original!r} is not 0 or 1", col)

    # clinical
    for col, allowed in CATEGORICAL_COLUMNS.items():
        for i, value in table[col].items():
            if value not in allowed:
                shown = "missing" if not isinstance(value, str) else repr(value)
                row_error(i, InvalidValueError, f"value is {shown}; allowed: {', '.join(allowed)}", col)
    for col in NUMERIC_CLINICAL_COLUMNS:
        for i, value in numeric[col].items():
            original = table.at[i, col]
            if pd.isna(original):
                row_error(i, InvalidValueError, "value is missing; expected a number", col)
            elif not np.isfinite(value):
                row_error(i, InvalidValueError, f"value {original!r} is not a number", col)
            elif value < 0:
                row_error(i, InvalidValueError, f"value {original!r} is negative", col)

    # RFS counts relapse or death, so it cannot end after OS and a death implies an RFS event.
    for i in table.index:
        os_t, rfs_t = numeric["os_time_days"].at[i], numeric["rfs_time_days"].at[i]
        os_e, rfs_e = numeric["os_event"].at[i], numeric["rfs_event"].at[i]
        if not all(np.isfinite(v) for v in (os_t, rfs_t, os_e, rfs_e)):
            continue
        if os_t < 0 or rfs_t < 0 or os_e not in (0, 1) or rfs_e not in (0, 1):
            continue
        if rfs_t > os_t:
            row_error(
                i,
                InconsistentOutcomeError,
                f"rfs_time_days {rfs_t:g} is after os_time_days {os_t:g}",
                "rfs_time_days",
            )
        elif os_e == 1 and rfs_e != 1:
            row_error(
                i,
                InconsistentOutcomeError,
                f"death at os_time_days {os_t:g} (os_event=1) without an RFS event (rfs_event=0)",
                "rfs_event",
            )

    for col in (*TIME_COLUMNS, *NUMERIC_CLINICAL_COLUMNS):
        table[col] = numeric[col].astype(float)
    for col in EVENT_COLUMNS:
        table[col] = numeric[col].astype(float)
    return _TableCheck(table, errors, ~bad)


def load_cohort_table(cohort_dir: Path | str) -> pd.DataFrame:
    """Read ``cohort.csv`` with typed columns, checking every table-level rule.

    Returns:
        One row per patient: ``patient_id``, ``institution``, ``split``, ``bclc``, ``tnm``,
        ``sex`` as ``str``; times (days), ``afp_ng_ml``, ``tumour_size_mm``, ``age`` as
        ``float``; ``os_event``, ``rfs_event``, ``mvi`` as ``int`` (0/1). Unknown extra
        columns are kept as pandas reads them.

    Raises:
        CohortValidationError: with every table problem (images are not looked at).
    """
    cohort_dir = Path(cohort_dir)
    check = _check_table(cohort_dir)
    if check.errors or check.table is None:
        raise CohortValidationError(cohort_dir, check.errors)
    table = check.table.copy()
    for col in EVENT_COLUMNS:
        table[col] = table[col].astype(int)
    for col in STRING_COLUMNS:
        table[col] = table[col].astype(str)
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------- images
def _read(path: Path, patient_id: str, errors: list[CohortError]) -> sitk.Image | None:
    try:
        return read_volume(path, patient_id=patient_id)
    except UnreadableVolumeError as exc:
        errors.append(UnreadableVolumeError(exc.message, patient_id=patient_id, path=exc.path or path))
        return None
    except DicomSeriesError as exc:  # a refused DICOM series (gap, tilt, scout, ...): reported by name
        errors.append(exc)
        return None


def _mask_array(mask: sitk.Image) -> np.ndarray:
    return sitk.GetArrayViewFromImage(mask)


def _check_binary(mask: sitk.Image, path: Path, patient_id: str, errors: list[CohortError]) -> bool:
    if mask.GetNumberOfComponentsPerPixel() != 1:
        errors.append(
            NonBinaryMaskError(
                f"mask has {mask.GetNumberOfComponentsPerPixel()} components per voxel; expected 1",
                patient_id=patient_id,
                path=path,
            )
        )
        return False
    array = _mask_array(mask)
    other = (array != 0) & (array != 1)
    n_other = int(np.count_nonzero(other))
    if n_other:
        examples = np.unique(array[other])[:5]
        shown = ", ".join(f"{v:g}" for v in examples.astype(float))
        errors.append(
            NonBinaryMaskError(
                f"{n_other} voxel(s) are neither 0 nor 1 (e.g. {shown})", patient_id=patient_id, path=path
            )
        )
        return False
    return True


def _phase_geometry_issues(ref: sitk.Image, other: sitk.Image) -> list[str]:
    """How ``other``'s physical box departs from ``ref``'s beyond the tolerance (empty if it does not)."""
    issues = []
    dir_ref = np.asarray(ref.GetDirection(), dtype=float).reshape(3, 3)
    dir_other = np.asarray(other.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(dir_ref, dir_other, atol=PHASE_DIRECTION_TOLERANCE):
        issues.append("direction differs")
        return issues
    tol = PHASE_GEOMETRY_TOLERANCE_VOXELS * np.maximum(ref.GetSpacing(), other.GetSpacing())
    # Origin offset along the image axes (so the tolerance is in voxels of each axis).
    offset = dir_ref.T @ (
        np.asarray(other.GetOrigin(), dtype=float) - np.asarray(ref.GetOrigin(), dtype=float)
    )
    if np.any(np.abs(offset) > tol):
        issues.append("origin offset along (x, y, z) " + _fmt3(offset) + " mm exceeds " + _fmt3(tol) + " mm")
    extent_diff = physical_extent_mm(other) - physical_extent_mm(ref)
    if np.any(np.abs(extent_diff) > tol):
        issues.append(
            f"physical extent {_fmt3(physical_extent_mm(other))} mm vs {_fmt3(physical_extent_mm(ref))} mm"
        )
    return issues


def _fmt3(values) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"


def check_patient_files(
    cohort_dir: Path, patient_id: str, phases: tuple[str, ...], errors: list[CohortError]
) -> dict[str, tuple[float, float, float]]:
    """Check one patient's files; append problems to ``errors``.

    Returns:
        phase -> voxel spacing (x, y, z) in mm of the volumes that could be read.
    """
    files = PatientFiles.resolve(cohort_dir, patient_id, phases)
    if not files.folder.is_dir():
        errors.append(
            MissingFileError(
                f"patient folder {IMAGES_DIR}/{patient_id}/ does not exist",
                patient_id=patient_id,
                path=files.folder,
            )
        )
        return {}

    images: dict[str, sitk.Image] = {}
    for phase in phases:
        path = files.images[phase]
        if path is None:
            errors.append(
                MissingFileError(
                    f"{phase} image is missing",
                    patient_id=patient_id,
                    path=files.expected_name("image", phase),
                )
            )
            continue
        image = _read(path, patient_id, errors)
        if image is not None:
            images[phase] = image

    # Each mask file is read once, even when shared by the phases (liver.nii.gz).
    masks: dict[Path, sitk.Image | None] = {}
    binary: dict[Path, bool] = {}

    def mask(path: Path, kind: str) -> sitk.Image | None:
        if path not in masks:
            masks[path] = _read(path, patient_id, errors)
            if masks[path] is not None:
                binary[path] = _check_binary(masks[path], path, patient_id, errors)
                if binary[path] and not np.any(_mask_array(masks[path])):
                    errors.append(
                        EmptyMaskError(f"{kind} mask has no voxel set to 1", patient_id=patient_id, path=path)
                    )
                    binary[path] = False  # nothing further to check on an empty mask
        return masks[path]

    if all(files.liver_masks[phase] is None for phase in phases):
        # One problem, not one per phase: neither the shared mask nor any per-phase mask exists.
        errors.append(
            MissingFileError(
                "liver mask is missing",
                patient_id=patient_id,
                path=files.folder / f"liver.nii.gz (or <phase>_liver.nii.gz for each of {', '.join(phases)})",
            )
        )
    # A shared liver mask off the grid of phases that share one grid is one problem, not one per phase.
    off_grid: dict[tuple[str, Path, str], list[str]] = {}
    for phase in phases:
        tumour_path, liver_path = files.tumour_masks[phase], files.liver_masks[phase]
        tumour = liver = None
        if tumour_path is None:
            errors.append(
                MissingFileError(
                    f"{phase} tumour mask is missing",
                    patient_id=patient_id,
                    path=files.expected_name("tumour", phase),
                )
            )
        else:
            tumour = mask(tumour_path, "tumour")
        if liver_path is None:
            if any(files.liver_masks[p] is not None for p in phases):
                errors.append(
                    MissingFileError(
                        f"{phase} liver mask is missing",
                        patient_id=patient_id,
                        path=files.expected_name("liver", phase),
                    )
                )
        else:
            liver = mask(liver_path, "liver")

        image = images.get(phase)
        on_grid: dict[str, bool] = {}
        for kind, m, m_path in (("tumour", tumour, tumour_path), ("liver", liver, liver_path)):
            if m is None or image is None:
                on_grid[kind] = False
                continue
            issues = same_grid(image, m)
            on_grid[kind] = not issues
            if issues:
                off_grid.setdefault((kind, m_path, "; ".join(issues)), []).append(phase)
        # Without a readable image the two masks can still be compared if they share a grid.
        comparable = (on_grid["tumour"] and on_grid["liver"]) or (
            image is None and tumour is not None and liver is not None and not same_grid(tumour, liver)
        )
        if comparable and binary.get(tumour_path) and binary.get(liver_path):
            tumour_array = _mask_array(tumour) != 0
            outside = np.count_nonzero(tumour_array & (_mask_array(liver) == 0))
            fraction = outside / np.count_nonzero(tumour_array)
            if fraction > TUMOUR_OUTSIDE_LIVER_MAX_FRACTION:
                errors.append(
                    TumourOutsideLiverError(
                        f"{fraction:.0%} of the {phase} tumour voxels lie outside the liver mask "
                        f"(at most {TUMOUR_OUTSIDE_LIVER_MAX_FRACTION:.0%} allowed)",
                        patient_id=patient_id,
                        path=tumour_path,
                    )
                )

    for (kind, m_path, issues), on_phases in off_grid.items():
        errors.append(
            GridMismatchError(
                f"{kind} mask is not on the grid of the {', '.join(on_phases)} image: {issues}",
                patient_id=patient_id,
                path=m_path,
            )
        )

    read_phases = [p for p in phases if p in images]
    if read_phases:
        ref_phase = read_phases[0]
        for phase in read_phases[1:]:
            issues = _phase_geometry_issues(images[ref_phase], images[phase])
            if issues:
                errors.append(
                    PhaseGeometryError(
                        f"{phase} image does not cover the same physical box as {ref_phase}: "
                        + "; ".join(issues),
                        patient_id=patient_id,
                        path=files.images[phase],
                    )
                )
    return {phase: tuple(float(s) for s in img.GetSpacing()) for phase, img in images.items()}


# --------------------------------------------------------------------------- summary
def _median_followup_days(time_days: np.ndarray, os_event: np.ndarray) -> float:
    """Reverse Kaplan-Meier median follow-up: censoring is the event, deaths are censored."""
    if len(time_days) == 0:
        return math.nan
    from sksurv.nonparametric import kaplan_meier_estimator

    times, censoring_free = kaplan_meier_estimator(os_event.astype(bool), time_days, reverse=True)
    reached = times[censoring_free <= 0.5]
    return float(reached[0]) if len(reached) else math.inf


def _split_summary(name: str, rows: pd.DataFrame) -> SplitSummary:
    institutions = Counter(rows["institution"].astype(str))
    return SplitSummary(
        split=name,
        n_patients=len(rows),
        institutions=dict(sorted(institutions.items())),
        os_events=int((rows["os_event"] == 1).sum()),
        rfs_events=int((rows["rfs_event"] == 1).sum()),
        mvi_positive=int((rows["mvi"] == 1).sum()),
        median_followup_days=_median_followup_days(
            rows["os_time_days"].to_numpy(float), rows["os_event"].to_numpy(float)
        ),
    )


def _summarise(table: pd.DataFrame, spacings: dict[str, list[tuple[float, float, float]]]) -> CohortSummary:
    splits = {
        name: _split_summary(name, table[table["split"] == name])
        for name in SPLITS
        if (table["split"] == name).any()
    }
    spacing_range = {
        phase: (
            tuple(float(v) for v in np.min(values, axis=0)),
            tuple(float(v) for v in np.max(values, axis=0)),
        )
        for phase, values in spacings.items()
        if values
    }
    return CohortSummary(splits=splits, overall=_split_summary("all", table), spacing_range_mm=spacing_range)


def _no_event_warnings(summary: CohortSummary) -> list[CohortError]:
    warnings: list[CohortError] = []
    for name, s in summary.splits.items():
        for endpoint, events, column in (("OS", s.os_events, "os_event"), ("RFS", s.rfs_events, "rfs_event")):
            if events == 0:
                warnings.append(
                    NoEventsWarning(
                        f"split '{name}' ({s.n_patients} patients) has no {endpoint} event: "
                        f"the {endpoint} C-index is undefined there",
                        column=column,
                    )
                )
    return warnings


# --------------------------------------------------------------------------- entry points
def validate_cohort(
    cohort_dir: Path | str,
    *,
    phases: tuple[str, ...] = PHASES,
    progress: bool = True,
    check_images: bool = True,
) -> ValidationReport:
    """Check a cohort folder against the contract (:mod:`hcc_exp.data.contract`); write nothing.

    Args:
        cohort_dir: the cohort folder (``cohort.csv`` + ``images/``).
        phases: the phases whose volumes and masks must be present.
        progress: show a transient Rich progress bar over patients.
        check_images: also read and check every volume and mask (``False``: table only).

    Returns:
        A report with every error and warning found and, where the table could be read, a summary.
    """
    cohort_dir = Path(cohort_dir)
    check = _check_table(cohort_dir)
    errors = list(check.errors)
    if check.table is None:
        return ValidationReport(cohort_dir, errors, [], None)

    table, valid_rows = check.table, check.valid_rows
    spacings: dict[str, list[tuple[float, float, float]]] = {p: [] for p in phases}
    if check_images:
        patient_ids = [
            pid
            for pid in dict.fromkeys(table["patient_id"])
            if isinstance(pid, str) and SAFE_PATIENT_ID.fullmatch(pid)
        ]
        with patient_progress("checking", enabled=progress) as bar:
            task = bar.add_task("patients", total=len(patient_ids))
            for pid in patient_ids:
                for phase, spacing in check_patient_files(cohort_dir, pid, phases, errors).items():
                    spacings[phase].append(spacing)
                bar.advance(task)

    summary = _summarise(table[valid_rows], spacings)
    return ValidationReport(cohort_dir, errors, _no_event_warnings(summary), summary)


def require_valid(
    cohort_dir: Path | str, phases: tuple[str, ...] = PHASES, *, progress: bool = True
) -> ValidationReport:
    """Validate ``cohort_dir`` and raise if it has any error (commands call this before starting).

    Raises:
        CohortValidationError: holding every problem found.
    """
    report = validate_cohort(cohort_dir, phases=phases, progress=progress)
    report.raise_for_errors()
    return report


# --------------------------------------------------------------------------- rendering
def _where(problem: CohortError, cohort_dir: Path) -> str:
    parts = []
    if problem.column is not None:
        parts.append(f"column {problem.column}")
    if problem.path is not None:
        path = Path(problem.path)
        try:
            path = path.relative_to(cohort_dir)
        except ValueError:
            pass
        parts.append(str(path))
    return "\n".join(parts)


def _problem_table(title: str, problems: list[CohortError], cohort_dir: Path, style: str) -> Table:
    table = Table(title=title, title_style=style, show_lines=False)
    table.add_column("problem", style=style, no_wrap=True)
    table.add_column("patient", no_wrap=True)
    table.add_column("column / file")
    table.add_column("what is wrong")
    for p in problems:
        table.add_row(type(p).__name__, p.patient_id or "", _where(p, cohort_dir), p.message)
    return table


def _rate(count: int, n: int) -> str:
    return f"{count} ({count / n:.0%})" if n else "-"


def _days(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "not reached"
    return f"{value:.0f}"


def render_report(report: ValidationReport, console: Console) -> None:
    """Print the report: the list of problems when there are errors, the cohort summary otherwise."""
    if report.errors:
        console.print(
            _problem_table(
                f"{len(report.errors)} problem(s) in {report.cohort_dir}",
                report.errors,
                report.cohort_dir,
                "red",
            )
        )
    elif report.summary is not None:
        s = report.summary
        table = Table(title=f"Cohort {report.cohort_dir}: OK")
        for col in (
            "split",
            "patients",
            "institutions",
            "OS events",
            "RFS events",
            "MVI+",
            "median follow-up (d)",
        ):
            table.add_column(col, justify="left" if col in ("split", "institutions") else "right")
        for row in (*s.splits.values(), s.overall):
            table.add_row(
                row.split,
                str(row.n_patients),
                ", ".join(f"{k}: {v}" for k, v in row.institutions.items()),
                _rate(row.os_events, row.n_patients),
                _rate(row.rfs_events, row.n_patients),
                _rate(row.mvi_positive, row.n_patients),
                _days(row.median_followup_days),
                end_section=row.split == list(s.splits)[-1] if s.splits else False,
            )
        console.print(table)
        if s.spacing_range_mm:
            spacing = Table(title="Voxel spacing (x, y, z) in mm")
            spacing.add_column("phase")
            spacing.add_column("smallest", justify="right")
            spacing.add_column("largest", justify="right")
            for phase, (low, high) in s.spacing_range_mm.items():
                spacing.add_row(
                    phase, " x ".join(f"{v:.3g}" for v in low), " x ".join(f"{v:.3g}" for v in high)
                )
            console.print(spacing)
    if report.warnings:
        console.print(
            _problem_table(f"{len(report.warnings)} warning(s)", report.warnings, report.cohort_dir, "yellow")
        )
