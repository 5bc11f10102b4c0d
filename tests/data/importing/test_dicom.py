"""DICOM series as archives store them: chosen, checked slice by slice, refused by name.

Every series here is a copy of a real scan (TotalSegmentator's example series, HCC_048 of
HCC-TACE-Seg) with edited headers; the edits are the simulated part.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import apply_modality_lut

from hcc_exp.data.importing.dicom import AIR_HU, SeriesChoice, read_series
from hcc_exp.data.io import read_volume
from hcc_exp.data.validate import validate_cohort
from hcc_exp.errors import (
    AmbiguousSeriesError,
    DuplicateSliceError,
    GantryTiltError,
    LocalizerSeriesError,
    MissingSliceError,
    NonCTModalityError,
    SeriesNotFoundError,
    SliceSpacingError,
)
from tests.data.importing.dicom_edit import copy_series, new_series, slice_files


def _named(err: pytest.ExceptionInfo, patient: str, folder: Path, file_name: str | None = None) -> None:
    text = str(err.value)
    assert f"patient {patient}" in text and f"{folder.name}/" in text, text
    if file_name is not None:
        assert file_name in text, text


def test_real_series_geometry_and_padding_becomes_air(hcc048_dir: Path):
    image, header = read_series(hcc048_dir, patient_id="HCC048")
    assert image.GetSize() == (512, 512, 89)
    assert image.GetSpacing() == pytest.approx((0.703125, 0.703125, 2.5))
    assert image.GetPixelID() == sitk.sitkInt16 and image.GetMetaDataKeys() == ()
    # Reference: the slices decoded by pydicom with their own modality LUT (slope / intercept).
    files = slice_files(hcc048_dir)
    raw = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in map(pydicom.dcmread, files)])
    padding = raw <= -2048
    assert padding.mean() > 0.2  # the real scan's round field of view leaves a fifth as padding
    array = sitk.GetArrayFromImage(image)
    assert array.min() == AIR_HU and not (array < AIR_HU).any()
    np.testing.assert_array_equal(array[padding], AIR_HU)
    np.testing.assert_array_equal(array[~padding], raw[~padding])
    assert image.GetOrigin()[2] == pytest.approx(
        min(float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files)
    )


def test_rescale_slope_and_intercept_are_applied(real_dicom_dir: Path, tmp_path: Path):
    def halve(ds, k):  # stored value s -> s // 2 with slope 2: HU = 2 * (s // 2) - 1024
        ds.set_pixel_data(ds.pixel_array // 2, "MONOCHROME2", int(ds.BitsStored))  # uncompressed
        ds.RescaleSlope = 2
        return ds

    copy_series(real_dicom_dir, tmp_path / "CT", halve)
    image, _ = read_series(tmp_path / "CT")
    expected = np.stack(
        [apply_modality_lut(ds.pixel_array, ds) for ds in map(pydicom.dcmread, slice_files(tmp_path / "CT"))]
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.maximum(expected, AIR_HU))
    assert float(expected.max()) % 2 == 0  # really rescaled (odd HU impossible)


def test_missing_middle_slice_is_refused_by_name_also_by_check(
    real_dicom_dir: Path, tmp_path: Path, tiny_cohort: Path
):
    files = copy_series(real_dicom_dir, tmp_path / "PV", lambda ds, k: None if k == 10 else ds)
    with pytest.raises(MissingSliceError) as err:
        read_volume(tmp_path / "PV", patient_id="P1")
    _named(err, "P1", tmp_path / "PV", files[10].name)  # the slice after the gap
    assert "1 slice(s) missing" in str(err.value) and "4.000 mm" in str(err.value)

    # issue 13 item 6: `check` on a cohort holding the gapped series as a phase folder
    patient = sorted((tiny_cohort / "images").iterdir())[0]
    (patient / "arterial.nii.gz").unlink()
    shutil.copytree(tmp_path / "PV", patient / "arterial")
    report = validate_cohort(tiny_cohort, progress=False)
    found = [e for e in report.errors if isinstance(e, MissingSliceError)]
    assert len(found) == 1 and found[0].patient_id == patient.name


def test_duplicate_slice_is_refused(real_dicom_dir: Path, tmp_path: Path):
    copy_series(real_dicom_dir, tmp_path / "PV")
    copy_series(real_dicom_dir, tmp_path / "PV", lambda ds, k: ds if k == 7 else None, prefix="dup")
    with pytest.raises(DuplicateSliceError) as err:
        read_series(tmp_path / "PV", patient_id="P2")
    _named(err, "P2", tmp_path / "PV")
    assert "0007.dcm" in str(err.value) and "dup0007.dcm" in str(err.value)


def test_uneven_spacing_is_refused(real_dicom_dir: Path, tmp_path: Path):
    def shift(ds, k):
        if k >= 12:  # every slice from 12 on 0.7 mm higher: one step of 2.7 mm
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.7]
        return ds

    files = copy_series(real_dicom_dir, tmp_path / "PV", shift)
    with pytest.raises(SliceSpacingError) as err:
        read_series(tmp_path / "PV", patient_id="P3")
    assert type(err.value) is SliceSpacingError and "2.700 mm" in str(err.value)
    _named(err, "P3", tmp_path / "PV", files[12].name)


@pytest.mark.parametrize("how", ["tag", "positions"])
def test_gantry_tilt_is_refused(real_dicom_dir: Path, tmp_path: Path, how: str):
    def tilt(ds, k):
        if how == "tag":
            ds.GantryDetectorTilt = 12.0
        else:  # positions drift in y by 0.42 mm per 2 mm step: a 12 degree shear
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y + 0.42 * k, z]
        return ds

    copy_series(real_dicom_dir, tmp_path / "PV", tilt)
    with pytest.raises(GantryTiltError) as err:
        read_series(tmp_path / "PV", patient_id="P4")
    _named(err, "P4", tmp_path / "PV", ".dcm")
    expected = "12 degrees" if how == "tag" else f"{np.degrees(np.arctan2(0.42, 2.0)):.2f} degrees"  # 11.86
    assert expected in str(err.value)


def test_localizer_and_non_ct_are_refused(real_dicom_dir: Path, tmp_path: Path):
    def scout(ds, k):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        return ds

    def mr(ds, k):
        ds.Modality = "MR"
        return ds

    copy_series(real_dicom_dir, tmp_path / "SCOUT", scout)
    with pytest.raises(NonCTModalityError):  # a folder of scouts only: no axial CT series to choose
        read_series(tmp_path / "SCOUT", patient_id="P5")
    with pytest.raises(LocalizerSeriesError) as err:  # chosen explicitly: refused as a localizer
        read_series(tmp_path / "SCOUT", SeriesChoice(description="*"), patient_id="P5")
    _named(err, "P5", tmp_path / "SCOUT", ".dcm")
    copy_series(real_dicom_dir, tmp_path / "MR", mr)
    with pytest.raises(NonCTModalityError) as err:
        read_series(tmp_path / "MR", SeriesChoice(description="*"), patient_id="P5")
    assert "modality is MR" in str(err.value)
    _named(err, "P5", tmp_path / "MR", ".dcm")

    # a scout series beside the axial one is not a candidate when nothing is chosen
    copy_series(real_dicom_dir, tmp_path / "EXAM", new_series("Axial 2.0", 3))
    copy_series(
        real_dicom_dir,
        tmp_path / "EXAM",
        lambda ds, k: scout(new_series("Topogram", 1)(ds, k), k) if k < 2 else None,
        prefix="s",
    )
    image, header = read_series(tmp_path / "EXAM")
    assert image.GetSize() == (512, 512, 20) and header.description == "Axial 2.0"


def test_several_series_in_one_folder_are_chosen_or_refused(real_dicom_dir: Path, tmp_path: Path):
    folder = tmp_path / "CT"
    copy_series(real_dicom_dir, folder, new_series("Recon 2: LIVER ARTERIAL", 5), prefix="a")
    portal_files = copy_series(real_dicom_dir, folder, new_series("Recon 3: LIVER PORTAL", 6), prefix="p")
    with pytest.raises(AmbiguousSeriesError) as err:
        read_series(folder, patient_id="P6")
    text = str(err.value)
    assert (
        "#5 'Recon 2: LIVER ARTERIAL' (20 files)" in text and "#6 'Recon 3: LIVER PORTAL' (20 files)" in text
    )
    assert "patient P6" in text and "CT" in text
    with pytest.raises(AmbiguousSeriesError):
        read_series(folder, SeriesChoice(description="recon*"), patient_id="P6")
    with pytest.raises(SeriesNotFoundError, match="delayed"):
        read_series(folder, SeriesChoice(description="*delayed*"), patient_id="P6")

    _, by_description = read_series(folder, SeriesChoice(description="*portal*"))
    uid = pydicom.dcmread(portal_files[0]).SeriesInstanceUID
    _, by_uid = read_series(folder, SeriesChoice(series_uid=uid))
    assert by_description.uid == by_uid.uid == uid
    assert sorted(s.path for s in by_uid.slices) == sorted(portal_files)


# --------------------------------------------------------------------------- through the importer
def _drop_11(ds, k):
    return None if k == 11 else ds


def _tag_tilt(ds, k):
    ds.GantryDetectorTilt = 8.0
    return ds


def _scout(ds, k):
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    return ds


def _mr(ds, k):
    ds.Modality = "MR"
    return ds


def _uneven(ds, k):
    if k >= 5:
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.5]
    return ds


@pytest.mark.parametrize(
    ("edit", "error", "description"),
    [
        (_drop_11, MissingSliceError, None),
        (_uneven, SliceSpacingError, None),
        (_tag_tilt, GantryTiltError, None),
        (_scout, LocalizerSeriesError, "*"),
        (_mr, NonCTModalityError, "*"),
        ("duplicate", DuplicateSliceError, None),
        ("two series", AmbiguousSeriesError, None),
        ("none", SeriesNotFoundError, "*delayed*"),
    ],
)
def test_each_dicom_refusal_fails_the_import_by_name_and_leaves_dst_as_it_was(
    real_dicom_dir: Path, tmp_path: Path, edit, error, description
):
    from hcc_exp.data.importer import import_cohort
    from hcc_exp.errors import CohortValidationError
    from tests.data.importing.test_masks import _assert_as_it_was, _existing_cohort
    from tests.data.test_importer import _clinical_rows, _mapping

    folder = tmp_path / "raw" / "HCC-301"
    if edit == "duplicate":
        copy_series(real_dicom_dir, folder / "CT")
        copy_series(real_dicom_dir, folder / "CT", lambda ds, k: ds if k == 3 else None, prefix="again")
    elif edit == "two series":
        copy_series(real_dicom_dir, folder / "CT", new_series("Recon 2", 5), prefix="a")
        copy_series(real_dicom_dir, folder / "CT", new_series("Recon 3", 6), prefix="b")
    else:
        copy_series(real_dicom_dir, folder / "CT", None if edit == "none" else edit)
    for name in ("liver.nii.gz", "tumour.nii.gz"):  # located first, never read: the phase is refused before
        (folder / name).write_bytes(b"not read")
    _clinical_rows(["HCC-301"]).to_csv(tmp_path / "raw" / "clinical.csv", index=False)
    source = {"folder": "CT"} if description is None else {"folder": "CT", "series_description": description}
    mapping = _mapping(
        phases=dict.fromkeys(("arterial", "portal", "delayed"), source),
        masks={"tumour": "tumour", "liver": "liver"},
    )
    dst = tmp_path / "cohort"
    before = _existing_cohort(dst)
    with pytest.raises(CohortValidationError) as err:
        import_cohort(tmp_path / "raw", dst, mapping, progress=False, overwrite=True)
    (problem,) = err.value.problems
    assert type(problem) is error, str(err.value)
    assert problem.patient_id == "HCC-301" and str(folder / "CT") in problem.path
    assert "series CT/" in str(problem) or error in (AmbiguousSeriesError, SeriesNotFoundError)
    _assert_as_it_was(dst, before)


# --------------------------------------------------------------------------- resampled when the mapping allows
DX = 0.9765625  # the real series' PixelSpacing (mm)


def _drift_y(ds, k):  # positions drift in y by 0.42 mm per 2 mm step: an 11.86 degree shear
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + 0.42 * k, z]
    return ds


def _original_hu(folder: Path) -> np.ndarray:
    """The real slices (sorted by z) in HU by pydicom's own modality LUT, padding as air."""
    raw = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in map(pydicom.dcmread, slice_files(folder))])
    return np.maximum(raw, AIR_HU)


