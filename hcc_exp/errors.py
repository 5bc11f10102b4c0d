"""Named exceptions of hcc-exp.

Every error the user can cause derives from :class:`HccExpError`, so the CLI can
turn it into a one-line message and a non-zero exit code without a traceback.
Cohort problems derive from :class:`CohortError` and carry the patient, file
or column they concern, so a report of many problems stays readable.
"""

from __future__ import annotations

from pathlib import Path


class HccExpError(Exception):
    """Base class of every error hcc-exp raises on purpose."""


class ConfigError(HccExpError):
    """A params.yaml, ``--set`` override or sweep YAML is invalid."""


# --------------------------------------------------------------------------- cohort
class CohortError(HccExpError):
    """One problem found in a cohort.

    Attributes:
        message: what is wrong, in words.
        patient_id: the patient concerned, if any.
        path: the file concerned, if any.
        column: the ``cohort.csv`` column concerned, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        patient_id: str | None = None,
        path: Path | str | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.patient_id = patient_id
        self.path = None if path is None else str(path)
        self.column = column
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.patient_id is not None:
            where.append(f"patient {self.patient_id}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.path is not None:
            where.append(f"file {self.path}")
        prefix = f"[{', '.join(where)}] " if where else ""
        return f"{prefix}{self.message}"


class MissingColumnError(CohortError):
    """cohort.csv lacks a required column."""


class UnreadableTableError(CohortError):
    """cohort.csv (or an imported clinical table) cannot be parsed as a table."""


class DuplicatePatientError(CohortError):
    """A patient_id appears more than once."""


class UnknownSplitError(CohortError):
    """split is not one of train / internal / external."""


class InvalidTimeError(CohortError):
    """A survival time is missing, non-numeric, or negative."""


class InvalidEventError(CohortError):
    """An event indicator is not 0 or 1."""


class InvalidValueError(CohortError):
    """A clinical or label value is outside its allowed set."""


class InconsistentOutcomeError(CohortError):
    """RFS and OS contradict each other (RFS after OS, death without RFS event)."""


class MissingFileError(CohortError):
    """A phase volume or mask file is missing."""


class UnreadableVolumeError(CohortError):
    """A volume cannot be read (corrupt, truncated, wrong format)."""


class GridMismatchError(CohortError):
    """A mask is not on its image's grid (size, spacing, origin, direction)."""


class NonBinaryMaskError(CohortError):
    """A mask holds values other than 0 and 1."""


class EmptyMaskError(CohortError):
    """A tumour (or liver) mask has no foreground voxel."""


class TumourOutsideLiverError(CohortError):
    """Most of the tumour lies outside the liver mask."""


class PhaseGeometryError(CohortError):
    """The phases of one patient do not share a physical extent."""


class NotComputedTomographyError(CohortError):
    """A phase volume's values are not CT Hounsfield units (wrong modality, or already normalised)."""


class UnknownPatientError(CohortError):
    """A patient named on the command line is not in the run's preprocessed cache."""


class NoEventsWarning(CohortError):
    """A split has no events for an endpoint: C-index is undefined there (a warning)."""


# ----------------------------------------------- cohort import: DICOM series, masks, registration
class DicomSeriesError(CohortError):
    """A DICOM series cannot be used as a phase; names the patient, the series and a file.

    Attributes:
        series: how the series is known to the user (folder, SeriesNumber, phase), never a UID.
    """

    def __init__(
        self,
        message: str,
        *,
        patient_id: str | None = None,
        path: Path | str | None = None,
        column: str | None = None,
        series: str | None = None,
    ) -> None:
        self.series = series
        super().__init__(message, patient_id=patient_id, path=path, column=column)

    def describe(self) -> str:
        text = super().describe()
        if self.series is None:
            return text
        if text.startswith("["):
            return f"[series {self.series}, {text[1:]}"
        return f"[series {self.series}] {text}"


class AmbiguousSeriesError(DicomSeriesError):
    """A folder holds several DICOM series and the mapping does not choose exactly one."""


class SeriesNotFoundError(DicomSeriesError):
    """No DICOM series in the folder matches the mapping's choice."""


