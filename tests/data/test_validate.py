"""hcc-exp check: every problem class is found, named, and reported together."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from rich.console import Console

from hcc_exp.config import PHASES
from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR
from hcc_exp.data.io import image_from_array, write_nifti
from hcc_exp.data.validate import (
    ValidationReport,
    load_cohort_table,
    require_valid,
    validate_cohort,
)
from hcc_exp.errors import (
    CohortValidationError,
    CorruptVolumeError,
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
    UnsafePatientIdError,
)
from hcc_exp.reporting.console import render_validation_report as render_report
from tests.factories import edit_cohort_csv, sphere, write_tiny_cohort


@pytest.fixture(scope="module")
def _tiny_template(tmp_path_factory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("template") / "cohort")


@pytest.fixture(scope="module")
def _per_phase_liver_template(tmp_path_factory) -> Path:
    return write_tiny_cohort(
        tmp_path_factory.mktemp("template") / "cohort", n_patients=3, per_phase_liver=True
    )


@pytest.fixture
def tiny_cohort(_tiny_template: Path, tmp_path: Path) -> Path:
    """The shared conftest cohort, written once per module and copied per test (for speed)."""
    return Path(shutil.copytree(_tiny_template, tmp_path / "cohort"))


@pytest.fixture
def per_phase_liver_cohort(_per_phase_liver_template: Path, tmp_path: Path) -> Path:
    """A valid 3-patient cohort with one liver mask per phase."""
    return Path(shutil.copytree(_per_phase_liver_template, tmp_path / "cohort"))


def _validate(cohort: Path, **kwargs) -> ValidationReport:
    return validate_cohort(cohort, progress=False, **kwargs)


def _found(report: ValidationReport, kind: type, *, patient_id=None, column=None, path_endswith=None) -> list:
    """The errors of ``kind`` that name the given patient / column / file."""
    hits = []
    for e in report.errors + report.warnings:
        if type(e) is not kind:
            continue
        if patient_id is not None and e.patient_id != patient_id:
            continue
        if column is not None and e.column != column:
            continue
        if path_endswith is not None and not (e.path or "").endswith(path_endswith):
            continue
        hits.append(e)
    return hits


def _only(report: ValidationReport, kind: type, **where) -> None:
    """``kind`` naming ``where`` is reported, and it is the only kind of error reported."""
    assert _found(report, kind, **where), [f"{type(e).__name__}: {e}" for e in report.errors]
    assert {type(e) for e in report.errors} == {kind}, [f"{type(e).__name__}: {e}" for e in report.errors]
    assert not report.ok


def _patient_dir(cohort: Path, pid: str) -> Path:
    return cohort / IMAGES_DIR / pid


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _write_like(reference: sitk.Image, array_zyx: np.ndarray, path: Path, **geometry) -> None:
    """Write ``array_zyx`` with ``reference``'s geometry, overriding spacing/origin/direction if given."""
    write_nifti(
        image_from_array(
            array_zyx,
            geometry.get("spacing", reference.GetSpacing()),
            geometry.get("origin", reference.GetOrigin()),
            geometry.get("direction", reference.GetDirection()),
        ),
        path,
    )


# --------------------------------------------------------------------------- valid cohorts
def test_valid_tiny_cohort_passes(tiny_cohort: Path):
    report = _validate(tiny_cohort)
    assert report.ok, [str(e) for e in report.errors]
    assert report.errors == [] and report.warnings == []
    report.raise_for_errors()  # no-op
    assert report.summary is not None and report.summary.overall.n_patients == 6


def test_valid_per_phase_liver_cohort_passes(per_phase_liver_cohort: Path):
    cohort = per_phase_liver_cohort
    assert not (cohort / IMAGES_DIR / "P000" / "liver.nii.gz").exists()
    report = _validate(cohort)
    assert report.ok, [str(e) for e in report.errors]


def test_float_binary_masks_and_progress_bar_are_accepted(tiny_cohort: Path):
    path = _patient_dir(tiny_cohort, "P001") / "portal_tumour.nii.gz"
    image = _read(path)
    _write_like(image, sitk.GetArrayFromImage(image).astype(np.float32), path)
    report = validate_cohort(tiny_cohort, progress=True)
    assert report.ok, [str(e) for e in report.errors]