def _refused_then_resampled(real_dicom_dir: Path, series: Path, error: type[Exception]):
    """Refused by ``error`` without ``resample``; with it: 2 mm slices, axis-aligned, origin at slice 0.

    Returns ``(image, resampled HU array, original HU array)``.
    """
    with pytest.raises(error):
        read_series(series, patient_id="P3")
    image, _ = read_series(series, patient_id="P3", resample=True)
    first = pydicom.dcmread(slice_files(series)[0])
    assert image.GetSpacing() == pytest.approx((DX, DX, 2.0))
    assert image.GetOrigin() == pytest.approx([float(v) for v in first.ImagePositionPatient])
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    return image, sitk.GetArrayFromImage(image).astype(float), _original_hu(real_dicom_dir)


def test_uneven_spacing_is_resampled_when_allowed(real_dicom_dir: Path, tmp_path: Path):
    def shift(ds, k):  # slices 12.. 0.7 mm higher: slice z = 2k (k < 12), 2k + 0.7 (k >= 12)
        if k >= 12:
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.7]
        return ds

    copy_series(real_dicom_dir, tmp_path / "PV", shift)
    image, out, src = _refused_then_resampled(real_dicom_dir, tmp_path / "PV", SliceSpacingError)
    # by hand: the median step is 2 mm; 0 .. 38.7 mm of slices -> floor(38.7 / 2) + 1 = 20 slices at 0, 2, .., 38 mm
    assert image.GetSize() == (512, 512, 20)
    np.testing.assert_array_equal(out[:12], src[:12])  # 0 .. 22 mm: the slices themselves
    # 24 mm lies between slice 11 (22 mm) and slice 12 (24.7 mm): weights 0.7 / 2.7 and 2 / 2.7
    np.testing.assert_allclose(out[12], (0.7 / 2.7) * src[11] + (2.0 / 2.7) * src[12], atol=0.5)
    # 38 mm: between slice 18 (36.7 mm) and slice 19 (38.7 mm): weights 0.35 and 0.65
    np.testing.assert_allclose(out[19], 0.35 * src[18] + 0.65 * src[19], atol=0.5)


