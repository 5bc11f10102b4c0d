"""The ``cohort.csv`` rules of ``hcc-exp check``: identifiers, splits, outcomes, clinical values, what training needs.

:func:`check_table` reads the table through :func:`hcc_exp.data.contract.read_cohort_table`
(the one normalisation every command shares) and reports every problem it finds, each a
:class:`~hcc_exp.errors.CohortError` naming the patient (or the line) and the column.
:mod:`hcc_exp.data.validate` adds the images and the summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcc_exp.data.contract import (
    CATEGORICAL_COLUMNS,
    COHORT_CSV,
    EVENT_COLUMNS,
    NUMERIC_CLINICAL_COLUMNS,
    NUMERIC_COLUMNS,
    REQUIRED_COLUMNS,
    STRING_COLUMNS,
    TIME_COLUMNS,
    read_cohort_table,
)
from hcc_exp.errors import (
    CohortError,
    CohortValidationError,
    DuplicatePatientError,
    EmptyCohortError,
    ImplausibleTimeError,
    InconsistentOutcomeError,
    InvalidEventError,
    InvalidTimeError,
    InvalidValueError,
    MissingColumnError,
    MissingFileError,
    MissingSplitError,
    NoTrainingEventsError,
    UnknownSplitError,
    UnreadableTableError,
    UnsafePatientIdError,
)
from hcc_exp.vocabulary import ENDPOINTS, INSTITUTION, PATIENT_ID, SPLIT, SPLITS, event_column

CLINICAL_CATEGORIES: dict[str, tuple[str, ...]] = {c: v for c, v in CATEGORICAL_COLUMNS.items() if c != SPLIT}
TRAIN_SPLIT = "train"
EVALUATION_SPLITS: tuple[str, ...] = tuple(s for s in SPLITS if s != TRAIN_SPLIT)
MAX_FOLLOWUP_YEARS = 100
MAX_FOLLOWUP_DAYS = MAX_FOLLOWUP_YEARS * 365.25
"""A survival time beyond this (days) is not a follow-up (1e300, or a time given in other units than days)."""

_FORBIDDEN = r"/\\\x00-\x1f\x7f<>:\"|?*"
SAFE_PATIENT_ID = re.compile(rf"[^.{_FORBIDDEN}](?:[^{_FORBIDDEN}]*[^.{_FORBIDDEN}])?")
"""What a patient_id may be (it names a folder under images/): no path separator, control or reserved
character, no leading or trailing dot."""



@dataclass
class TableCheck:
    """The parsed table, its problems, and which rows passed every row-level check."""

    table: pd.DataFrame | None
    errors: list[CohortError]
    valid_rows: pd.Series | None  # bool per row


def patient_id_problem(patient_id: str) -> str | None:
    """Why ``patient_id`` cannot name its folder ``images/<patient_id>/`` as written, or None.

    Nothing is altered to make an identifier safe (a silently renamed patient would not be the
    patient of the table): a path separator, a leading dot, a control character or a character
    some file systems refuse is an error naming the identifier.
    """
    if SAFE_PATIENT_ID.fullmatch(patient_id):
        return None
    return (
        f"patient_id {patient_id!r} cannot name a folder as written "
        "(no '/', '\\', leading '.', control character or any of < > : \" | ? *)"
    )


def check_table(cohort_dir: Path) -> TableCheck:
    csv_path = cohort_dir / COHORT_CSV
    try:
        table = read_cohort_table(csv_path)
    except (MissingFileError, UnreadableTableError) as exc:
        return TableCheck(None, [exc], None)

    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        errors: list[CohortError] = [
            MissingColumnError("required column is missing", column=c, path=csv_path) for c in missing
        ]
        return TableCheck(None, errors, None)
    if table.empty:
        return TableCheck(None, [EmptyCohortError("cohort.csv lists no patient (header only)", path=csv_path)], None)

    errors = []
    bad = np.zeros(len(table), dtype=bool)
    table = table.reset_index(drop=True)
    patient_ids = table[PATIENT_ID].tolist()

    def row_error(i: int, exc_type, message: str, column: str) -> None:
        pid = patient_ids[i]
        if isinstance(pid, str):
            errors.append(exc_type(message, patient_id=pid, column=column, path=csv_path))
        else:
            errors.append(exc_type(f"line {i + 2}: {message}", column=column, path=csv_path))
        bad[i] = True

    # identifiers: each one names a folder, so it must be one as written, and unique even where
    # the file system ignores case (P001 and p001 would share images/P001/ on macOS or Windows).
    for i, pid in enumerate(patient_ids):
        if not isinstance(pid, str):
            row_error(i, InvalidValueError, "patient_id is missing", PATIENT_ID)
        elif (problem := patient_id_problem(pid)) is not None:
            row_error(i, UnsafePatientIdError, problem, PATIENT_ID)
    lines_of: dict[str, list[int]] = {}
    for i, pid in enumerate(patient_ids):
        if isinstance(pid, str):
            lines_of.setdefault(pid.casefold(), []).append(i)
    for rows in lines_of.values():
        if len(rows) < 2:
            continue
        names = list(dict.fromkeys(patient_ids[i] for i in rows))
        lines = ", ".join(str(i + 2) for i in rows)
        if len(names) == 1:
            error = DuplicatePatientError(
                f"patient_id appears {len(rows)} times (lines {lines})",
                patient_id=names[0], column=PATIENT_ID, path=csv_path,
            )  # fmt: skip
        else:
            error = UnsafePatientIdError(
                f"patient_ids {', '.join(map(repr, names))} differ only in case (lines {lines}): "
                "they would share one folder on a case-insensitive file system",
                patient_id=names[0], column=PATIENT_ID, path=csv_path,
            )  # fmt: skip
        errors.append(error)
        bad[rows] = True

    for i, split in enumerate(table[SPLIT]):
        if split not in SPLITS:
            shown = "missing" if not isinstance(split, str) else repr(split)
            row_error(i, UnknownSplitError, f"split is {shown}; allowed: {', '.join(SPLITS)}", SPLIT)
    for i, inst in enumerate(table[INSTITUTION]):
        if not isinstance(inst, str):
            row_error(i, InvalidValueError, "institution is missing", INSTITUTION)

    # outcomes
    numeric = {col: pd.to_numeric(table[col], errors="coerce").to_numpy(float) for col in NUMERIC_COLUMNS}
    for col in TIME_COLUMNS:
        for i, (original, value) in enumerate(zip(table[col], numeric[col], strict=True)):
            if not isinstance(original, str):
                row_error(i, InvalidTimeError, "time is missing", col)
            elif not np.isfinite(value):
                row_error(i, InvalidTimeError, f"time {original!r} is not a finite number of days", col)
            elif value < 0:
                row_error(i, InvalidTimeError, f"time {original!r} is negative", col)
            elif value > MAX_FOLLOWUP_DAYS:
                row_error(
                    i,
                    ImplausibleTimeError,
                    f"time {original!r} days is more than {MAX_FOLLOWUP_YEARS} years; times are in days from surgery",
                    col,
                )
    for col in EVENT_COLUMNS:
        for i, (original, value) in enumerate(zip(table[col], numeric[col], strict=True)):
            if not isinstance(original, str):
                row_error(i, InvalidEventError, "value is missing; expected 0 or 1", col)
            elif value not in (0, 1):
                row_error(i, InvalidEventError, f"value {original!r} is not 0 or 1", col)

    # clinical
    for col, allowed in CLINICAL_CATEGORIES.items():
        for i, value in enumerate(table[col]):
            if value not in allowed:
                shown = "missing" if not isinstance(value, str) else repr(value)
                row_error(i, InvalidValueError, f"value is {shown}; allowed: {', '.join(allowed)}", col)
    for col in NUMERIC_CLINICAL_COLUMNS:
        for i, (original, value) in enumerate(zip(table[col], numeric[col], strict=True)):
            if not isinstance(original, str):
                row_error(i, InvalidValueError, "value is missing; expected a number", col)
            elif not np.isfinite(value):
                row_error(i, InvalidValueError, f"value {original!r} is not a number", col)
            elif value < 0:
                row_error(i, InvalidValueError, f"value {original!r} is negative", col)

    # RFS counts relapse or death, so it cannot end after OS and a death implies an RFS event.
    os_t, rfs_t, os_e, rfs_e = (numeric[c] for c in ("os_time_days", "rfs_time_days", "os_event", "rfs_event"))
    for i in range(len(table)):
        if not all(np.isfinite(v) for v in (os_t[i], rfs_t[i], os_e[i], rfs_e[i])):
            continue
        if os_t[i] < 0 or rfs_t[i] < 0 or os_e[i] not in (0, 1) or rfs_e[i] not in (0, 1):
            continue
        if rfs_t[i] > os_t[i]:
            row_error(
                i,
                InconsistentOutcomeError,
                f"rfs_time_days {rfs_t[i]:g} is after os_time_days {os_t[i]:g}",
                "rfs_time_days",
            )
        elif os_e[i] == 1 and rfs_e[i] != 1:
            row_error(
                i,
                InconsistentOutcomeError,
                f"death at os_time_days {os_t[i]:g} (os_event=1) without an RFS event (rfs_event=0)",
                "rfs_event",
            )

    for col in NUMERIC_COLUMNS:
        table[col] = numeric[col]
    valid = pd.Series(~bad, index=table.index)
    errors.extend(_training_needs(table, csv_path))
    return TableCheck(table, errors, valid)


def _training_needs(table: pd.DataFrame, csv_path: Path) -> list[CohortError]:
    """What ``train`` needs beyond valid rows: a training and an evaluation split, events to learn from."""
    errors: list[CohortError] = []
    named = set(table[SPLIT].dropna())
    if TRAIN_SPLIT not in named:
        errors.append(
            MissingSplitError(
                f"no patient is in split '{TRAIN_SPLIT}': training needs one", column=SPLIT, path=csv_path
            )
        )
    if not named & set(EVALUATION_SPLITS):
        errors.append(
            MissingSplitError(
                f"no patient is in split {' or '.join(map(repr, EVALUATION_SPLITS))}: training needs one "
                "for model selection and evaluation",
                column=SPLIT,
                path=csv_path,
            )
        )
    # Over every training row, not only the valid ones: a row refused for another reason (a bad
    # stage) still has its events, and must be fixed anyway before check passes.
    train_rows = table[table[SPLIT] == TRAIN_SPLIT]
    if len(train_rows):
        for endpoint in ENDPOINTS:
            column = event_column(endpoint)
            if not (train_rows[column] == 1).any():
                errors.append(
                    NoTrainingEventsError(
                        f"the {len(train_rows)} patient(s) of split '{TRAIN_SPLIT}' have no "
                        f"{endpoint.upper()} event: the {endpoint.upper()} Cox loss has nothing to learn from",
                        column=column,
                        path=csv_path,
                    )
                )
    return errors


def load_cohort_table(cohort_dir: Path | str) -> pd.DataFrame:
    """Read ``cohort.csv`` with typed columns, checking every table-level rule.

    Returns:
        One row per patient: ``patient_id``, ``institution``, ``split``, ``bclc``, ``tnm``,
        ``sex`` as ``str`` (normalised by :func:`~hcc_exp.data.contract.read_cohort_table`);
        times (days), ``afp_ng_ml``, ``tumour_size_mm``, ``age`` as ``float``; ``os_event``,
        ``rfs_event``, ``mvi`` as ``int`` (0/1). Unknown extra columns are kept as text.

    Raises:
        CohortValidationError: with every table problem (images are not looked at).
    """
    cohort_dir = Path(cohort_dir)
    check = check_table(cohort_dir)
    if check.errors or check.table is None:
        raise CohortValidationError(cohort_dir, check.errors)
    table = check.table.copy()
    for col in EVENT_COLUMNS:
        table[col] = table[col].astype(int)
    for col in STRING_COLUMNS:
        table[col] = table[col].astype(str)
    return table.reset_index(drop=True)