def test_validate_writes_nothing(tiny_cohort: Path):
    before = {p: p.stat().st_mtime_ns for p in tiny_cohort.rglob("*")}
    edit_cohort_csv(tiny_cohort, "P001", os_time_days=-5)
    before[tiny_cohort / COHORT_CSV] = (tiny_cohort / COHORT_CSV).stat().st_mtime_ns
    _validate(tiny_cohort)
    after = {p: p.stat().st_mtime_ns for p in tiny_cohort.rglob("*")}
    assert after == before


# --------------------------------------------------------------------------- the done-when
def test_done_when_negative_time_and_bad_event_name_both_patients(tiny_cohort: Path):
    edit_cohort_csv(tiny_cohort, "P001", os_time_days=-5)
    edit_cohort_csv(tiny_cohort, "P004", rfs_event=2)
    report = _validate(tiny_cohort)
    assert not report.ok
    assert _found(report, InvalidTimeError, patient_id="P001", column="os_time_days")
    assert _found(report, InvalidEventError, patient_id="P004", column="rfs_event")
    with pytest.raises(CohortValidationError) as info:
        report.raise_for_errors()
    assert "P001" in str(info.value) and "P004" in str(info.value)
    assert {p.patient_id for p in info.value.problems} == {"P001", "P004"}


# --------------------------------------------------------------------------- table problems
def test_missing_cohort_csv(tiny_cohort: Path):
    (tiny_cohort / COHORT_CSV).unlink()
    report = _validate(tiny_cohort)
    _only(report, MissingFileError, path_endswith=COHORT_CSV)
    assert report.summary is None


def test_unparseable_cohort_csv(tiny_cohort: Path):
    (tiny_cohort / COHORT_CSV).write_text("")
    report = _validate(tiny_cohort)
    _only(report, UnreadableTableError, path_endswith=COHORT_CSV)


def test_missing_columns_are_each_named(tiny_cohort: Path):
    table = pd.read_csv(tiny_cohort / COHORT_CSV)
    table.drop(columns=["mvi", "sex"]).to_csv(tiny_cohort / COHORT_CSV, index=False)
    report = _validate(tiny_cohort)
    _only(report, MissingColumnError)
    assert {e.column for e in report.errors} == {"mvi", "sex"}
    assert all(e.path.endswith(COHORT_CSV) for e in report.errors)


def test_duplicate_patient_id(tiny_cohort: Path):
    table = pd.read_csv(tiny_cohort / COHORT_CSV, dtype=str)
    table.loc[3, "patient_id"] = "P001"
    table.to_csv(tiny_cohort / COHORT_CSV, index=False)
    report = _validate(tiny_cohort)
    _only(report, DuplicatePatientError, patient_id="P001", column="patient_id")
    assert len(report.errors) == 1 and "lines 3, 5" in report.errors[0].message


def test_unknown_split(tiny_cohort: Path):
    edit_cohort_csv(tiny_cohort, "P002", split="validation")
    report = _validate(tiny_cohort)
    _only(report, UnknownSplitError, patient_id="P002", column="split")
    assert "'validation'" in report.errors[0].message


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("os_time_days", -5, "negative"),
        ("os_time_days", "abc", "not a finite number"),
        ("rfs_time_days", None, "missing"),
    ],
)
def test_invalid_time(tiny_cohort: Path, column, value, words):
    edit_cohort_csv(tiny_cohort, "P003", **{column: value})
    report = _validate(tiny_cohort)
    errors = _found(report, InvalidTimeError, patient_id="P003", column=column)
    assert errors and words in errors[0].message
    assert {type(e) for e in report.errors} == {InvalidTimeError}


@pytest.mark.parametrize(
    ("column", "value"), [("os_event", "yes"), ("rfs_event", 2), ("mvi", 3), ("mvi", None), ("os_event", 0.5)]
)
def test_invalid_event(tiny_cohort: Path, column, value):
    # P001 is censored for OS and RFS, so no outcome-consistency rule is touched.
    edit_cohort_csv(tiny_cohort, "P001", **{column: value})
    report = _validate(tiny_cohort)
    _only(report, InvalidEventError, patient_id="P001", column=column)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("bclc", "E"),
        ("tnm", "V"),
        ("sex", "X"),
        ("sex", None),
        ("afp_ng_ml", "high"),
        ("tumour_size_mm", None),
        ("age", -3),
        ("institution", None),
    ],
)
def test_invalid_clinical_value(tiny_cohort: Path, column, value):
    edit_cohort_csv(tiny_cohort, "P005", **{column: value})
    report = _validate(tiny_cohort)
    _only(report, InvalidValueError, patient_id="P005", column=column)


