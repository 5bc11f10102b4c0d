"""The entry point of ``hcc-exp import``: locate, read, align, register, write, validate, publish.

1. The clinical table is read and mapped (:mod:`.clinical`); every patient's files are located
   before anything is read, so a missing one is reported first.
2. Per patient: each phase's CT is read (a checked DICOM series, :mod:`.dicom`, or a volume
   file; padding becomes air), each mask is read in its format and brought onto its phase's
   grid (:mod:`.masks`); a mask drawn on one phase is carried to the others by registration
   (:mod:`.registration`), with a QC row in ``qc/registration.csv`` and a PNG in
   ``qc/<patient_id>/``.
3. The cohort is built in a staging folder (:func:`hcc_exp.data.io.staged_folder`), validated
   like ``hcc-exp check`` does, and swapped onto ``DST`` only when valid: a refused import
   leaves ``DST`` exactly as it was and raises :class:`~hcc_exp.errors.CohortValidationError`
   naming each patient, column and source file.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import SimpleITK as sitk

from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR, NIFTI_SUFFIXES
from hcc_exp.data.importing.clinical import build_table, importable_patients, read_clinical
from hcc_exp.data.importing.dicom import SeriesHeader, read_series, replace_padding
from hcc_exp.data.importing.mapping import ImportMapping, MaskSpec
from hcc_exp.data.importing.masks import find_mask, is_dicom_file, onto_image_grid, read_mask
from hcc_exp.data.importing.registration import (
    PropagationQC,
    Registration,
    propagate,
    qc_record,
    register,
    write_overlay_png,
)
from hcc_exp.data.io import read_volume, same_grid, staged_folder, strip_metadata, write_nifti
from hcc_exp.data.validate import ValidationReport, validate_cohort
from hcc_exp.errors import (
    CohortError,
    CohortImportError,
    CohortValidationError,
    MissingFileError,
    RegistrationFailedError,
)
from hcc_exp.progress import patient_progress

QC_DIR = "qc"
QC_CSV = "registration.csv"
MASK_KINDS: tuple[str, ...] = ("tumour", "liver")
IMAGE_SUFFIXES: tuple[str, ...] = (*NIFTI_SUFFIXES, ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class _Located:
    """One patient's source files (nothing read yet)."""

    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[tuple[str, str | None], Path] = field(default_factory=dict)
    """(kind, phase) -> file; phase ``None`` for a mask shared by the phases or drawn on one."""


def _find_image(folder: Path, stem: str) -> Path | None:
    if (folder / stem).is_dir():
        return folder / stem
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _locate(src_folder: Path, patient_id: str, mapping: ImportMapping, errors: list[CohortError]) -> _Located:
    located = _Located()
    if not src_folder.is_dir():
        errors.append(MissingFileError("patient folder not found", patient_id=patient_id, path=src_folder))
        return located
    for phase, source in mapping.phases.items():
        path = _find_image(src_folder, source.folder)
        if path is None:
            errors.append(
                MissingFileError(
                    f"{phase} image not found: expected a DICOM series folder {source.folder}/ or "
                    f"{source.folder}.nii.gz (or .nii, .nrrd, .mha)",
                    patient_id=patient_id,
                    path=src_folder / source.folder,
                )
            )
        else:
            located.images[phase] = path
    for kind in MASK_KINDS:
        spec = mapping.masks.spec(kind)
        wanted = (
            [(phase, spec.stem(phase, mapping.phase_stem(phase))) for phase in mapping.phases]
            if spec.per_phase
            else [(None, spec.file)]
        )
        for phase, stem in wanted:
            path = find_mask(src_folder, stem)
            if path is None:
                what = f"{phase} {kind} mask" if phase else f"{kind} mask"
                errors.append(
                    MissingFileError(
                        f"{what} not found: expected {stem} or {stem}.nii.gz (or .nii, .nrrd, .mha, .dcm)",
                        patient_id=patient_id,
                        path=src_folder / stem,
                    )
                )
            else:
                located.masks[(kind, phase)] = path
    return located


