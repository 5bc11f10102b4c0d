"""hcc-exp import: raw DICOM / NIfTI + clinical table -> a cohort that passes check."""

from __future__ import annotations

import gzip
import locale
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from rich.console import Console
from scipy import ndimage

from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR, REQUIRED_COLUMNS
from hcc_exp.data.importer import ImportMapping, MaskNames, import_cohort
from hcc_exp.data.io import read_volume, write_nifti
from hcc_exp.data.validate import load_cohort_table
from hcc_exp.errors import (
    CohortImportError,
    CohortValidationError,
    InvalidTimeError,
    MissingColumnError,
    MissingFileError,
    UnreadableVolumeError,
)
from hcc_exp.reporting.console import render_validation_report as render_report
from tests.conftest import REAL_CT_DIR
from tests.factories import sphere

# Identifying values planted in a copy of the real series (the public sample is already
# anonymised: its PatientName and SOP UIDs are empty).
PLANTED = {
    "0010|0010": "SENTINEL^PATIENT",  # PatientName
    "0010|0020": "MRN998877",  # PatientID
    "0020|000d": "1.2.826.0.1.3680043.9999.78",  # StudyInstanceUID
    "0020|000e": "1.2.826.0.1.3680043.9999.77",  # SeriesInstanceUID
}
SOP_UID_PREFIX = "1.2.826.0.1.3680043.9999.1000."
HEADER_TAGS = {
    "0010|0010": "PatientName",
    "0010|0020": "PatientID",
    "0008|0018": "SOPInstanceUID",
    "0008|0020": "StudyDate",
    "0020|000d": "StudyInstanceUID",
    "0020|000e": "SeriesInstanceUID",
    "0020|0052": "FrameOfReferenceUID",
    "0008|0081": "InstitutionAddress",
    "0008|1090": "ManufacturerModelName",
}

COLUMNS = {
    "patient_id": "Patient ID",
    "institution": "Centre",
    "split": "Cohort",
    "os_time_days": "OS_days",
    "os_event": "Death",
    "rfs_time_days": "RFS_days",
    "rfs_event": "Recurrence/death",
    "mvi": "MVI",
    "bclc": "BCLC stage",
    "tnm": "TNM",
    "afp_ng_ml": "AFP (ng/mL)",
    "tumour_size_mm": "Size mm",
    "age": "Age",
    "sex": "Gender",
}
VALUES = {
    "split": {"training": "train", "validation": "internal", "test": "external"},
    "os_event": {"yes": 1, "no": 0},
    "sex": {"male": "M", "female": "F"},
}
PHASE_STEMS = {"arterial": "ART", "portal": "PV", "delayed": "DEL"}


# --------------------------------------------------------------------------- raw data builders
@pytest.fixture(scope="module")
def _real_ct() -> Path:
    """``real_ct_dir`` for module-scoped fixtures (built once: the DICOM series is 10 MB)."""
    if not (REAL_CT_DIR / "ct.nii.gz").is_file() or not (REAL_CT_DIR / "dicom").is_dir():
        pytest.skip(f"real CT sample not found at {REAL_CT_DIR}")
    return REAL_CT_DIR


@pytest.fixture(scope="module")
def tagged_dicom(_real_ct: Path, tmp_path_factory) -> Path:
    """The real 20-slice series, rewritten with identifying header values planted in it."""
    out = tmp_path_factory.mktemp("dicom") / "series"
    out.mkdir()
    # ITK's GDCM writer switches the process locale to "C" (ASCII text IO afterwards).
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_tagged_series(_real_ct / "dicom", out)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)
    return out


def _write_tagged_series(source: Path, out: Path) -> None:
    for i, path in enumerate(sorted(source.iterdir())):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        image = reader.Execute()
        for key in image.GetMetaDataKeys():
            if not image.GetMetaData(key).strip():
                image.EraseMetaData(key)  # GDCM refuses to write some empty elements back
        for key, value in PLANTED.items():
            image.SetMetaData(key, value)
        image.SetMetaData("0008|0018", f"{SOP_UID_PREFIX}{i}")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(out / f"IM{i:04d}.dcm"))
        writer.Execute(image)


