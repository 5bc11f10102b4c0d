"""The clinical table of an import: read CSV / TSV / XLSX, rename and recode columns, one folder per row."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.data.contract import REQUIRED_COLUMNS
from hcc_exp.data.importing.mapping import CellValue, ImportMapping
from hcc_exp.data.validate import SAFE_PATIENT_ID
from hcc_exp.errors import (
    CohortError,
    CohortImportError,
    CohortValidationError,
    DuplicatePatientError,
    InvalidValueError,
    MissingColumnError,
    MissingFileError,
    UnreadableTableError,
)


def canonical(value: Any) -> str | None:
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
        self.by_text = {canonical(k): v for k, v in mapping.items()}
        self.by_number: dict[float, CellValue] = {}
        for k, v in mapping.items():
            if not isinstance(k, bool) and (number := _as_number(canonical(k) or "")) is not None:
                self.by_number[number] = v

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        if text in self.by_text:
            return canonical(self.by_text[text])
        number = _as_number(text)
        if number is not None and number in self.by_number:
            return canonical(self.by_number[number])
        return text


def read_clinical(src: Path, path: Path, sheet: str | int) -> pd.DataFrame:
    if not path.is_file():
        raise CohortValidationError(src, [MissingFileError("clinical table does not exist", path=path)])
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            table = pd.read_excel(path, sheet_name=sheet, dtype=object)
        elif suffix in (".csv", ".tsv", ".txt"):
            table = pd.read_csv(path, dtype=str, sep="\t" if suffix == ".tsv" else ",")
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


def build_table(
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
        cells = raw[theirs].map(canonical)
        if our in mapping.values:
            cells = cells.map(_Recoder(mapping.values[our]))
        out[our] = cells
    used = set(wanted.values()) | set(mapping.drop_columns) | set(wanted_folder.values())
    for theirs in raw.columns:
        if theirs not in used and theirs not in out.columns:
            out[theirs] = raw[theirs].map(canonical)
    source = raw[mapping.folder_column] if mapping.folder_column else raw[mapping.their_column("patient_id")]
    folders = [canonical(v) or "" for v in source]
    return out.reset_index(drop=True), folders


def importable_patients(
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