def test_a_sheared_stack_is_resampled_when_allowed(real_dicom_dir: Path, tmp_path: Path):
    copy_series(real_dicom_dir, tmp_path / "PV", _drift_y)
    image, out, src = _refused_then_resampled(real_dicom_dir, tmp_path / "PV", GantryTiltError)
    # by hand: every slice keeps its 512 columns; rows cover 0.42 * 19 = 7.98 mm more: 512 + ceil(7.98 / DX) = 521
    assert image.GetSize() == (512, 521, 20)
    np.testing.assert_array_equal(out[0, :512], src[0])
    assert (out[0, 512:] == AIR_HU).all()  # beyond slice 0's field of view
    # slice 5 starts 2.1 mm further in y: output row j shows its row j - f, f = 2.1 / DX = 2.1504
    f = 2.1 / DX
    lower, frac = int(np.floor(f)), f - np.floor(f)  # row j - f = (j - 3) + (1 - frac)
    rows = np.arange(3, 512)
    expected = frac * src[5][rows - lower - 1] + (1 - frac) * src[5][rows - lower]
    np.testing.assert_allclose(out[5, rows], expected, atol=0.5)
    assert (out[5, :2] == AIR_HU).all()  # before slice 5's first row


def test_a_tilt_tag_with_consistent_positions_reads_as_is_when_allowed(real_dicom_dir: Path, tmp_path: Path):
    def tag(ds, k):
        ds.GantryDetectorTilt = 12.0
        return ds

    copy_series(real_dicom_dir, tmp_path / "PV", tag)
    image, _ = read_series(tmp_path / "PV", patient_id="P4", resample=True)  # the positions place the slices
    plain = read_volume(real_dicom_dir)
    assert image.GetSize() == plain.GetSize() and image.GetOrigin() == pytest.approx(plain.GetOrigin())
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(plain))