def _header_strings(dicom_dir: Path) -> dict[str, str]:
    """Identifying header values of the series' first slice, read the way an auditor would."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(sorted(dicom_dir.iterdir())[0]))
    reader.ReadImageInformation()
    values = {}
    for tag, name in HEADER_TAGS.items():
        value = reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
        if len(value) >= 6:  # an empty or tiny value cannot be searched for
            values[name] = value
    return values


def _write_mask_like(reference: sitk.Image, array_zyx: np.ndarray, path: Path) -> None:
    mask = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    mask.CopyInformation(reference)
    write_nifti(mask, path)


def _add_dicom_patient(folder: Path, series: Path) -> None:
    """Three phase folders holding the series, a liver box and a tumour ball on its grid."""
    folder.mkdir(parents=True)
    for stem in PHASE_STEMS.values():
        shutil.copytree(series, folder / stem)
    grid = read_volume(series)
    size_zyx = tuple(reversed(grid.GetSize()))
    spacing_zyx = tuple(reversed(grid.GetSpacing()))
    liver = np.zeros(size_zyx, dtype=np.uint8)
    liver[2:18, 180:340, 140:300] = 1
    tumour = sphere(size_zyx, (10, 260, 220), radius_mm=10.0, spacing_zyx_mm=spacing_zyx)
    assert np.all(liver[tumour == 1] == 1)
    _write_mask_like(grid, liver, folder / "liver.nii.gz")
    for stem in PHASE_STEMS.values():
        _write_mask_like(grid, tumour, folder / f"{stem}_tumour.nii.gz")


def _add_nifti_patient(folder: Path, real_ct_dir: Path, shift_hu: int) -> None:
    """The real NIfTI CT as three phases (HU shifted per phase), its real liver, a tumour inside it."""
    folder.mkdir(parents=True)
    ct = sitk.ReadImage(str(real_ct_dir / "ct.nii.gz"))
    liver_image = sitk.ReadImage(str(real_ct_dir / "liver.nii.gz"))
    liver = sitk.GetArrayFromImage(liver_image)
    depth = ndimage.distance_transform_edt(np.pad(liver, 1))[1:-1, 1:-1, 1:-1]
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
    tumour = sphere(liver.shape, centre, radius_mm=7.0, spacing_zyx_mm=(3.0, 3.0, 3.0)) * liver
    for k, stem in enumerate(PHASE_STEMS.values()):
        write_nifti(sitk.Cast(ct + shift_hu + 10 * k, sitk.sitkInt16), folder / f"{stem}.nii.gz")
        # Float masks, as some tools write them: the import stores them as uint8.
        mask = sitk.GetImageFromArray(tumour.astype(np.float32))
        mask.CopyInformation(ct)
        write_nifti(mask, folder / f"{stem}_tumour.nii.gz")
    shutil.copy(real_ct_dir / "liver.nii.gz", folder / "liver.nii.gz")


def _clinical_rows(ids: list) -> pd.DataFrame:
    """Their clinical table (their column names and codes) for ``ids``; events in every split."""
    rows = []
    for i, pid in enumerate(ids):
        died = i % 2 == 0
        rows.append(
            {
                "Patient ID": pid,
                "Centre": ["Basel", "Hospital B", "Hospital C"][i % 3],
                "Cohort": ["training", "validation", "test"][i % 3],
                "OS_days": 900 + 100 * i,
                "Death": "yes" if died else "no",
                "RFS_days": 400 + 50 * i,
                "Recurrence/death": 1,
                "MVI": i % 2,
                "BCLC stage": "A",
                "TNM": "II",
                "AFP (ng/mL)": 12.5 + i,
                "Size mm": 31.0,
                "Age": 60 + i,
                "Gender": "male" if i % 2 else "female",
                "Smoker": "no",
                "Name": f"Doe^{pid}",
            }
        )
    return pd.DataFrame(rows)


def _mapping(**overrides) -> ImportMapping:
    fields = {
        "clinical": "clinical.csv",
        "columns": COLUMNS,
        "values": VALUES,
        "phases": PHASE_STEMS,
        "masks": {"tumour": "{phase}_tumour", "liver": "liver"},
        "drop_columns": ["Name"],
    }
    fields.update(overrides)
    return ImportMapping.model_validate(fields)


@pytest.fixture(scope="module")
def _nifti_patients(_real_ct: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nifti-patients")
    _add_nifti_patient(root / "HCC-002", _real_ct, shift_hu=0)
    _add_nifti_patient(root / "HCC-003", _real_ct, shift_hu=5)
    return root


def _write_mixed_src(root: Path, tagged_dicom: Path, nifti_patients: Path) -> Path:
    """SRC: HCC-001 from the DICOM series, HCC-002 and HCC-003 from NIfTI, clinical.csv."""
    src = root / "raw"
    src.mkdir()
    _add_dicom_patient(src / "HCC-001", tagged_dicom)
    for name in ("HCC-002", "HCC-003"):
        shutil.copytree(nifti_patients / name, src / name)
    _clinical_rows(["HCC-001", "HCC-002", "HCC-003"]).to_csv(src / "clinical.csv", index=False)
    return src


@pytest.fixture
def mixed_src(tmp_path: Path, tagged_dicom: Path, _nifti_patients: Path) -> Path:
    return _write_mixed_src(tmp_path, tagged_dicom, _nifti_patients)


@pytest.fixture(scope="module")
def mixed_import(tagged_dicom: Path, _nifti_patients: Path, tmp_path_factory):
    """The mixed SRC imported once for the module (writing 512 x 512 x 20 NIfTI takes seconds)."""
    root = tmp_path_factory.mktemp("mixed")
    src = _write_mixed_src(root, tagged_dicom, _nifti_patients)
    report = import_cohort(src, root / "cohort", _mapping(), progress=False)
    return src, root / "cohort", report


@pytest.fixture
def nifti_src(tmp_path: Path, _nifti_patients: Path) -> Path:
    """SRC of the two NIfTI patients only (fast), clinical.csv."""
    src = tmp_path / "raw"
    src.mkdir()
    for name in ("HCC-002", "HCC-003"):
        shutil.copytree(_nifti_patients / name, src / name)
    _clinical_rows(["HCC-002", "HCC-003"]).to_csv(src / "clinical.csv", index=False)
    return src


def _no_leftovers(dst: Path) -> None:
    assert not dst.exists()
    assert not [p.name for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")]


def _all_bytes(path: Path) -> bytes:
    payload = path.read_bytes()
    return payload + (gzip.decompress(payload) if path.name.endswith(".gz") else b"")


# --------------------------------------------------------------------------- DICOM + NIfTI, CSV
def test_import_dicom_and_nifti_from_csv(mixed_import, tagged_dicom: Path, real_ct_dir: Path):
    _, dst, report = mixed_import
    assert report.ok, [str(e) for e in report.errors]
    assert report.cohort_dir == dst
    assert report.summary.patients_per_split == {"train": 1, "internal": 1, "external": 1}
    assert sorted(p.name for p in dst.parent.iterdir()) == ["cohort", "raw"]  # no temporary folder left

    # cohort.csv: our names, recoded values, their extra column kept, the dropped one gone
    table = load_cohort_table(dst)
    assert list(table.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert table["patient_id"].tolist() == ["HCC-001", "HCC-002", "HCC-003"]
    assert table["split"].tolist() == ["train", "internal", "external"]
    assert table["os_event"].tolist() == [1, 0, 1]
    assert table["sex"].tolist() == ["F", "M", "F"]
    assert table["afp_ng_ml"].tolist() == [12.5, 13.5, 14.5]
    assert table["Smoker"].tolist() == ["no"] * 3
    assert "Name" not in table.columns

    # DICOM patient: geometry and pixels of the series, as SimpleITK reads it
    series = read_volume(tagged_dicom)
    for phase in PHASE_STEMS:
        out = sitk.ReadImage(str(dst / IMAGES_DIR / "HCC-001" / f"{phase}.nii.gz"))
        assert out.GetSize() == (512, 512, 20)
        assert out.GetSpacing() == pytest.approx((0.9765625, 0.9765625, 2.0), abs=1e-5)
        assert out.GetOrigin() == pytest.approx(series.GetOrigin(), abs=1e-3)
        assert out.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1), abs=1e-6)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(series))

    # NIfTI patient: the real CT's geometry (3 mm, flipped x / y axes) and its HU values
    ct = sitk.ReadImage(str(real_ct_dir / "ct.nii.gz"))
    out = sitk.ReadImage(str(dst / IMAGES_DIR / "HCC-003" / "portal.nii.gz"))
    assert out.GetSpacing() == pytest.approx(ct.GetSpacing(), abs=1e-6)
    assert out.GetOrigin() == pytest.approx(ct.GetOrigin(), abs=1e-4)
    assert out.GetDirection() == pytest.approx(ct.GetDirection(), abs=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(ct) + 15)
    tumour = sitk.ReadImage(str(dst / IMAGES_DIR / "HCC-003" / "portal_tumour.nii.gz"))
    assert tumour.GetPixelID() == sitk.sitkUInt8 and sitk.GetArrayViewFromImage(tumour).sum() > 0

    assert sorted(p.name for p in (dst / IMAGES_DIR / "HCC-001").iterdir()) == sorted(
        [f"{p}.nii.gz" for p in PHASE_STEMS] + [f"{p}_tumour.nii.gz" for p in PHASE_STEMS] + ["liver.nii.gz"]
    )


def test_no_dicom_header_value_reaches_the_cohort(mixed_import, tagged_dicom: Path):
    header = _header_strings(tagged_dicom)
    # the planted identifiers and the sample's own date / UIDs / address are what we look for
    assert header["PatientName"] == "SENTINEL^PATIENT" and header["SOPInstanceUID"].startswith(SOP_UID_PREFIX)
    assert {"StudyDate", "FrameOfReferenceUID", "InstitutionAddress", "StudyInstanceUID"} <= set(header)
    needles = {name: value.encode() for name, value in header.items()}
    needles["PatientName (DICOM form)"] = b"SENTINEL"
    source_slice = sorted(tagged_dicom.iterdir())[0].read_bytes()
    assert all(needle in source_slice for needle in needles.values() if b"\r\n" not in needle)

    _, dst, report = mixed_import
    console = Console(record=True, width=200)
    render_report(report, console)
    files = [p for p in dst.rglob("*") if p.is_file()]
    assert len(files) == 1 + 7 + 2 * 7
    for path in files:
        payload = _all_bytes(path)
        for name, needle in needles.items():
            assert needle not in payload, f"{name} found in {path}"
    text = console.export_text().encode()
    assert not [name for name, needle in needles.items() if needle in text]


# --------------------------------------------------------------------------- XLSX, other names, YAML
def test_import_from_xlsx_with_yaml_mapping_and_folder_column(nifti_src: Path, tmp_path: Path):
    table = _clinical_rows([102, 103]).rename(columns={"OS_days": "Overall survival (d)", "Gender": "Sex"})
    table.insert(1, "Folder", ["HCC-002", "HCC-003"])
    (nifti_src / "clinical.csv").unlink()
    (nifti_src / "meta").mkdir()
    with pd.ExcelWriter(nifti_src / "meta" / "clinical.xlsx") as writer:
        pd.DataFrame({"note": ["first sheet is not the data"]}).to_excel(
            writer, sheet_name="README", index=False
        )
        table.to_excel(writer, sheet_name="patients", index=False)
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(
        yaml.safe_dump(
            {
                "clinical": "meta/clinical.xlsx",
                "sheet": "patients",
                "columns": {**COLUMNS, "os_time_days": "Overall survival (d)", "sex": "Sex"},
                "values": {**VALUES, "mvi": {"0": 0, "1": 1}},
                "phases": PHASE_STEMS,
                "masks": {"tumour": "{phase}_tumour", "liver": "liver"},
                "folder_column": "Folder",
                "drop_columns": ["Name"],
            }
        )
    )

    dst = tmp_path / "out" / "cohort"  # parent created on the way
    report = import_cohort(nifti_src, dst, mapping_file, progress=False)
    assert report.ok, [str(e) for e in report.errors]
    cohort = load_cohort_table(dst)
    assert cohort["patient_id"].tolist() == ["102", "103"]  # Excel integers, no ".0"
    assert cohort["os_time_days"].tolist() == [900.0, 1000.0]
    assert cohort["sex"].tolist() == ["F", "M"]
    assert "Folder" not in cohort.columns and "Name" not in cohort.columns
    assert (dst / IMAGES_DIR / "102" / "arterial.nii.gz").is_file()
    # the two patients differ by 5 HU: rows were matched to the right folders
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(dst / IMAGES_DIR / "102" / "arterial.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(dst / IMAGES_DIR / "103" / "arterial.nii.gz")))
    assert np.all(b.astype(int) - a == 5)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("clinical: c.csv\nphases: {arterial: A, portal: P, delayed: D}\ncolums: {}\n", "colums"),
        ("clinical: c.csv\nphases: {arterial: A, portal: P}\n", "missing ['delayed']"),
        (
            "clinical: c.csv\nphases: {arterial: A, portal: P, delayed: D}\nmasks: {tumour: '{stage}_t'}\n",
            "stage",
        ),
        ("clinical: c.csv\nphases: {arterial: A, portal: P, delayed: ../D}\n", "inside the patient folder"),
        ("clinical: c.csv\nphases: {arterial: A, portal: P, delayed: D}\nvalues: {stage: {a: b}}\n", "stage"),
        ("clinical: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_mapping_file_is_named(tmp_path: Path, text, words):
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(CohortImportError) as info:
        ImportMapping.from_yaml(path)
    assert words in str(info.value) and str(path) in str(info.value)


def test_shared_tumour_mask_template_is_copied_per_phase(nifti_src: Path, tmp_path: Path):
    for folder in ("HCC-002", "HCC-003"):
        shutil.copy(nifti_src / folder / "ART_tumour.nii.gz", nifti_src / folder / "lesion.nii.gz")
        for stem in PHASE_STEMS.values():
            (nifti_src / folder / f"{stem}_tumour.nii.gz").unlink()
    dst = tmp_path / "cohort"
    report = import_cohort(nifti_src, dst, _mapping(masks=MaskNames(tumour="lesion")), progress=False)
    assert report.ok, [str(e) for e in report.errors]
    assert all((dst / IMAGES_DIR / "HCC-002" / f"{p}_tumour.nii.gz").is_file() for p in PHASE_STEMS)


# --------------------------------------------------------------------------- failures leave no dst
def test_missing_mapped_column_names_it_and_leaves_no_dst(nifti_src: Path, tmp_path: Path):
    table = pd.read_csv(nifti_src / "clinical.csv").drop(columns=["OS_days", "MVI"])
    table.to_csv(nifti_src / "clinical.csv", index=False)
    dst = tmp_path / "cohort"
    with pytest.raises(CohortValidationError) as info:
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    problems = info.value.problems
    assert {(type(p), p.column) for p in problems} == {
        (MissingColumnError, "os_time_days"),
        (MissingColumnError, "mvi"),
    }
    assert all("'OS_days'" in p.message or "'MVI'" in p.message for p in problems)
    assert all(p.path.endswith("clinical.csv") for p in problems)
    _no_leftovers(dst)


def test_missing_phase_names_patient_and_leaves_no_dst(mixed_src: Path, tmp_path: Path):
    shutil.rmtree(mixed_src / "HCC-001" / "PV")
    (mixed_src / "HCC-003" / "DEL_tumour.nii.gz").unlink()
    dst = tmp_path / "cohort"
    with pytest.raises(CohortValidationError) as info:
        import_cohort(mixed_src, dst, _mapping(), progress=False)
    found = {(type(p), p.patient_id, Path(p.path).name) for p in info.value.problems}
    assert found == {
        (MissingFileError, "HCC-001", "PV"),
        (MissingFileError, "HCC-003", "DEL_tumour"),
    }
    assert "portal image" in str(info.value) and "HCC-001" in str(info.value)
    _no_leftovers(dst)


def test_missing_patient_folder_then_unreadable_volumes(
    nifti_src: Path, _nifti_patients: Path, tmp_path: Path
):
    shutil.rmtree(nifti_src / "HCC-002")
    volume = nifti_src / "HCC-003" / "PV.nii.gz"
    volume.write_bytes(volume.read_bytes()[:5000])
    dst = tmp_path / "cohort"
    # missing files are found before anything is read
    with pytest.raises(CohortValidationError) as info:
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    found = {(type(p), p.patient_id, p.path) for p in info.value.problems}
    assert found == {(MissingFileError, "HCC-002", str(nifti_src / "HCC-002"))}
    _no_leftovers(dst)

    shutil.copytree(_nifti_patients / "HCC-002", nifti_src / "HCC-002")
    mask = nifti_src / "HCC-002" / "liver.nii.gz"
    mask.write_bytes(b"not a volume")
    with pytest.raises(CohortValidationError) as info:
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    found = {(type(p), p.patient_id, p.path) for p in info.value.problems}
    assert found == {
        (UnreadableVolumeError, "HCC-002", str(mask)),
        (UnreadableVolumeError, "HCC-003", str(volume)),
    }
    _no_leftovers(dst)


def test_invalid_value_found_by_validation_names_their_column_and_leaves_no_dst(
    nifti_src: Path, tmp_path: Path
):
    table = pd.read_csv(nifti_src / "clinical.csv")
    table.loc[table["Patient ID"] == "HCC-003", "OS_days"] = -5
    table.to_csv(nifti_src / "clinical.csv", index=False)
    dst = tmp_path / "cohort"
    with pytest.raises(CohortValidationError) as info:
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    (problem,) = info.value.problems
    assert isinstance(problem, InvalidTimeError)
    assert (problem.patient_id, problem.column) == ("HCC-003", "os_time_days")
    assert "'OS_days'" in problem.message and problem.path == str(nifti_src / "clinical.csv")
    _no_leftovers(dst)


def test_mask_problem_names_the_source_file(nifti_src: Path, tmp_path: Path):
    path = nifti_src / "HCC-002" / "DEL_tumour.nii.gz"
    mask = sitk.ReadImage(str(path))
    write_nifti(mask * 2, path)  # labels 0 / 2: not binary
    dst = tmp_path / "cohort"
    with pytest.raises(CohortValidationError) as info:
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    (problem,) = info.value.problems
    assert type(problem).__name__ == "NonBinaryMaskError"
    assert problem.patient_id == "HCC-002" and problem.path == str(path)
    _no_leftovers(dst)


def test_destination_rules(nifti_src: Path, tmp_path: Path):
    dst = tmp_path / "cohort"
    dst.mkdir()
    (dst / "keep.txt").write_text("not a cohort")
    with pytest.raises(CohortImportError, match="not empty.*--overwrite"):  # the CLI flag, by its name
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    assert (dst / "keep.txt").read_text() == "not a cohort"

    # a failing overwrite leaves the old folder untouched
    bad = _mapping(phases={**PHASE_STEMS, "portal": "NOPE"})
    with pytest.raises(CohortValidationError):
        import_cohort(nifti_src, dst, bad, progress=False, overwrite=True)
    assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]

    report = import_cohort(nifti_src, dst, _mapping(), progress=False, overwrite=True)
    assert report.ok and not (dst / "keep.txt").exists() and (dst / COHORT_CSV).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "raw"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert import_cohort(nifti_src, empty, _mapping(), progress=True).ok

    with pytest.raises(CohortImportError, match="holds the source"):
        import_cohort(nifti_src, tmp_path, _mapping(), progress=False, overwrite=True)
    assert nifti_src.is_dir()


def test_a_patient_called_na_is_imported_as_a_patient(_nifti_patients: Path, tmp_path: Path):
    src = tmp_path / "raw"
    src.mkdir()
    shutil.copytree(_nifti_patients / "HCC-002", src / "NA")
    shutil.copytree(_nifti_patients / "HCC-003", src / "HCC-003")
    _clinical_rows(["NA", "HCC-003"]).to_csv(src / "clinical.csv", index=False)
    assert import_cohort(src, tmp_path / "cohort", _mapping(), progress=False).ok
    assert load_cohort_table(tmp_path / "cohort")["patient_id"].tolist() == ["NA", "HCC-003"]
    assert (tmp_path / "cohort" / IMAGES_DIR / "NA").is_dir()


def test_cli_style_errors_carry_no_temporary_paths(nifti_src: Path, tmp_path: Path):
    (nifti_src / "HCC-003" / "liver.nii.gz").unlink()
    liver = sitk.ReadImage(str(nifti_src / "HCC-002" / "liver.nii.gz"))
    write_nifti(liver[:, :, :-2], nifti_src / "HCC-002" / "liver.nii.gz")  # two slices short: off the grid
    dst = tmp_path / "cohort"
    with pytest.raises(CohortValidationError) as info:
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    message = str(info.value)
    assert not re.search(r"\.cohort\.importing-", message)
    kinds = {(type(p).__name__, p.patient_id) for p in info.value.problems}
    assert kinds == {("MissingFileError", "HCC-003")}  # found before writing: validation never ran

    (nifti_src / "HCC-003" / "liver.nii.gz").write_bytes((nifti_src / "HCC-002" / "ART.nii.gz").read_bytes())
    with pytest.raises(CohortValidationError) as info:
        import_cohort(nifti_src, dst, _mapping(), progress=False)
    kinds = {(type(p).__name__, p.patient_id, Path(p.path).name) for p in info.value.problems}
    assert ("MaskGridMismatchError", "HCC-002", "liver.nii.gz") in kinds  # found while importing
    assert ("NonBinaryMaskError", "HCC-003", "liver.nii.gz") in kinds
    assert all(str(nifti_src) in p.path for p in info.value.problems if p.path)
    assert not re.search(r"\.cohort\.importing-", str(info.value))
    _no_leftovers(dst)