def test_bclc_stage_zero_is_a_stage_not_a_number(tiny_cohort: Path):
    edit_cohort_csv(tiny_cohort, "P005", bclc="0")
    assert _validate(tiny_cohort).ok


def test_unsafe_or_missing_patient_id(tiny_cohort: Path):
    table = pd.read_csv(tiny_cohort / COHORT_CSV, dtype=str, keep_default_na=False)
    table.loc[1, "patient_id"] = "../P001"
    table.loc[2, "patient_id"] = ""
    table.to_csv(tiny_cohort / COHORT_CSV, index=False)
    report = _validate(tiny_cohort)
    assert _found(report, UnsafePatientIdError, patient_id="../P001", column="patient_id")
    assert {type(e) for e in report.errors} == {UnsafePatientIdError, InvalidValueError}
    missing = [e for e in report.errors if e.patient_id is None]
    assert len(missing) == 1 and "line 4" in missing[0].message and missing[0].column == "patient_id"
    assert type(missing[0]) is InvalidValueError


def test_rfs_after_os(tiny_cohort: Path):
    os_time = int(pd.read_csv(tiny_cohort / COHORT_CSV).set_index("patient_id").at["P001", "os_time_days"])
    edit_cohort_csv(tiny_cohort, "P001", rfs_time_days=os_time + 10)
    report = _validate(tiny_cohort)
    _only(report, InconsistentOutcomeError, patient_id="P001", column="rfs_time_days")


def test_death_without_rfs_event(tiny_cohort: Path):
    # P000 died (os_event=1); dropping its RFS event makes the death unexplained.
    edit_cohort_csv(tiny_cohort, "P000", rfs_event=0)
    report = _validate(tiny_cohort)
    _only(report, InconsistentOutcomeError, patient_id="P000", column="rfs_event")


def test_split_without_events_is_a_warning(tiny_cohort: Path):
    table = pd.read_csv(tiny_cohort / COHORT_CSV)
    external = table["split"] == "external"
    table.loc[external, ["os_event", "rfs_event"]] = 0
    table.to_csv(tiny_cohort / COHORT_CSV, index=False)
    report = _validate(tiny_cohort)
    assert report.ok
    assert {(type(w), w.column) for w in report.warnings} == {
        (NoEventsWarning, "os_event"),
        (NoEventsWarning, "rfs_event"),
    }
    assert all("'external'" in w.message for w in report.warnings)


# --------------------------------------------------------------------------- file problems
@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("portal.nii.gz", "portal.nii.gz (or DICOM folder portal/)"),
        ("delayed_tumour.nii.gz", "delayed_tumour.nii.gz"),
        ("liver.nii.gz", "liver.nii.gz (or <phase>_liver.nii.gz for each of arterial, portal, delayed)"),
    ],
)
def test_missing_file(tiny_cohort: Path, filename, expected):
    (_patient_dir(tiny_cohort, "P002") / filename).unlink()
    report = _validate(tiny_cohort)
    _only(report, MissingFileError, patient_id="P002")
    assert len(report.errors) == 1
    assert report.errors[0].path.endswith(f"P002/{expected}"), report.errors[0].path


def test_missing_one_per_phase_liver_mask(per_phase_liver_cohort: Path):
    (_patient_dir(per_phase_liver_cohort, "P001") / "portal_liver.nii.gz").unlink()
    report = _validate(per_phase_liver_cohort)
    _only(
        report,
        MissingFileError,
        patient_id="P001",
        path_endswith="P001/liver.nii.gz (or portal_liver.nii.gz)",
    )
    assert len(report.errors) == 1


def test_missing_patient_folder_is_one_error(tiny_cohort: Path):
    shutil.rmtree(_patient_dir(tiny_cohort, "P002"))
    report = _validate(tiny_cohort)
    _only(report, MissingFileError, patient_id="P002")
    assert len(report.errors) == 1