def test_resample_still_refuses_a_missing_slice(real_dicom_dir: Path, tmp_path: Path):
    copy_series(real_dicom_dir, tmp_path / "PV", lambda ds, k: None if k == 10 else ds)
    with pytest.raises(MissingSliceError):
        read_series(tmp_path / "PV", patient_id="P1", resample=True)


def test_a_sheared_phase_imports_with_resample_and_is_refused_without(
    real_dicom_dir: Path, tmp_path: Path
):
    """Three phases: the real series sheared (simulated tilt) as DICOM; masks on the hand-derived grid."""
    from hcc_exp.data.contract import IMAGES_DIR
    from hcc_exp.data.importer import import_cohort
    from hcc_exp.data.io import write_nifti
    from hcc_exp.errors import CohortValidationError
    from tests.data.importing.test_masks import _assert_as_it_was, _existing_cohort
    from tests.data.test_importer import _clinical_rows, _mapping
    from tests.factories import sphere

    src = tmp_path / "raw"
    ids = ["HCC-401", "HCC-402", "HCC-403"]
    first = pydicom.dcmread(slice_files(real_dicom_dir)[0])
    grid = sitk.Image(512, 521, 20, sitk.sitkUInt8)  # by hand, as in the test above
    grid.SetSpacing((DX, DX, 2.0))
    grid.SetOrigin([float(v) for v in first.ImagePositionPatient])
    for pid in ids:
        copy_series(real_dicom_dir, src / pid / "CT", _drift_y)
        liver = np.zeros((20, 521, 512), np.uint8)
        liver[2:18, 180:340, 140:300] = 1
        tumour = sphere(liver.shape, (10, 260, 220), radius_mm=10.0, spacing_zyx_mm=(2.0, DX, DX))
        for name, array in (("liver", liver), ("tumour", tumour)):
            mask = sitk.GetImageFromArray(array.astype(np.uint8))
            mask.CopyInformation(grid)
            write_nifti(mask, src / pid / f"{name}.nii.gz")
    _clinical_rows(ids).to_csv(src / "clinical.csv", index=False)

    def mapping(resample: bool):
        source = {"folder": "CT", "resample": resample}
        return _mapping(
            phases=dict.fromkeys(("arterial", "portal", "delayed"), source),
            masks={"tumour": "tumour", "liver": "liver"},
        )

    dst = tmp_path / "cohort"
    before = _existing_cohort(dst)
    with pytest.raises(CohortValidationError) as err:
        import_cohort(src, dst, mapping(False), progress=False, overwrite=True)
    assert {type(p) for p in err.value.problems} == {GantryTiltError}
    assert sorted(p.patient_id for p in err.value.problems) == ids
    assert all(str(src / p.patient_id / "CT") in p.path and "CT/" in str(p) for p in err.value.problems)
    _assert_as_it_was(dst, before)

    report = import_cohort(src, dst, mapping(True), progress=False, overwrite=True)
    assert report.ok, [str(e) for e in report.errors]
    out = sitk.ReadImage(str(dst / IMAGES_DIR / "HCC-402" / "arterial.nii.gz"))
    assert out.GetSize() == grid.GetSize() and out.GetOrigin() == pytest.approx(grid.GetOrigin())
    assert out.GetSpacing() == pytest.approx(grid.GetSpacing())
