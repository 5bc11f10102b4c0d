"""Segmentation agreement on a cohort and a copy with perturbed masks, against a direct computation."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist

from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR
from hcc_exp.data.io import write_nifti
from hcc_exp.reporting.agreement import compare_cohorts, dice, hd95_mm, write_agreement
from tests.factories import write_tiny_cohort

SPACING_ZYX = (2.5, 0.8, 0.8)


def _surface_points_mm(mask: np.ndarray) -> np.ndarray:
    edge = mask & ~ndimage.binary_erosion(mask)
    return np.argwhere(edge) * np.asarray(SPACING_ZYX)


def _direct_hd95(a: np.ndarray, b: np.ndarray) -> float:
    """Brute force: every surface voxel's distance to the other surface, 95th percentile, both ways."""
    pa, pb = _surface_points_mm(a), _surface_points_mm(b)
    d = cdist(pa, pb)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


@pytest.fixture(scope="module")
def two_cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("agreement")
    a = write_tiny_cohort(root / "a", n_patients=4, spacing_zyx_mm=SPACING_ZYX)
    b = root / "b"
    shutil.copytree(a, b)
    # Observer B: P000's arterial tumour dilated by one voxel in-plane, P001's portal tumour shifted
    # by two voxels in x; P003 not annotated by B at all (and B has an extra patient P009).
    for pid, phase, change in (("P000", "arterial", "dilate"), ("P001", "portal", "shift")):
        path = b / IMAGES_DIR / pid / f"{phase}_tumour.nii.gz"
        image = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(image).astype(bool)
        if change == "dilate":
            arr = ndimage.binary_dilation(arr, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
        else:
            arr = np.roll(arr, 2, axis=2)
        out = sitk.GetImageFromArray(arr.astype(np.uint8))
        out.CopyInformation(image)
        write_nifti(out, path)
    table = pd.read_csv(b / COHORT_CSV, dtype=str)
    extra = table.iloc[[0]].assign(patient_id="P009")
    shutil.copytree(b / IMAGES_DIR / "P000", b / IMAGES_DIR / "P009")
    table = pd.concat([table[table["patient_id"] != "P003"], extra])
    table.to_csv(b / COHORT_CSV, index=False)
    return a, b


def _mask(cohort, pid, phase):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / IMAGES_DIR / pid / f"{phase}_tumour.nii.gz"))) > 0


def test_dice_and_hd95_match_direct_computation(two_cohorts):
    a, b = two_cohorts
    frame = compare_cohorts(a, b)
    tumour = frame[frame["region"] == "tumour"].set_index(["patient_id", "phase"])
    for pid, phase in (("P000", "arterial"), ("P001", "portal"), ("P002", "delayed")):
        ma, mb = _mask(a, pid, phase), _mask(b, pid, phase)
        expected_dice = 2 * (ma & mb).sum() / (ma.sum() + mb.sum())
        assert tumour.loc[(pid, phase), "dice"] == pytest.approx(expected_dice, abs=1e-12)
        assert tumour.loc[(pid, phase), "hd95_mm"] == pytest.approx(_direct_hd95(ma, mb), abs=1e-4)
    assert tumour.loc[("P000", "arterial"), "dice"] < 1.0
    assert tumour.loc[("P001", "portal"), "hd95_mm"] == pytest.approx(1.6, abs=1e-4)  # 2 voxels x 0.8 mm
    assert tumour.loc[("P002", "delayed"), "dice"] == 1.0
    assert tumour.loc[("P002", "delayed"), "hd95_mm"] == 0.0
    # identical liver masks; the margin band follows the perturbed tumour
    liver = frame[frame["region"] == "liver"]
    assert (liver["dice"] == 1.0).all()
    margin = frame[(frame["region"] == "margin")].set_index(["patient_id", "phase"])
    assert margin.loc[("P001", "portal"), "dice"] < 1.0


def test_unmatched_patients_are_listed(two_cohorts):
    frame = compare_cohorts(*two_cohorts)
    status = frame.set_index("patient_id")["status"]
    assert status.loc["P003"] == "only in A"
    assert status.loc["P009"] == "only in B"
    compared = frame[frame["status"] == "ok"]
    assert sorted(set(compared["patient_id"])) == ["P000", "P001", "P002"]
    assert len(compared) == 3 * 3 * 3  # patients x phases x regions


def test_written_files_and_summary(two_cohorts, tmp_path):
    paths = write_agreement(*two_cohorts, tmp_path / "out")
    written = pd.read_csv(paths["csv"], dtype={"patient_id": str})
    assert list(written.columns[:5]) == ["patient_id", "phase", "region", "dice", "hd95_mm"]
    summary = pd.read_csv(paths["summary"]).set_index(["phase", "region"])
    ok = written[(written["status"] == "ok") & (written["phase"] == "arterial") & (written["region"] == "tumour")]
    assert summary.loc[("arterial", "tumour"), "dice_mean"] == pytest.approx(ok["dice"].mean())
    assert summary.loc[("arterial", "tumour"), "dice_sd"] == pytest.approx(ok["dice"].std(ddof=1))
    assert summary.loc[("arterial", "tumour"), "dice_min"] == pytest.approx(ok["dice"].min())
    md = paths["md"].read_text()
    assert "P003 (only in A)" in md and "P009 (only in B)" in md


def test_empty_masks():
    empty = np.zeros((3, 3, 3), bool)
    assert np.isnan(dice(empty, empty))
    assert np.isnan(hd95_mm(empty, empty, (1, 1, 1)))


def test_cli_agreement(two_cohorts, tmp_path):
    from typer.testing import CliRunner

    from hcc_exp.cli import app

    result = CliRunner().invoke(app, ["agreement", str(two_cohorts[0]), str(two_cohorts[1]), "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "agreement.csv").is_file()


def _monai_hd95(a, b, spacing):
    """MONAI's own symmetric HD95 on the full arrays (the reference the fast path must equal)."""
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(a[None, None].astype(np.float32)), torch.from_numpy(b[None, None].astype(np.float32)),
            include_background=True, percentile=95, spacing=list(spacing),
        )  # fmt: skip
    return float(value.reshape(-1)[0])


@pytest.mark.parametrize("case", range(8))
def test_hd95_equals_monai_exactly(case):
    # Random blobs, some touching the array's faces (where MONAI's crop pads), anisotropic spacing,
    # and pairs that share most of their surface (the coinciding voxels the fast path does not query).
    rng = np.random.default_rng(case)
    shape = (12, 20, 22)
    a = ndimage.binary_opening(rng.random(shape) < 0.55, iterations=1)
    if case % 2:
        b = ndimage.binary_dilation(a, iterations=1) & (rng.random(shape) < 0.97)
    else:
        b = np.roll(a, int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
    if case >= 6:  # a small mask far from the array's faces
        a = np.zeros(shape, bool)
        a[4:7, 8:12, 9:13] = True
        b = a.copy()
        b[6, 11, 12] = False
        b[4:7, 12, 10] = True
    spacing = (2.5, 0.8, 0.7)
    assert hd95_mm(a, b, spacing) == _monai_hd95(a, b, spacing)
    assert hd95_mm(a, a, spacing) == 0.0 == _monai_hd95(a, a, spacing)


def test_workers_give_the_same_rows(two_cohorts):
    serial = compare_cohorts(*two_cohorts)
    pooled = compare_cohorts(*two_cohorts, workers=2)
    pd.testing.assert_frame_equal(serial, pooled)
