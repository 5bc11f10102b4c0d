"""Volume IO: deterministic NIfTI bytes, truncated files refused, DICOM read with geometry only."""

import hashlib

import numpy as np
import pytest
import SimpleITK as sitk

from hcc_exp.data.io import image_from_array, read_volume, same_grid, write_nifti
from hcc_exp.errors import UnreadableVolumeError


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_nifti_is_byte_deterministic(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = image_from_array(array, (0.8, 0.8, 2.5), origin_xyz_mm=(1.0, 2.0, 3.0))
    write_nifti(image, tmp_path / "a.nii.gz")
    write_nifti(image, tmp_path / "b.nii.gz")
    assert _digest(tmp_path / "a.nii.gz") == _digest(tmp_path / "b.nii.gz")
    back = read_volume(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    assert back.GetSpacing() == pytest.approx((0.8, 0.8, 2.5))
    assert back.GetOrigin() == pytest.approx((1.0, 2.0, 3.0))


def test_truncated_volume_is_named(tmp_path):
    image = image_from_array(np.random.default_rng(0).normal(size=(20, 30, 30)).astype(np.float32), (1, 1, 1))
    write_nifti(image, tmp_path / "ok.nii.gz")
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableVolumeError) as err:
        read_volume(tmp_path / "cut.nii.gz", patient_id="P7")
    assert "P7" in str(err.value) and "cut.nii.gz" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UnreadableVolumeError, match="does not exist"):
        read_volume(tmp_path / "none.nii.gz")


def test_dicom_series_geometry_and_no_header(real_ct_dir):
    image = read_volume(real_ct_dir / "dicom")
    assert image.GetSize() == (512, 512, 20)
    assert image.GetSpacing() == pytest.approx((0.9765625, 0.9765625, 2.0), abs=1e-4)
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert image.GetMetaDataKeys() == ()


def test_same_grid_reports_each_difference():
    a = image_from_array(np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 2.0))
    b = image_from_array(np.zeros((4, 5, 7), np.uint8), (1.0, 1.5, 2.0), origin_xyz_mm=(5.0, 0.0, 0.0))
    issues = " ".join(same_grid(a, b))
    assert "size" in issues and "spacing" in issues and "origin" in issues
    assert same_grid(a, a) == []


# --------------------------------------------------------------------------- staged_folder
def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_staged_folder_publishes_with_umask_permissions(tmp_path):
    import os

    from hcc_exp.data.io import staged_folder

    old = os.umask(0o027)
    try:
        with staged_folder(tmp_path / "cohort") as tmp:
            (tmp / "a.txt").write_text("new")
            assert not (tmp_path / "cohort").exists()  # nothing visible before the block succeeds
    finally:
        os.umask(old)
    assert _tree(tmp_path / "cohort") == {"a.txt": b"new"}
    assert (tmp_path / "cohort").stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_staged_folder_failure_leaves_the_destination_as_it_was(tmp_path, monkeypatch):
    import os

    from hcc_exp.data import io
    from hcc_exp.data.io import staged_folder

    dst = tmp_path / "cohort"
    (dst / "images").mkdir(parents=True)
    (dst / "cohort.csv").write_text("old")
    before = _tree(dst)

    with pytest.raises(RuntimeError), staged_folder(dst) as tmp:  # the block fails
        (tmp / "cohort.csv").write_text("new")
        raise RuntimeError("half-way")
    assert _tree(dst) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]

    real_replace = os.replace
    calls = []

    def failing_second_rename(a, b):  # the old folder is set aside, then the new one cannot move in
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError("disk gone")
        return real_replace(a, b)

    monkeypatch.setattr(io.os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="disk gone"), staged_folder(dst) as tmp:
        (tmp / "cohort.csv").write_text("new")
    assert len(calls) == 3  # aside, (failed) into place, rollback
    assert _tree(dst) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]

    monkeypatch.setattr(io.os, "replace", real_replace)
    with staged_folder(dst) as tmp:
        (tmp / "cohort.csv").write_text("new")
    assert _tree(dst) == {"cohort.csv": b"new"} and sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]