class _PatientImport:
    """Reads, aligns and writes one patient; records written file -> source and QC rows."""

    def __init__(self, patient_id: str, located: _Located, mapping: ImportMapping, cohort: Path) -> None:
        self.patient_id = patient_id
        self.located = located
        self.mapping = mapping
        self.out = cohort / IMAGES_DIR / patient_id
        self.qc_dir = cohort / QC_DIR
        self.images: dict[str, sitk.Image] = {}
        self.series: dict[str, SeriesHeader] = {}
        self.registrations: dict[tuple[str, str], Registration] = {}
        self.written: dict[Path, Path] = {}
        self.qc: list[PropagationQC] = []

    def run(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for phase, path in self.located.images.items():
            if path.is_dir():
                source = self.mapping.phases[phase]
                image, self.series[phase] = read_series(
                    path, source.choice, patient_id=self.patient_id, resample=source.resample
                )
            else:
                image = replace_padding(strip_metadata(read_volume(path, patient_id=self.patient_id)))
            self.images[phase] = image
            self._write(image, f"{phase}.nii.gz", path)
        for kind in MASK_KINDS:
            spec = self.mapping.masks.spec(kind)
            if spec.per_phase:
                for phase in self.images:
                    path = self.located.masks[(kind, phase)]
                    self._write(self._aligned(path, spec, phase), f"{phase}_{kind}.nii.gz", path)
            elif spec.phase is not None:
                self._propagate(kind, spec)
            else:
                self._shared(kind, spec)

    def _write(self, image: sitk.Image, name: str, source: Path) -> None:
        write_nifti(image, self.out / name)
        self.written[self.out / name] = source

    def _aligned(self, path: Path, spec: MaskSpec, phase: str, *, any_series: bool = False) -> sitk.Image:
        series = (
            list(self.series.values()) if any_series else [self.series[phase]] if phase in self.series else []
        )
        mask = read_mask(path, spec, patient_id=self.patient_id, series=series)
        return onto_image_grid(
            mask, self.images[phase], resample=spec.resample, patient_id=self.patient_id, path=path,
            allow_subset=is_dicom_file(path),
        )  # fmt: skip

    def _shared(self, kind: str, spec: MaskSpec) -> None:
        """One mask for every phase: on each phase's grid (``liver.nii.gz`` once when they share one)."""
        path = self.located.masks[(kind, None)]
        phases = list(self.images)
        one_grid = all(not same_grid(self.images[phases[0]], self.images[p]) for p in phases[1:])
        if kind == "liver" and one_grid:
            self._write(self._aligned(path, spec, phases[0], any_series=True), "liver.nii.gz", path)
            return
        for phase in phases:
            self._write(self._aligned(path, spec, phase, any_series=True), f"{phase}_{kind}.nii.gz", path)

    def _propagate(self, kind: str, spec: MaskSpec) -> None:
        """A mask drawn on ``spec.phase``: registered onto every other phase, with QC."""
        annotated = str(spec.phase)
        path = self.located.masks[(kind, None)]
        mask = self._aligned(path, spec, annotated)
        masks = {annotated: mask}
        for phase in self.images:
            if phase == annotated:
                continue
            key = (phase, annotated)
            if key not in self.registrations:
                registration = register(self.images[phase], self.images[annotated], self.mapping.registration)
                threshold = self.mapping.registration.min_correlation
                if not registration.correlation >= threshold:  # NaN (no overlap) fails too
                    raise RegistrationFailedError(
                        f"registering the {phase} phase to the {annotated} phase (where the {kind} mask was "
                        f"drawn) reached an intensity correlation of {registration.correlation:.3f} < "
                        f"min_correlation {threshold:g}; check the phases or adjust registration: in the mapping",
                        patient_id=self.patient_id,
                        path=self.located.images[phase],
                    )
                self.registrations[key] = registration
            masks[phase] = propagate(mask, self.registrations[key], self.images[phase])
        for phase in self.images:  # channel order
            name = f"{phase}_{kind}.nii.gz"
            self._write(masks[phase], name, path)
            if phase == annotated:
                continue
            png = Path(self.patient_id) / f"{kind}_{annotated}_to_{phase}.png"
            write_overlay_png(
                self.qc_dir / png,
                {p: self.images[p] for p in (annotated, phase)},
                {p: masks[p] for p in (annotated, phase)},
                f"patient {self.patient_id}: {kind} drawn on {annotated}, propagated to {phase}",
            )
            self.qc.append(
                qc_record(
                    self.patient_id,
                    kind,
                    annotated,
                    phase,
                    self.registrations[(phase, annotated)],
                    mask,
                    masks[phase],
                    png.as_posix(),
                )  # fmt: skip
            )


def _write_qc(cohort: Path, rows: list[PropagationQC]) -> None:
    if not rows:
        return
    (cohort / QC_DIR).mkdir(parents=True, exist_ok=True)
    with open(cohort / QC_DIR / QC_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(PropagationQC)], lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


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
                f"destination {dst} exists and is not empty (use --overwrite to replace it)"
            )
        src_resolved, dst_resolved = src.resolve(), dst.resolve()
        if src_resolved == dst_resolved or dst_resolved in src_resolved.parents:
            raise CohortImportError(f"destination {dst} holds the source {src}; refusing to overwrite it")


