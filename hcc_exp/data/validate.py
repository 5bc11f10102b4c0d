"""``hcc-exp check COHORT``: validate a cohort against the contract and summarise it.

:func:`validate_cohort` looks at everything and reports *every* problem it finds
(each one a :class:`~hcc_exp.errors.CohortError` naming the patient, the file or
the column): the ``cohort.csv`` table first (columns, identifiers, splits,
times, events, clinical values, RFS/OS consistency), then each patient's
volumes and masks (presence, readability, mask grid, binary masks, empty
tumour, tumour inside the liver, geometry shared by the phases), and what
training needs (a ``train`` and an evaluation split, events in ``train``,
plausible times). Every NIfTI file is verified in full (gzip CRC, length,
finite voxels; :mod:`hcc_exp.data.volume_checks`) and each phase must be
plausible CT. An evaluation split with no OS or RFS event is a warning
(:class:`~hcc_exp.errors.NoEventsWarning`), not an error. Nothing is written
into the cohort; the report is rendered by :mod:`hcc_exp.reporting.console`
and its full list written with :meth:`ValidationReport.write_problem_list`.

Other commands call :func:`require_valid` (validate, raise if not ok) so that
none starts on a cohort that fails ``check``, and :func:`load_cohort_table`
for the typed table.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from hcc_exp.data.contract import IMAGES_DIR, PatientFiles
from hcc_exp.data.io import atomic_path, physical_extent_mm, read_volume, same_grid
from hcc_exp.data.table_checks import (  # noqa: F401  (re-exported: the table rules are part of `check`)
    MAX_FOLLOWUP_DAYS,
    SAFE_PATIENT_ID,
    TRAIN_SPLIT,
    check_table,
    load_cohort_table,
    patient_id_problem,
)
from hcc_exp.data.volume_checks import ct_problem, shape_problem, verify_volume_file
from hcc_exp.errors import (
    CohortError,
    CohortValidationError,
    DicomSeriesError,
    EmptyMaskError,
    GridMismatchError,
    ImplausibleVolumeError,
    MissingFileError,
    NoEventsWarning,
    NonBinaryMaskError,
    PhaseGeometryError,
    TumourOutsideLiverError,
    UnreadableVolumeError,
)
from hcc_exp.progress import patient_progress
from hcc_exp.vocabulary import PHASES, SPLITS

TUMOUR_OUTSIDE_LIVER_MAX_FRACTION = 0.5
"""A tumour with more than this fraction of its voxels outside the liver mask is an error."""
PHASE_GEOMETRY_TOLERANCE_VOXELS = 1.0
"""Phases may differ in origin / physical extent by at most this many voxels (of the coarser phase)."""
PHASE_DIRECTION_TOLERANCE = 1e-3
"""Largest allowed difference between two phases' direction cosines."""

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

    def more_than(self, rows_per_class: int) -> bool:
        """Whether some problem class (error or warning) has more than ``rows_per_class`` members."""
        counts = Counter(type(p) for p in (*self.errors, *self.warnings))
        return any(n > rows_per_class for n in counts.values())

    def write_problem_list(self, path: Path | str) -> Path:
        """Write every error and warning to a CSV file (atomically); the console shows only the first few.

        Columns: ``severity`` (error / warning), ``problem`` (the error class), ``patient_id``,
        ``column``, ``file``, ``message``; one row per problem, in the order found. Memory and time
        are linear in the number of problems.
        """
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(PROBLEM_LIST_COLUMNS)
            for severity, problems in (("error", self.errors), ("warning", self.warnings)):
                for p in problems:
                    writer.writerow(
                        [severity, type(p).__name__, p.patient_id or "", p.column or "", p.path or "", p.message]
                    )
        return path


PROBLEM_LIST_COLUMNS: tuple[str, ...] = ("severity", "problem", "patient_id", "column", "file", "message")
PROBLEM_LIST_NAME = "hcc-exp-check-problems.csv"


def default_problem_list_path(cohort_dir: Path | str, cwd: Path | str | None = None) -> Path:
    """Where ``check`` writes the full problem list when none is named: the working folder, unless
    that lies inside the cohort or inside a DVC-tracked folder (a report must not change tracked
    data), in which case the user cache (``$HCC_EXP_CACHE_DIR/reports/``)."""
    from hcc_exp.data.volume_checks import user_cache_dir

    cwd = Path(cwd if cwd is not None else Path.cwd()).resolve()
    cohort = Path(cohort_dir).resolve()
    name = f"hcc-exp-check-{cohort.name or 'cohort'}-problems.csv"
    if cwd == cohort or cohort in cwd.parents or _dvc_tracked(cwd):
        return user_cache_dir() / "reports" / name
    return cwd / name


def _dvc_tracked(folder: Path) -> bool:
    """Whether ``folder`` is (inside) a folder tracked by a ``<name>.dvc`` file or a dvc.yaml output."""
    import yaml

    for candidate in (folder, *folder.parents):
        if candidate.parent != candidate and (candidate.parent / f"{candidate.name}.dvc").is_file():
            return True
        stages_file = candidate / "dvc.yaml"
        if not stages_file.is_file():
            continue
        try:
            stages = (yaml.safe_load(stages_file.read_text(encoding="utf-8")) or {}).get("stages", {})
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        for stage in stages.values() if isinstance(stages, dict) else ():
            for out in (stage or {}).get("outs", []) if isinstance(stage, dict) else []:
                out_path = next(iter(out)) if isinstance(out, dict) else out
                tracked = (candidate / str(out_path)).resolve()
                if folder == tracked or tracked in folder.parents:
                    return True
    return False


# --------------------------------------------------------------------------- images
def _read(path: Path, patient_id: str, errors: list[CohortError], *, phase_image: bool = False) -> sitk.Image | None:
    """Verify, read and check one volume; append its problems to ``errors``.

    Returns:
        The image, or None when it cannot be trusted at all (corrupt, non-finite, not 3D scalar).
        A phase volume that is not plausible CT is reported and still returned, so its grid is checked.
    """
    try:
        verify_volume_file(path, patient_id=patient_id)
        image = read_volume(path, patient_id=patient_id)
    except (UnreadableVolumeError, ImplausibleVolumeError) as exc:
        errors.append(type(exc)(exc.message, patient_id=patient_id, path=exc.path or path))
        return None
    except DicomSeriesError as exc:  # a refused DICOM series (gap, tilt, scout, ...): reported by name
        errors.append(exc)
        return None
    problem = shape_problem(image, patient_id=patient_id, path=path)
    if problem is not None:
        errors.append(problem)
        return None
    if phase_image and (problem := ct_problem(image, patient_id=patient_id, path=path)) is not None:
        errors.append(problem)
    return image


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
        image = _read(path, patient_id, errors, phase_image=True)
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
        if name == TRAIN_SPLIT:
            continue  # no event in training is an error (NoTrainingEventsError), not a warning
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
    check = check_table(cohort_dir)
    errors = list(check.errors)
    if check.table is None:
        return ValidationReport(cohort_dir, errors, [], None)

    table, valid_rows = check.table, check.valid_rows
    spacings: dict[str, list[tuple[float, float, float]]] = {p: [] for p in phases}
    if check_images:
        patient_ids = [
            pid
            for pid in dict.fromkeys(table["patient_id"])
            if isinstance(pid, str) and patient_id_problem(pid) is None
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
