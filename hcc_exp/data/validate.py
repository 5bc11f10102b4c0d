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

from hcc_exp.data.io import atomic_path
from hcc_exp.data.patient_checks import (  # noqa: F401  (re-exported: part of `check`)
    PHASE_DIRECTION_TOLERANCE,
    PHASE_GEOMETRY_TOLERANCE_VOXELS,
    TUMOUR_OUTSIDE_LIVER_MAX_FRACTION,
    check_patient_files,
)
from hcc_exp.data.table_checks import (  # noqa: F401  (re-exported: the table rules are part of `check`)
    MAX_FOLLOWUP_DAYS,
    SAFE_PATIENT_ID,
    TRAIN_SPLIT,
    check_table,
    load_cohort_table,
    patient_id_problem,
)
from hcc_exp.errors import (
    CohortError,
    CohortValidationError,
    NoEventsWarning,
)
from hcc_exp.progress import patient_progress
from hcc_exp.vocabulary import PHASES, SPLITS


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