def import_cohort(
    src: Path | str,
    dst: Path | str,
    mapping: ImportMapping | Path | str,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> ValidationReport:
    """Import raw data from ``src`` into a cohort at ``dst`` (see :mod:`hcc_exp.data.importer`).

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
        CohortValidationError: missing columns, patient folders or files, unreadable volumes,
            refused DICOM series, masks or registrations, or any problem ``hcc-exp check`` finds
            in the result; paths name the source files.
    """
    src, dst = Path(src), Path(dst)
    if not isinstance(mapping, ImportMapping):
        mapping = ImportMapping.from_yaml(mapping)
    if not src.is_dir():
        raise CohortImportError(f"source folder {src} does not exist")
    _prepare_destination(src, dst, overwrite)

    clinical_path = mapping.clinical if mapping.clinical.is_absolute() else src / mapping.clinical
    table, folders = build_table(
        src, read_clinical(src, clinical_path, mapping.sheet), mapping, clinical_path
    )

    # Locate every file first, so that a missing one is reported before anything is read or written.
    errors: list[CohortError] = []
    located = {
        patient_id: _locate(src / folder, patient_id, mapping, errors)
        for patient_id, folder in importable_patients(table, folders, clinical_path, errors)
    }
    if errors:
        raise CohortValidationError(src, errors)

    with staged_folder(dst) as tmp:
        sources: dict[Path, Path] = {tmp / COHORT_CSV: clinical_path}
        qc_rows: list[PropagationQC] = []
        with patient_progress("importing", enabled=progress) as bar:
            task = bar.add_task("patients", total=len(located))
            for patient_id, files in located.items():
                patient = _PatientImport(patient_id, files, mapping, tmp)
                try:
                    patient.run()
                except CohortError as exc:  # one refusal per patient; the others are still checked
                    errors.append(exc)
                sources.update(patient.written)
                qc_rows.extend(patient.qc)
                bar.advance(task)
        _write_qc(tmp, qc_rows)
        failed = {e.patient_id for e in errors}
        checked = table[~table["patient_id"].isin(failed)] if errors else table
        checked.to_csv(tmp / COHORT_CSV, index=False)
        report = validate_cohort(tmp, phases=tuple(mapping.phases), progress=progress)
        restated = _restate_report(report, tmp, dst, sources, mapping)
        found = restated.errors
        if errors:  # the other patients are still checked; cohort-wide checks need every patient
            found = [e for e in found if e.patient_id is not None]
        if errors or found:
            raise CohortValidationError(src, [*errors, *found])
    return restated


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


__all__ = ["ImportMapping", "import_cohort"]
