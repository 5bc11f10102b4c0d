"""Mask formats and grids: label maps, NRRD, DICOM-SEG; reordered grids carried exactly, others refused.

The CT and liver delineation of ``dcmqi-liver`` are real (a DICOM-SEG and the same label map as
NRRD); the tumour inside that liver is simulated.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hcc_exp.data.contract import IMAGES_DIR
from hcc_exp.data.importer import import_cohort
from hcc_exp.data.importing.mapping import MaskSpec
from hcc_exp.data.importing.masks import grid_offset_mm, onto_image_grid, read_mask, same_voxel_centres
from hcc_exp.data.io import image_from_array, write_nifti
from hcc_exp.errors import (
    CohortValidationError,
    MaskGridMismatchError,
    SegmentationReferenceError,
    SegmentNotFoundError,
)
from tests.data.importing.dicom_edit import copy_series, new_series
from tests.data.test_importer import _clinical_rows, _mapping
from tests.factories import sphere

PATIENTS = ["HCC-101", "HCC-102"]
PLAIN_PHASES = {"arterial": "CT", "portal": "CT", "delayed": "CT"}


# --------------------------------------------------------------------------- unit: formats and grids
def _labels_image() -> sitk.Image:
    array = np.zeros((6, 8, 10), dtype=np.uint8)
    array[1:5, 2:6, 2:8] = 1  # liver
    array[2:4, 3:5, 3:5] = 2  # tumour (LiTS style: the tumour label lies inside the liver)
    array[0, 0, 0] = 7  # another organ
    return image_from_array(array, (0.8, 0.8, 2.5), origin_xyz_mm=(-10.0, 5.0, -300.0))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_label_map_labels_make_the_region_in_every_format(tmp_path: Path, suffix: str):
    image = _labels_image()
    path = tmp_path / f"seg{suffix}"
    sitk.WriteImage(image, str(path))
    array = sitk.GetArrayFromImage(image)
    liver = read_mask(path, MaskSpec(file="seg", labels=[1, 2]), patient_id="P")
    tumour = read_mask(path, MaskSpec(file="seg", labels=[2]), patient_id="P")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(liver), (array == 1) | (array == 2))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(tumour), array == 2)
    assert liver.GetPixelID() == sitk.sitkUInt8 and liver.GetOrigin() == pytest.approx(image.GetOrigin())
    with pytest.raises(SegmentNotFoundError) as err:
        read_mask(path, MaskSpec(file="seg", labels=[3, 4]), patient_id="P9")
    assert "patient P9" in str(err.value) and path.name in str(err.value) and "1, 2, 7" in str(err.value)


def _reordered(mask: sitk.Image, flip_x: bool, swap_xy: bool) -> sitk.Image:
    """The same voxels (same physical centres) stored in another index order, as NIfTI writers do."""
    array = sitk.GetArrayFromImage(mask)  # (z, y, x)
    direction = np.asarray(mask.GetDirection()).reshape(3, 3).copy()
    spacing = list(mask.GetSpacing())
    origin = np.asarray(mask.GetOrigin(), dtype=float)
    if flip_x:  # index 0 becomes the last column: origin moves to the other end, x axis reversed
        origin = origin + direction[:, 0] * spacing[0] * (array.shape[2] - 1)
        direction[:, 0] *= -1
        array = array[:, :, ::-1]
    if swap_xy:
        array = array.transpose(0, 2, 1)
        direction = direction[:, [1, 0, 2]]
        spacing = [spacing[1], spacing[0], spacing[2]]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(spacing)
    out.SetOrigin(tuple(origin))
    out.SetDirection(tuple(direction.ravel()))
    return out


@pytest.mark.parametrize(("flip_x", "swap_xy"), [(True, False), (False, True), (True, True)])
def test_mask_in_another_index_order_equals_the_mask_by_physical_position(flip_x: bool, swap_xy: bool):
    rng = np.random.default_rng(3)
    truth = image_from_array(
        (rng.random((5, 7, 9)) > 0.6).astype(np.uint8), (0.7, 0.9, 2.5), (3.0, -4.0, 10.0)
    )
    ct = image_from_array(np.zeros((5, 7, 9), np.int16), (0.7, 0.9, 2.5), (3.0, -4.0, 10.0))
    stored = _reordered(truth, flip_x, swap_xy)
    assert same_voxel_centres(ct, stored)
    out = onto_image_grid(stored, ct, resample=False, patient_id="P", path="m.nii.gz")
    # Reference by hand: each CT voxel centre's value in the stored mask, looked up by physical point.
    expected = np.zeros((5, 7, 9), np.uint8)
    for z, y, x in np.ndindex(expected.shape):
        point = ct.TransformIndexToPhysicalPoint((x, y, z))
        expected[z, y, x] = stored[stored.TransformPhysicalPointToIndex(point)]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), expected)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(truth))


def test_mask_on_another_grid_is_refused_with_its_offset_or_resampled_when_allowed():
    ct = image_from_array(np.zeros((10, 20, 20), np.int16), (1.0, 1.0, 2.0))
    mask = image_from_array(np.ones((10, 20, 20), np.uint8), (1.0, 1.0, 2.0), origin_xyz_mm=(0.4, 0.0, 3.0))
    assert grid_offset_mm(ct, mask) == pytest.approx(np.hypot(0.4, 3.0))
    with pytest.raises(MaskGridMismatchError) as err:
        onto_image_grid(mask, ct, resample=False, patient_id="P3", path="/raw/P3/liver.nii.gz")
    assert (
        "3.03 mm" in str(err.value) and "patient P3" in str(err.value) and "resample: true" in str(err.value)
    )
    out = onto_image_grid(mask, ct, resample=True, patient_id="P3", path="x")
    array = sitk.GetArrayFromImage(out)
    # nearest neighbour: CT slice z (at 2z mm) takes mask slice round((2z - 3) / 2); none below 3 mm - 1 mm
    assert array[0].sum() == 0 and array[2:].all() and out.GetOrigin() == ct.GetOrigin()


# --------------------------------------------------------------------------- imports of the real delineation
def _tumour_in_liver(liver: np.ndarray, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """A simulated 5 mm lesion at the deepest point of the real liver (middle slice)."""
    depth = ndimage.distance_transform_edt(np.pad(liver[1], 1), sampling=spacing_zyx[1:])[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return sphere(liver.shape, (1, y, x), radius_mm=5.0, spacing_zyx_mm=spacing_zyx) * liver


def _dcmqi_src(root: Path, dcmqi: Path, *, ct_edit=None) -> Path:
    src = root / "raw"
    for pid in PATIENTS:
        folder = src / pid
        copy_series(dcmqi / "ct", folder / "CT", ct_edit)
        shutil.copy(dcmqi / "liver-seg.dcm", folder / "liver-seg.dcm")
        shutil.copy(dcmqi / "liver.nrrd", folder / "liver.nrrd")
        liver = sitk.ReadImage(str(dcmqi / "liver.nrrd"))
        tumour = _tumour_in_liver(sitk.GetArrayFromImage(liver), tuple(reversed(liver.GetSpacing())))
        labels = sitk.GetImageFromArray(
            (sitk.GetArrayFromImage(liver) + tumour).astype(np.uint8)
        )  # 1 liver, 2 tumour
        labels.CopyInformation(liver)
        write_nifti(labels, folder / "labels.nii.gz")
    _clinical_rows(PATIENTS).to_csv(src / "clinical.csv", index=False)
    return src


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _existing_cohort(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    (path / "cohort.csv").write_text("patient_id\nOLD\n")
    (path / IMAGES_DIR).mkdir()
    return _snapshot(path)


def _assert_as_it_was(dst: Path, before: dict[str, bytes]) -> None:
    assert _snapshot(dst) == before
    assert not [p.name for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")]


def test_dicom_seg_and_nrrd_of_the_real_delineation_import_to_identical_masks(
    dcmqi_liver_dir: Path, tmp_path: Path
):
    src = _dcmqi_src(tmp_path, dcmqi_liver_dir)
    tumour = {"file": "labels", "labels": [2]}
    by_seg = import_cohort(
        src,
        tmp_path / "seg",
        _mapping(
            phases=PLAIN_PHASES,
            masks={"liver": {"file": "liver-seg.dcm", "segment": "Liver"}, "tumour": tumour},
        ),
        progress=False,
    )
    by_nrrd = import_cohort(
        src,
        tmp_path / "nrrd",
        _mapping(phases=PLAIN_PHASES, masks={"liver": "liver", "tumour": tumour}),
        progress=False,
    )
    by_labels = import_cohort(
        src,
        tmp_path / "labels",
        _mapping(
            phases=PLAIN_PHASES, masks={"liver": {"file": "labels", "labels": [1, 2]}, "tumour": tumour}
        ),
        progress=False,
    )
    assert by_seg.ok and by_nrrd.ok and by_labels.ok, [str(e) for e in by_seg.errors + by_nrrd.errors]
    nrrd = sitk.GetArrayFromImage(sitk.ReadImage(str(dcmqi_liver_dir / "liver.nrrd")))
    for pid in PATIENTS:
        masks = [
            sitk.ReadImage(str(tmp_path / kind / IMAGES_DIR / pid / "liver.nii.gz"))
            for kind in ("seg", "nrrd", "labels")
        ]
        arrays = [sitk.GetArrayFromImage(m) for m in masks]
        np.testing.assert_array_equal(arrays[0], arrays[1])
        np.testing.assert_array_equal(arrays[0], arrays[2])
        np.testing.assert_array_equal(arrays[0], nrrd)  # the NRRD label map, slice for slice
        assert int(arrays[0].sum()) == 107098
        ct = sitk.ReadImage(str(tmp_path / "seg" / IMAGES_DIR / pid / "portal.nii.gz"))
        assert (
            masks[0].GetOrigin() == pytest.approx(ct.GetOrigin())
            and masks[0].GetDirection() == ct.GetDirection()
        )


def test_seg_segment_not_found_is_named_and_leaves_the_destination_as_it_was(
    dcmqi_liver_dir: Path, tmp_path: Path
):
    src = _dcmqi_src(tmp_path, dcmqi_liver_dir)
    dst = tmp_path / "cohort"
    before = _existing_cohort(dst)
    mapping = _mapping(
        phases=PLAIN_PHASES, masks={"liver": "liver", "tumour": {"file": "liver-seg.dcm", "segment": "Mass"}}
    )
    with pytest.raises(CohortValidationError) as err:
        import_cohort(src, dst, mapping, progress=False, overwrite=True)
    problems = err.value.problems
    assert {type(p) for p in problems} == {SegmentNotFoundError}
    assert {p.patient_id for p in problems} == set(PATIENTS)
    assert all(p.path.endswith("liver-seg.dcm") and "1 'Liver'" in p.message for p in problems)
    _assert_as_it_was(dst, before)


def test_seg_drawn_on_another_series_is_refused(dcmqi_liver_dir: Path, tmp_path: Path):
    src = _dcmqi_src(
        tmp_path, dcmqi_liver_dir, ct_edit=new_series("re-exported", 2)
    )  # CT now has another UID
    dst = tmp_path / "cohort"
    before = _existing_cohort(dst)
    mapping = _mapping(
        phases=PLAIN_PHASES, masks={"liver": "liver-seg.dcm", "tumour": {"file": "labels", "labels": [2]}}
    )
    with pytest.raises(CohortValidationError) as err:
        import_cohort(src, dst, mapping, progress=False, overwrite=True)
    assert {type(p) for p in err.value.problems} == {SegmentationReferenceError}
    assert "another series" in str(err.value) and "HCC-101" in str(err.value)
    _assert_as_it_was(dst, before)


def test_mask_grid_mismatch_is_refused_on_import_and_resampled_when_allowed(
    dcmqi_liver_dir: Path, tmp_path: Path
):
    src = _dcmqi_src(tmp_path, dcmqi_liver_dir)
    for pid in PATIENTS:  # the label map moved by half a voxel: another grid
        labels = sitk.ReadImage(str(src / pid / "labels.nii.gz"))
        labels.SetOrigin(tuple(np.asarray(labels.GetOrigin()) + (0.4, 0.0, 0.0)))
        write_nifti(labels, src / pid / "labels.nii.gz")
    dst = tmp_path / "cohort"
    before = _existing_cohort(dst)
    masks = {"liver": "liver", "tumour": {"file": "labels", "labels": [2]}}
    with pytest.raises(CohortValidationError) as err:
        import_cohort(src, dst, _mapping(phases=PLAIN_PHASES, masks=masks), progress=False, overwrite=True)
    assert {type(p) for p in err.value.problems} == {MaskGridMismatchError}
    assert "0.40 mm" in str(err.value) and "labels.nii.gz" in str(err.value)
    _assert_as_it_was(dst, before)
    masks["tumour"]["resample"] = True
    report = import_cohort(
        src, dst, _mapping(phases=PLAIN_PHASES, masks=masks), progress=False, overwrite=True
    )
    assert report.ok and (dst / IMAGES_DIR / "HCC-101" / "portal_tumour.nii.gz").is_file()


def test_imported_cohort_folder_follows_the_umask(dcmqi_liver_dir: Path, tmp_path: Path):
    src = _dcmqi_src(tmp_path, dcmqi_liver_dir)
    old = os.umask(0o022)
    try:
        import_cohort(
            src,
            tmp_path / "cohort",
            _mapping(
                phases=PLAIN_PHASES, masks={"liver": "liver", "tumour": {"file": "labels", "labels": [2]}}
            ),
            progress=False,
        )
    finally:
        os.umask(old)
    assert (tmp_path / "cohort").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_real_delineation_stored_flipped_imports_voxel_for_voxel(
    dcmqi_liver_dir: Path, tmp_path: Path, suffix: str
):
    """The real liver NRRD rewritten with a flipped x axis and swapped rows / columns (same voxels)."""
    src = _dcmqi_src(tmp_path, dcmqi_liver_dir)
    nrrd = sitk.ReadImage(str(dcmqi_liver_dir / "liver.nrrd"))
    for pid in PATIENTS:
        sitk.WriteImage(_reordered(nrrd, flip_x=True, swap_xy=True), str(src / pid / f"liver_stored{suffix}"))
    masks = {"liver": "liver_stored", "tumour": {"file": "labels", "labels": [2]}}
    report = import_cohort(
        src, tmp_path / "cohort", _mapping(phases=PLAIN_PHASES, masks=masks), progress=False
    )
    assert report.ok, [str(e) for e in report.errors]
    out = sitk.ReadImage(str(tmp_path / "cohort" / IMAGES_DIR / PATIENTS[0] / "liver.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(nrrd))