def test_truncated_and_corrupt_volumes(tiny_cohort: Path):
    image_path = _patient_dir(tiny_cohort, "P001") / "arterial.nii.gz"
    payload = image_path.read_bytes()
    image_path.write_bytes(payload[: len(payload) // 2])
    mask_path = _patient_dir(tiny_cohort, "P004") / "liver.nii.gz"
    mask_path.write_bytes(gzip.compress(b"this is not a NIfTI file" * 20))
    report = _validate(tiny_cohort)
    _only(report, CorruptVolumeError)  # an UnreadableVolumeError: the gzip stream fails its full read
    assert _found(report, CorruptVolumeError, patient_id="P001", path_endswith="P001/arterial.nii.gz")
    assert _found(report, CorruptVolumeError, patient_id="P004", path_endswith="P004/liver.nii.gz")
    assert all(isinstance(e, UnreadableVolumeError) for e in report.errors)
    assert len(report.errors) == 2  # the shared liver mask is read once, not once per phase


@pytest.mark.parametrize("what", ["size", "spacing", "origin", "direction"])
def test_mask_off_the_image_grid(tiny_cohort: Path, what):
    path = _patient_dir(tiny_cohort, "P003") / "portal_tumour.nii.gz"
    mask = _read(path)
    array = sitk.GetArrayFromImage(mask)
    geometry = {}
    if what == "size":
        array = array[:, :, :-1]
    elif what == "spacing":
        geometry["spacing"] = (0.8, 0.8, 2.6)
    elif what == "origin":
        geometry["origin"] = (0.0, 0.5, 0.0)
    else:
        geometry["direction"] = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    _write_like(mask, array, path, **geometry)
    report = _validate(tiny_cohort)
    _only(report, GridMismatchError, patient_id="P003", path_endswith="P003/portal_tumour.nii.gz")
    assert what in report.errors[0].message and "portal image" in report.errors[0].message


def test_shared_liver_off_the_grid_is_one_problem(tiny_cohort: Path):
    path = _patient_dir(tiny_cohort, "P004") / "liver.nii.gz"
    liver = _read(path)
    _write_like(liver, sitk.GetArrayFromImage(liver)[:-2], path)  # two slices short
    report = _validate(tiny_cohort)
    _only(report, GridMismatchError, patient_id="P004", path_endswith="P004/liver.nii.gz")
    assert len(report.errors) == 1
    assert "arterial, portal, delayed image: size (32, 32, 10) != (32, 32, 12)" in report.errors[0].message


@pytest.mark.parametrize("values", ["label2", "float"])
def test_non_binary_mask(tiny_cohort: Path, values):
    path = _patient_dir(tiny_cohort, "P000") / "arterial_tumour.nii.gz"
    mask = _read(path)
    array = sitk.GetArrayFromImage(mask)
    array = array * 2 if values == "label2" else array.astype(np.float32) * 0.5 + array
    _write_like(mask, array, path)
    report = _validate(tiny_cohort)
    _only(report, NonBinaryMaskError, patient_id="P000", path_endswith="arterial_tumour.nii.gz")
    assert ("2" if values == "label2" else "1.5") in report.errors[0].message


def test_empty_tumour_mask(tiny_cohort: Path):
    path = _patient_dir(tiny_cohort, "P005") / "delayed_tumour.nii.gz"
    mask = _read(path)
    _write_like(mask, np.zeros_like(sitk.GetArrayFromImage(mask)), path)
    report = _validate(tiny_cohort)
    _only(report, EmptyMaskError, patient_id="P005", path_endswith="delayed_tumour.nii.gz")


def test_tumour_outside_liver(tiny_cohort: Path):
    path = _patient_dir(tiny_cohort, "P002") / "arterial_tumour.nii.gz"
    mask = _read(path)
    corner = sphere((12, 32, 32), (1, 3, 3), radius_mm=4.0, spacing_zyx_mm=(2.5, 0.8, 0.8))
    _write_like(mask, corner, path)
    report = _validate(tiny_cohort)
    _only(report, TumourOutsideLiverError, patient_id="P002", path_endswith="arterial_tumour.nii.gz")
    assert "100%" in report.errors[0].message


def _rewrite_phase(cohort: Path, pid: str, phase: str, transform) -> None:
    """Apply ``transform(array, geometry) -> (array, geometry)`` to a phase's image and masks."""
    folder = _patient_dir(cohort, pid)
    for name in (f"{phase}.nii.gz", f"{phase}_tumour.nii.gz", f"{phase}_liver.nii.gz"):
        image = _read(folder / name)
        geometry = {
            "spacing": image.GetSpacing(),
            "origin": image.GetOrigin(),
            "direction": image.GetDirection(),
        }
        array, geometry = transform(sitk.GetArrayFromImage(image), geometry)
        _write_like(image, array, folder / name, **geometry)


@pytest.mark.parametrize("change", ["origin", "extent", "direction"])
def test_phases_with_different_physical_boxes(per_phase_liver_cohort: Path, change):
    cohort = per_phase_liver_cohort

    def transform(array, geometry):
        if change == "origin":  # 5 voxels along x: 4 mm, tolerance 0.8 mm
            geometry["origin"] = (4.0, 0.0, 0.0)
        elif change == "extent":  # 2 slices fewer: 5 mm, tolerance 2.5 mm
            array = array[1:-1]
        else:
            geometry["direction"] = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)
        return array, geometry

    _rewrite_phase(cohort, "P001", "portal", transform)
    report = _validate(cohort)
    _only(report, PhaseGeometryError, patient_id="P001", path_endswith="P001/portal.nii.gz")
    assert len(report.errors) == 1


def test_phases_with_different_spacing_alone_are_allowed(per_phase_liver_cohort: Path):
    cohort = per_phase_liver_cohort

    def coarser_in_plane(array, geometry):
        sx, sy, sz = geometry["spacing"]
        return array[:, ::2, ::2].copy(), {**geometry, "spacing": (2 * sx, 2 * sy, sz)}

    _rewrite_phase(cohort, "P001", "delayed", coarser_in_plane)
    report = _validate(cohort)
    assert report.ok, [str(e) for e in report.errors]
    (low, high) = report.summary.spacing_range_mm["delayed"]
    assert low == pytest.approx((0.8, 0.8, 2.5)) and high == pytest.approx((1.6, 1.6, 2.5))


# --------------------------------------------------------------------------- many problems at once
def test_several_problems_are_all_reported(tiny_cohort: Path):
    edit_cohort_csv(tiny_cohort, "P000", bclc="Z")
    edit_cohort_csv(tiny_cohort, "P001", mvi=7, split="test")
    (_patient_dir(tiny_cohort, "P002") / "arterial_tumour.nii.gz").unlink()
    liver_path = _patient_dir(tiny_cohort, "P003") / "liver.nii.gz"
    liver = _read(liver_path)
    _write_like(liver, sitk.GetArrayFromImage(liver) * 3, liver_path)
    image_path = _patient_dir(tiny_cohort, "P004") / "delayed.nii.gz"
    image_path.write_bytes(image_path.read_bytes()[:200])

    report = _validate(tiny_cohort)
    expected = [
        (InvalidValueError, "P000", "bclc"),
        (InvalidEventError, "P001", "mvi"),
        (UnknownSplitError, "P001", "split"),
        (MissingFileError, "P002", None),
        (NonBinaryMaskError, "P003", None),
        (CorruptVolumeError, "P004", None),
    ]
    for kind, pid, column in expected:
        assert _found(report, kind, patient_id=pid, column=column), (
            kind,
            pid,
            [str(e) for e in report.errors],
        )
    assert len(report.errors) == len(expected), [str(e) for e in report.errors]
    # the summary covers the rows that passed: P000 and P001 are left out
    assert report.summary.overall.n_patients == 4

    console = Console(record=True, width=250)
    render_report(report, console)
    text = console.export_text()
    assert "6 problem(s)" in text
    for kind, pid, _ in expected:
        assert kind.__name__ in text and pid in text


def test_check_images_false_reads_only_the_table(tiny_cohort: Path):
    (_patient_dir(tiny_cohort, "P002") / "arterial_tumour.nii.gz").unlink()
    edit_cohort_csv(tiny_cohort, "P001", sex="?")
    report = _validate(tiny_cohort, check_images=False)
    _only(report, InvalidValueError, patient_id="P001", column="sex")
    assert report.summary.spacing_range_mm == {}


# --------------------------------------------------------------------------- summary
def test_summary_matches_direct_computation(tiny_cohort: Path):
    from lifelines import KaplanMeierFitter

    table = pd.read_csv(tiny_cohort / COHORT_CSV)
    summary = _validate(tiny_cohort).summary
    assert summary.patients_per_split == table["split"].value_counts().to_dict()
    assert summary.patients_per_institution == table["institution"].value_counts().to_dict()
    for split, rows in [*table.groupby("split"), ("all", table)]:
        s = summary.overall if split == "all" else summary.splits[split]
        assert s.n_patients == len(rows)
        assert s.os_event_rate == pytest.approx(rows["os_event"].mean())
        assert s.rfs_event_rate == pytest.approx(rows["rfs_event"].mean())
        assert s.mvi_rate == pytest.approx(rows["mvi"].mean())
        assert s.institutions == rows["institution"].value_counts().to_dict()
        # reverse Kaplan-Meier median (censoring as the event), from lifelines
        reverse_km = KaplanMeierFitter().fit(rows["os_time_days"], event_observed=1 - rows["os_event"])
        assert s.median_followup_days == pytest.approx(reverse_km.median_survival_time_)
        assert math.isfinite(s.median_followup_days)
    assert summary.spacing_range_mm == {
        phase: (pytest.approx((0.8, 0.8, 2.5)), pytest.approx((0.8, 0.8, 2.5))) for phase in PHASES
    }
    console = Console(record=True, width=200)
    render_report(_validate(tiny_cohort), console)
    text = console.export_text()
    assert "OK" in text and "0.8 x 0.8 x 2.5" in text
    assert f"{int((table['os_event'] == 1).sum())} ({(table['os_event'] == 1).mean():.0%})" in text


def test_median_followup_not_reached_when_every_patient_died(tiny_cohort: Path):
    from lifelines import KaplanMeierFitter

    # train = P000 (died) and P003 (relapsed, censored for OS); P003 now dies at its OS time.
    edit_cohort_csv(tiny_cohort, "P003", os_event=1)
    report = _validate(tiny_cohort, check_images=False)
    assert report.ok
    train = report.summary.splits["train"]
    assert train.os_events == 2 and train.median_followup_days == math.inf
    table = pd.read_csv(tiny_cohort / COHORT_CSV)
    rows = table[table["split"] == "train"]
    assert (
        KaplanMeierFitter().fit(rows["os_time_days"], 1 - rows["os_event"]).median_survival_time_ == math.inf
    )
    console = Console(record=True, width=200)
    render_report(report, console)
    assert "not reached" in console.export_text()


# --------------------------------------------------------------------------- helpers for other commands
def test_load_cohort_table_types_and_extra_columns(tiny_cohort: Path):
    table = pd.read_csv(tiny_cohort / COHORT_CSV, dtype=str)
    table.loc[0, "patient_id"] = "007"
    (_patient_dir(tiny_cohort, "P000")).rename(_patient_dir(tiny_cohort, "007"))
    table["scanner"] = "GE"
    table.loc[0, "bclc"] = "0"
    table.to_csv(tiny_cohort / COHORT_CSV, index=False)

    loaded = load_cohort_table(tiny_cohort)
    assert loaded["patient_id"].tolist()[0] == "007"
    assert loaded["bclc"].tolist()[0] == "0"
    assert loaded["scanner"].eq("GE").all()
    assert loaded["os_event"].dtype.kind == "i" and set(loaded["mvi"]) <= {0, 1}
    assert loaded["os_time_days"].dtype.kind == "f"
    assert loaded["os_time_days"].tolist() == pd.to_numeric(table["os_time_days"]).astype(float).tolist()
    assert require_valid(tiny_cohort, progress=False).ok


def test_load_cohort_table_and_require_valid_raise(tiny_cohort: Path):
    edit_cohort_csv(tiny_cohort, "P002", tnm="IX")
    with pytest.raises(CohortValidationError) as info:
        load_cohort_table(tiny_cohort)
    assert [(type(p), p.patient_id, p.column) for p in info.value.problems] == [
        (InvalidValueError, "P002", "tnm")
    ]

    edit_cohort_csv(tiny_cohort, "P002", tnm="II")
    (_patient_dir(tiny_cohort, "P003") / "portal.nii.gz").unlink()
    assert len(load_cohort_table(tiny_cohort)) == 6  # images are not its business
    with pytest.raises(CohortValidationError) as info:
        require_valid(tiny_cohort, progress=False)
    assert [(type(p), p.patient_id) for p in info.value.problems] == [(MissingFileError, "P003")]
