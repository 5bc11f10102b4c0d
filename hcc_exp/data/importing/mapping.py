"""The YAML mapping of ``hcc-exp import``: which raw file is which, and what the clinical columns are called.

This docstring holds the one written example of the format (``tests/data/importing/test_mapping.py``
loads it and checks every key below)::

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
      arterial: "ART"                  #   ART/ (a DICOM series) or ART.nii.gz / .nii / .nrrd / .mha
      portal: {folder: "CT", series_description: "*portal*"}   # one of several series in CT/
      delayed: {folder: "DEL", resample: true}   # uneven slices / gantry tilt: resampled, not refused
    masks:                             # file stems (any supported extension) or file names
      tumour: "{phase}_tumour"         # {phase}: the phase's stem above (ART), {name}: ours (arterial)
      liver: "liver"                   # no placeholder: one liver mask shared by the phases
    folder_column: "Folder"            # optional: the column naming each patient's folder in SRC;
                                       #   default: the folder is named by the patient's raw ID
    drop_columns: ["Name", "DOB"]      # optional: their columns not to copy into cohort.csv

A phase may also name a series by ``series_uid: "1.2.840..."``. A mask may also be a mapping
(:class:`MaskSpec`)::

    masks:
      liver:  {file: "seg", labels: [1, 2]}             # a label map: liver = labels 1 and 2
      tumour: {file: "seg.dcm", segment: "Mass"}        # a DICOM-SEG segment (label or description)
      # tumour: {file: "tumour", phase: portal}         # drawn on the portal phase only: the other
      #                                                 # phases are registered to it (registration:)
      # liver: {file: "liver", resample: true}          # on another grid: resample (nearest)
    registration: {bspline: false, min_correlation: 0.6}   # RegistrationSettings

A required column (``contract.REQUIRED_COLUMNS``) missing from ``columns`` is looked up in the
table under its own name. Their other columns are copied to ``cohort.csv`` under their own
names (except ``drop_columns``, the ``folder_column``, and a name that clashes with one of
ours). A mask template without placeholder is one file used for every phase (``liver`` then
becomes ``liver.nii.gz``, ``tumour`` is copied to each ``<phase>_tumour.nii.gz``).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hcc_exp.config import PHASES
from hcc_exp.data.contract import REQUIRED_COLUMNS
from hcc_exp.data.importing.dicom import SeriesChoice
from hcc_exp.errors import CohortImportError

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


def _check_template(v: str) -> str:
    try:
        unknown = _template_fields(v) - _TEMPLATE_FIELDS
    except ValueError as exc:
        raise ValueError(f"bad template {v!r}: {exc}") from exc
    if unknown:
        raise ValueError(
            f"template {v!r} uses unknown placeholder(s) {sorted(unknown)}; allowed: {{phase}}, {{name}}"
        )
    return _check_relative_name(v, "mask name")


class PhaseSource(BaseModel):
    """Where one phase's CT is: a DICOM folder (optionally one of several series) or a volume file stem.

    Attributes:
        folder: the folder (DICOM) or file stem in the patient folder.
        series_description: a ``SeriesDescription`` glob choosing one of several series.
        series_uid: a ``SeriesInstanceUID`` choosing one of several series.
        resample: a DICOM series with gantry tilt or uneven slice spacing is resampled onto a
            uniform grid (:func:`hcc_exp.data.importing.dicom.resample_to_uniform`) instead of
            refused; missing or duplicate slices are refused either way.
    """

    model_config = ConfigDict(extra="forbid")

    folder: str
    series_description: str | None = None
    series_uid: str | None = None
    resample: bool = False

    @field_validator("folder")
    @classmethod
    def _relative(cls, v: str) -> str:
        return _check_relative_name(v, "phase stem")

    @property
    def choice(self) -> SeriesChoice:
        return SeriesChoice(self.series_description, self.series_uid)


class MaskSpec(BaseModel):
    """One mask of the mapping.

    Attributes:
        file: a stem (any of :data:`MASK_SUFFIXES`) or a file name; ``{phase}`` / ``{name}`` make it
            one file per phase.
        labels: the label map's values that make up the region (default: a binary mask).
        segment: the DICOM-SEG segment: its number, SegmentLabel or SegmentDescription.
        phase: the phase the mask was drawn on; the other phases get it by registration.
        resample: a mask on another physical grid is resampled (nearest) instead of refused.
    """

    model_config = ConfigDict(extra="forbid")

    file: str
    labels: list[int] | None = None
    segment: str | int | None = None
    phase: str | None = None
    resample: bool = False

    @field_validator("file")
    @classmethod
    def _template(cls, v: str) -> str:
        return _check_template(v)

    @field_validator("phase")
    @classmethod
    def _known_phase(cls, v: str | None) -> str | None:
        if v is not None and v not in PHASES:
            raise ValueError(f"phase {v!r} is not one of {list(PHASES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MaskSpec:
        if self.labels is not None and self.segment is not None:
            raise ValueError("give labels (a label map) or segment (a DICOM-SEG), not both")
        if self.labels is not None and not self.labels:
            raise ValueError("labels must name at least one label")
        if self.phase is not None and self.per_phase:
            raise ValueError(
                f"a mask drawn on one phase ({self.phase}) cannot use a per-phase template {self.file!r}"
            )
        return self

    @property
    def per_phase(self) -> bool:
        return bool(_template_fields(self.file))

    def stem(self, phase: str, phase_stem: str) -> str:
        return self.file.format(phase=phase_stem, name=phase)


def _as_spec(v: Any) -> Any:
    return {"file": v} if isinstance(v, str) else v


class MaskNames(BaseModel):
    """The tumour and liver masks (a string is a file stem, as in earlier versions)."""

    model_config = ConfigDict(extra="forbid")

    tumour: MaskSpec = MaskSpec(file="{phase}_tumour")
    liver: MaskSpec = MaskSpec(file="liver")

    @field_validator("tumour", "liver", mode="before")
    @classmethod
    def _string_form(cls, v: Any) -> Any:
        return _as_spec(v)

    def spec(self, kind: str) -> MaskSpec:
        return getattr(self, kind)

    def per_phase(self, kind: str) -> bool:
        """Whether the ``kind`` (``tumour`` / ``liver``) mask is one file per phase."""
        return self.spec(kind).per_phase

    def stem(self, kind: str, phase: str, phase_stem: str) -> str:
        return self.spec(kind).stem(phase, phase_stem)


class RegistrationSettings(BaseModel):
    """Registration of each phase to the phase a mask was drawn on (SimpleITK).

    Attributes:
        working_spacing_mm: both images are resampled to this isotropic spacing first (speed).
        shrink_factors, smoothing_sigmas_mm: the multi-resolution pyramid.
        iterations: optimizer iterations per level of the rigid stage.
        sampling: fraction of voxels the Mattes mutual information samples (seeded).
        bspline: add a B-spline stage after the rigid one.
        bspline_mesh_mm: B-spline control-point spacing.
        bspline_levels: the B-spline stage runs on the finest this many levels of the pyramid
            (after the rigid stage the coarse levels have nothing left to correct).
        bspline_iterations, bspline_evaluations: L-BFGS-B iterations per level and its cap on
            metric evaluations. Measured on the real portal scan with a known motion: the
            full pyramid at 200 iterations took 220 s per registration and stopped at its
            evaluation limit (tumour Dice 0.83); 2 levels x 20 iterations x 40 evaluations
            took 26 s (Dice 0.91).
        min_correlation: refuse a registration whose intensity correlation (inside the body,
            after registration) is below this.
        seed: metric sampling seed (the result is reproducible).
    """

    model_config = ConfigDict(extra="forbid")

    working_spacing_mm: float = Field(3.0, gt=0)
    shrink_factors: list[int] = Field(default_factory=lambda: [4, 2, 1])
    smoothing_sigmas_mm: list[float] = Field(default_factory=lambda: [4.0, 2.0, 0.0])
    iterations: int = Field(200, ge=1)
    sampling: float = Field(0.1, gt=0, le=1)
    bspline: bool = False
    bspline_mesh_mm: float = Field(60.0, gt=0)
    bspline_levels: int = Field(2, ge=1)
    bspline_iterations: int = Field(20, ge=1)
    bspline_evaluations: int = Field(40, ge=1)
    min_correlation: float = Field(0.6, ge=-1, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _pyramid(self) -> RegistrationSettings:
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise ValueError("shrink_factors and smoothing_sigmas_mm must be non-empty and of equal length")
        if any(f < 1 for f in self.shrink_factors):
            raise ValueError("shrink_factors must be >= 1")
        return self


class ImportMapping(BaseModel):
    """How raw data maps onto the cohort contract (see the module docstring for the YAML format).

    Attributes:
        clinical: clinical table (``.csv``, ``.tsv``, ``.xlsx``), relative to SRC or absolute.
        sheet: XLSX sheet name or 0-based index.
        columns: our column -> their column (required columns default to their own name).
        values: our column -> {their value: our value}; values not listed are kept as they are.
        phases: our phase -> where its CT is (a stem, or a :class:`PhaseSource`).
        masks: the tumour and liver masks.
        registration: settings for masks drawn on one phase.
        folder_column: their column naming each patient's folder; default: the raw patient ID.
        drop_columns: their columns not copied into ``cohort.csv``.
    """

    model_config = ConfigDict(extra="forbid")

    clinical: Path
    sheet: str | int = 0
    columns: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[CellValue, CellValue]] = Field(default_factory=dict)
    phases: dict[str, PhaseSource]
    masks: MaskNames = Field(default_factory=MaskNames)
    registration: RegistrationSettings = Field(default_factory=RegistrationSettings)
    folder_column: str | None = None
    drop_columns: list[str] = Field(default_factory=list)

    @field_validator("phases", mode="before")
    @classmethod
    def _all_phases(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        unknown = sorted(set(v) - set(PHASES))
        missing = [p for p in PHASES if p not in v]
        if unknown or missing:
            raise ValueError(f"phases must map exactly {list(PHASES)}; unknown {unknown}, missing {missing}")
        return {p: {"folder": v[p]} if isinstance(v[p], str) else v[p] for p in PHASES}

    @model_validator(mode="after")
    def _values_name_our_columns(self) -> ImportMapping:
        ours = set(REQUIRED_COLUMNS) | set(self.columns)
        unknown = sorted(set(self.values) - ours)
        if unknown:
            raise ValueError(f"values: unknown column(s) {unknown}; recode only columns of cohort.csv")
        return self

    def their_column(self, ours: str) -> str:
        return self.columns.get(ours, ours)

    def phase_stem(self, phase: str) -> str:
        return self.phases[phase].folder

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
