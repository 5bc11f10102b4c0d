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


# --------------------------------------------------------------------------- swap_into_place
def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def old_and_staged(tmp_path):
    """An existing run-like folder and a stage with new versions of two of its entries and one new entry."""
    dst = tmp_path / "run"
    (dst / "checkpoints").mkdir(parents=True)
    (dst / "checkpoints" / "best.ckpt").write_text("old weights")
    (dst / "metrics.json").write_text("old metrics")
    (dst / "evaluation").mkdir()
    (dst / "evaluation" / "metrics.json").write_text("evaluated")
    stage = tmp_path / ".run.staging"
    (stage / "checkpoints").mkdir(parents=True)
    (stage / "checkpoints" / "best.ckpt").write_text("new weights")
    (stage / "metrics.json").write_text("new metrics")
    (stage / "meta.json").write_text("new meta")
    moves = [(stage / n, dst / n) for n in ("checkpoints", "metrics.json", "meta.json")]
    return dst, stage, moves


def test_swap_replaces_entries_and_keeps_the_others(old_and_staged):
    from hcc_exp.data.io import swap_into_place

    dst, stage, moves = old_and_staged
    assert swap_into_place(moves) == (True, True, True)
    assert _tree(dst) == {
        "checkpoints/best.ckpt": b"new weights",
        "evaluation/metrics.json": b"evaluated",  # not among the moves: untouched
        "meta.json": b"new meta",
        "metrics.json": b"new metrics",
    }
    assert _hidden(dst) == [] and sorted(p.name for p in stage.iterdir()) == []


@pytest.mark.parametrize("failing", ["checkpoints", "metrics.json", "meta.json"])
def test_a_failure_mid_publish_leaves_the_destination_as_it_was(old_and_staged, monkeypatch, failing):
    import os

    from hcc_exp.data import io
    from hcc_exp.data.io import swap_into_place

    dst, stage, moves = old_and_staged
    before, staged_before = _tree(dst), _tree(stage)
    real_replace = os.replace

    def replace(a, b):  # the rename of the new entry onto `failing` fails (after earlier ones succeeded)
        if os.fspath(b) == os.fspath(dst / failing) and os.fspath(a).startswith(os.fspath(stage)):
            raise OSError("disk gone")
        return real_replace(a, b)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        swap_into_place(moves)
    assert _tree(dst) == before  # old weights, old metrics, no meta.json, evaluation kept
    assert not (dst / "meta.json").exists()
    assert _tree(stage) == staged_before  # the new entries are back in the stage
    assert _hidden(dst) == []  # nothing set aside is left behind


def test_a_failure_setting_the_old_folder_aside_changes_nothing(old_and_staged, monkeypatch):
    import os

    from hcc_exp.data import io
    from hcc_exp.data.io import swap_into_place

    dst, stage, moves = old_and_staged
    before = _tree(dst)
    real_replace = os.replace

    def replace(a, b):
        if os.fspath(a) == os.fspath(dst / "checkpoints"):
            raise OSError("busy")
        return real_replace(a, b)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="busy"):
        swap_into_place(moves)
    assert _tree(dst) == before and _hidden(dst) == []


def test_never_replace_keeps_an_existing_destination(old_and_staged):
    from hcc_exp.data.io import swap_into_place

    dst, stage, moves = old_and_staged
    before, staged_before = _tree(dst), _tree(stage)
    # metrics.json and checkpoints exist: kept; meta.json does not: moved in.
    assert swap_into_place(moves, replace=False) == (False, False, True)
    assert _tree(dst) == {**before, "meta.json": b"new meta"}
    assert _tree(stage) == {k: v for k, v in staged_before.items() if k != "meta.json"}


def test_cache_publish_never_replaces_a_completed_cache(tmp_path):
    from hcc_exp.data.cache import MANIFEST, publish_cache_folder
    from hcc_exp.errors import PreprocessError

    final = tmp_path / "key"
    first = tmp_path / ".tmp-key-1"
    first.mkdir()
    (first / MANIFEST).write_text("first")
    assert publish_cache_folder(first, final) is True and not first.exists()
    second = tmp_path / ".tmp-key-2"
    second.mkdir()
    (second / MANIFEST).write_text("second")
    assert publish_cache_folder(second, final) is False  # another run completed the key first
    assert (final / MANIFEST).read_text() == "first" and not second.exists()

    broken = tmp_path / "broken"
    (broken / "patients").mkdir(parents=True)
    third = tmp_path / ".tmp-broken-3"
    third.mkdir()
    with pytest.raises(PreprocessError, match="not a complete cache"):
        publish_cache_folder(third, broken)
    assert third.exists() and sorted(p.name for p in broken.iterdir()) == ["patients"]