class LocalizerSeriesError(DicomSeriesError):
    """The chosen series is a localizer / scout (topogram), not an axial volume."""


class NonCTModalityError(DicomSeriesError):
    """The chosen series is not CT (Modality is MR, PT, SEG, ...)."""


class GantryTiltError(DicomSeriesError):
    """The slices are tilted (gantry tilt / sheared stack): not a rectilinear grid."""


class SliceSpacingError(DicomSeriesError):
    """The slice positions are not evenly spaced (e.g. two reconstructions mixed)."""


class MissingSliceError(SliceSpacingError):
    """A gap of whole slices in an otherwise even stack: a slice file is missing."""


class DuplicateSliceError(SliceSpacingError):
    """Two slice files lie at the same position."""


class SegmentNotFoundError(CohortError):
    """A DICOM-SEG object (or label map) has no segment / label the mapping asks for."""


class SegmentationReferenceError(CohortError):
    """A DICOM-SEG object was drawn on another series than the phase it is used for."""


class MaskGridMismatchError(GridMismatchError):
    """A mask lies on another physical grid than its image and the mapping does not allow resampling."""


class RegistrationFailedError(CohortError):
    """Registering a phase to the annotated phase is worse than the mapping's threshold."""


class CohortValidationError(HccExpError):
    """A cohort failed validation; holds every problem found.

    Attributes:
        problems: every error found, in the order they were found.
    """

    def __init__(self, cohort_dir: Path | str, problems: list[CohortError]) -> None:
        self.cohort_dir = str(cohort_dir)
        self.problems = list(problems)
        lines = "\n".join(f"  - {type(p).__name__}: {p.describe()}" for p in self.problems)
        super().__init__(f"cohort {self.cohort_dir} has {len(self.problems)} problem(s):\n{lines}")


class CohortImportError(HccExpError):
    """Raw data cannot be imported into the cohort layout."""


class PreprocessError(HccExpError):
    """Preprocessing cannot produce a sample (e.g. crop box larger than the volume)."""


class InsufficientDiskSpaceError(PreprocessError):
    """The disk has less free space than the preprocessed cache needs."""


class PatientPreprocessError(PreprocessError):
    """Preprocessing one patient failed.

    Attributes:
        patient_id: the patient whose volumes could not be preprocessed.
        message: what went wrong, in words.
    """

    def __init__(self, patient_id: str, message: str) -> None:
        self.patient_id = str(patient_id)
        self.message = message
        super().__init__(f"[patient {self.patient_id}] {message}")

    def __reduce__(self):  # keeps patient_id when raised in a worker process
        return (type(self), (self.patient_id, self.message))


class EvaluationInputError(HccExpError):
    """Arrays handed to an evaluation function are malformed (length mismatch, NaN, negative time)."""


class RunFolderError(HccExpError):
    """A run folder is missing files or is from an incompatible version."""


class OutputFolderError(HccExpError):
    """An output folder (``train --run-dir``, ``predict --out``) is a file or cannot be written."""


class CohortPredictionError(HccExpError):
    """``predict --cohort`` failed for some patients; its table was written with their errors.

    Attributes:
        path: the ``predictions.csv`` written (a row per patient, failures with ``error``).
        failures: patient_id -> ``"<ErrorClass>: <message>"`` of each failed patient.
    """

    def __init__(self, path: Path | str, failures: dict[str, str], n_patients: int) -> None:
        self.path = str(path)
        self.failures = dict(failures)
        listed = "; ".join(f"{pid}: {reason}" for pid, reason in list(self.failures.items())[:10])
        more = f"; and {len(self.failures) - 10} more" if len(self.failures) > 10 else ""
        super().__init__(
            f"prediction failed for {len(self.failures)} of {n_patients} patient(s) ({listed}{more}); "
            f"every patient's row, with its error, is in {self.path}"
        )


class TrackingError(HccExpError):
    """A tracker is misused (logging before start) or its backend cannot start or sync."""


class SweepError(HccExpError):
    """A sweep cannot run (storage, backend, or study state)."""
