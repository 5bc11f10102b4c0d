"""Preprocessing: resampling, clipping, margin band, crop, and the cache written by preprocess_cohort."""

from __future__ import annotations

import doctest
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from hcc_exp.config import PHASES, PreprocessConfig
from hcc_exp.data.cache import CURRENT, MANIFEST, REGIONS, current_cache
from hcc_exp.data.contract import PatientFiles
from hcc_exp.data.io import image_from_array, physical_extent_mm, read_volume, write_nifti
from hcc_exp.data.preprocess import (
    antialias,
    antialias_sigmas_mm,
    cache_key,
    clip_and_scale,
    crop_around,
    hash_cohort_inputs,
    margin_band,
    mask_centroid_vox,
    preprocess_cohort,
    preprocess_patient,
    resample_onto,
    resample_to_spacing,
)
from hcc_exp.data.preprocessing import cache_size, cropping, intensity, regions, resampling
from hcc_exp.errors import PatientPreprocessError, PreprocessError
from tests.factories import sphere

LIVER, MARGIN, TUMOUR = (REGIONS.index(r) for r in ("liver", "margin", "tumour"))


@pytest.mark.parametrize("module", [resampling, intensity, regions, cropping, cache_size], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def shell_volume(radius_mm: float, width_mm: float) -> float:
    return 4 / 3 * np.pi * ((radius_mm + width_mm / 2) ** 3 - (radius_mm - width_mm / 2) ** 3)


def ball_image(shape_zyx, centre_zyx_vox, radius_mm, spacing_zyx_mm) -> sitk.Image:
    return image_from_array(sphere(shape_zyx, centre_zyx_vox, radius_mm, spacing_zyx_mm), tuple(reversed(spacing_zyx_mm)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def physical_centroid(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    return np.asarray(stats.GetCentroid(1))


# --------------------------------------------------------------------------- margin band
def _check_band_volume(tumour: sitk.Image, radius_mm: float, margin_mm: float) -> None:
    everywhere = sitk.Cast(tumour * 0 + 1, sitk.sitkUInt8)
    band_img = margin_band(tumour, everywhere, margin_mm)
    assert band_img.GetSize() == tumour.GetSize() and band_img.GetSpacing() == tumour.GetSpacing()
    band = sitk.GetArrayViewFromImage(band_img) > 0
    inside = sitk.GetArrayViewFromImage(tumour) > 0
    voxel_mm3 = float(np.prod(tumour.GetSpacing()))
    total = band.sum() * voxel_mm3
    assert total == pytest.approx(shell_volume(radius_mm, margin_mm), rel=0.05)
    # Centred on the boundary: half the width inside, half outside.
    inner = 4 / 3 * np.pi * (radius_mm**3 - (radius_mm - margin_mm / 2) ** 3)
    outer = 4 / 3 * np.pi * ((radius_mm + margin_mm / 2) ** 3 - radius_mm**3)
    assert (band & inside).sum() * voxel_mm3 == pytest.approx(inner, rel=0.05)
    assert (band & ~inside).sum() * voxel_mm3 == pytest.approx(outer, rel=0.05)


def test_margin_band_matches_analytic_shell_at_1mm():
    _check_band_volume(ball_image((40, 40, 40), (19.7, 20.2, 20.4), 10.0, (1.0, 1.0, 1.0)), 10.0, 4.0)


def test_margin_band_matches_analytic_shell_on_anisotropic_grid():
    spacing = (2.5, 0.8, 0.8)
    _check_band_volume(ball_image((16, 50, 50), (7.6, 24.3, 25.1), 10.0, spacing), 10.0, 4.0)


def test_margin_band_matches_analytic_shell_after_resampling_anisotropic_to_1mm():
    tumour = ball_image((16, 50, 50), (7.6, 24.3, 25.1), 10.0, (2.5, 0.8, 0.8))
    _check_band_volume(resample_to_spacing(tumour, (1.0, 1.0, 1.0), "nearest", 0), 10.0, 4.0)


def test_margin_band_is_clipped_to_the_liver():
    spacing = (1.0, 1.0, 1.0)
    tumour = ball_image((32, 32, 32), (16, 16, 16), 6.0, spacing)
    liver_array = np.zeros((32, 32, 32), np.uint8)
    liver_array[:, :, :17] = 1  # the liver stops half-way through the tumour
    liver = image_from_array(liver_array, spacing)
    full = sitk.GetArrayFromImage(margin_band(tumour, sitk.Cast(tumour * 0 + 1, sitk.sitkUInt8), 4.0)) > 0
    clipped = sitk.GetArrayFromImage(margin_band(tumour, liver, 4.0)) > 0
    np.testing.assert_array_equal(clipped, full & (liver_array > 0))
    assert 0 < clipped.sum() < full.sum()


def test_margin_band_of_an_empty_tumour_is_empty():
    empty = image_from_array(np.zeros((8, 8, 8), np.uint8), (1.0, 1.0, 1.0))
    assert sitk.GetArrayFromImage(margin_band(empty, empty + 1, 4.0)).sum() == 0


# --------------------------------------------------------------------------- resampling (real CT)
@pytest.mark.parametrize("spacing_zyx", [(2.0, 2.0, 2.0), (1.5, 1.5, 1.5), (2.5, 1.0, 1.0), (4.0, 4.0, 4.0)])
def test_resampling_real_ct_keeps_extent_origin_direction(real_ct_dir: Path, spacing_zyx):
    ct = read_volume(real_ct_dir / "ct.nii.gz")
    assert ct.GetSpacing() == pytest.approx((3.0, 3.0, 3.0))
    out = resample_to_spacing(ct, spacing_zyx, "linear", default_value=-1024)
    new_xyz = np.array(list(reversed(spacing_zyx)))
    np.testing.assert_allclose(out.GetSpacing(), new_xyz)
    assert np.all(np.abs(physical_extent_mm(out) - physical_extent_mm(ct)) <= new_xyz / 2 + 1e-6)
    assert out.GetOrigin() == ct.GetOrigin()
    assert out.GetDirection() == ct.GetDirection()
    assert out.GetPixelID() == sitk.sitkFloat32


def test_dicom_series_reads_with_geometry_and_resamples_to_1mm(real_ct_dir: Path):
    dicom = read_volume(real_ct_dir / "dicom")
    assert dicom.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(dicom.GetSpacing(), (0.9765625, 0.9765625, 2.0), atol=1e-3)
    np.testing.assert_allclose(dicom.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    out = resample_to_spacing(dicom, (1.0, 1.0, 1.0), "linear", default_value=-1024)
    assert out.GetSize() == (500, 500, 40)
    assert np.all(np.abs(physical_extent_mm(out) - physical_extent_mm(dicom)) <= 0.5 + 1e-6)
    assert out.GetOrigin() == dicom.GetOrigin()
    # Intensities are interpolated up to the edges: the last 1 mm slice lies on the
    # input's outer boundary and must still read the last 2 mm slice, not the fill value.
    before, after = sitk.GetArrayViewFromImage(dicom), sitk.GetArrayViewFromImage(out)
    assert abs(float(after[-1].mean()) - float(before[-1].mean())) < 2.0
    assert abs(float(after.mean()) - float(before.mean())) < 2.0


@pytest.mark.parametrize("spacing_zyx", [(2.0, 2.0, 2.0), (2.5, 1.0, 1.0), (4.0, 4.0, 4.0)])
def test_resampled_liver_mask_stays_aligned_with_the_ct(real_ct_dir: Path, spacing_zyx):
    ct = read_volume(real_ct_dir / "ct.nii.gz")
    liver = read_volume(real_ct_dir / "liver.nii.gz")
    nearest = resample_to_spacing(liver, spacing_zyx, "nearest", 0)
    assert nearest.GetPixelID() == liver.GetPixelID()
    near = sitk.GetArrayViewFromImage(nearest)
    assert set(np.unique(near)) == {0, 1}
    reference = sitk.GetArrayFromImage(
        resample_to_spacing(sitk.Cast(liver, sitk.sitkFloat32), spacing_zyx, "linear", 0)
    ) >= 0.5
    assert dice(near > 0, reference) > 0.98
    # Same physical position (within half an output voxel) and volume (within 3 %).
    shift = np.abs(physical_centroid(nearest) - physical_centroid(liver))
    assert np.all(shift <= np.array(list(reversed(spacing_zyx))) / 2)
    volume_before = sitk.GetArrayViewFromImage(liver).sum() * np.prod(liver.GetSpacing())
    assert near.sum() * np.prod(spacing_zyx) == pytest.approx(volume_before, rel=0.03)
    # The CT resampled alongside reads the same liver HU.
    hu_before = sitk.GetArrayViewFromImage(ct)[sitk.GetArrayViewFromImage(liver) > 0].mean()
    ct_out = resample_to_spacing(ct, spacing_zyx, "linear", default_value=-1024)
    hu_after = sitk.GetArrayViewFromImage(ct_out)[near > 0].mean()
    assert abs(hu_after - hu_before) < 3.0


def test_resample_onto_puts_another_grid_on_the_reference_grid():
    # The same 8 mm ball (centre at x, y, z = 21, 19, 20 mm) on two grids with other spacing and origin.
    centre_xyz = np.array([21.0, 19.0, 20.0])

    def ball(shape_zyx, spacing_zyx, origin_xyz):
        centre_vox = (centre_xyz - np.asarray(origin_xyz)) / np.asarray(spacing_zyx)[::-1]
        mask = sphere(shape_zyx, centre_vox[::-1], 8.0, spacing_zyx)
        return image_from_array(mask, tuple(reversed(spacing_zyx)), origin_xyz)

    a = ball((20, 40, 40), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    b = ball((40, 30, 30), (1.0, 1.4, 1.4), (-1.3, 0.7, 0.4))
    on_a = resample_onto(b, a, "nearest", 0)
    assert on_a.GetSize() == a.GetSize() and on_a.GetOrigin() == a.GetOrigin()
    assert on_a.GetSpacing() == a.GetSpacing() and on_a.GetPixelID() == b.GetPixelID()
    assert dice(sitk.GetArrayViewFromImage(on_a) > 0, sitk.GetArrayViewFromImage(a) > 0) > 0.9
    np.testing.assert_allclose(physical_centroid(on_a), centre_xyz, atol=0.5)


# --------------------------------------------------------------------------- anti-aliasing
def test_antialias_sigmas_follow_the_skimage_rule():
    # skimage.transform.resize: sigma = max(0, (factor - 1) / 2) input voxels.
    sigmas = antialias_sigmas_mm((0.8, 0.8, 3.0), (2.0, 2.0, 2.0))
    assert sigmas == pytest.approx((0.6, 0.6, 0.0))
    assert antialias_sigmas_mm((1.0, 2.0, 5.0), (1.0, 1.0, 1.0)) == (0.0, 0.0, 0.0)


def test_antialias_filters_the_downsampled_axes_in_the_right_order():
    noise = np.random.default_rng(5).normal(size=(12, 40, 30)).astype(np.float32)  # (z, y, x)
    image = image_from_array(noise, (0.5, 0.8, 3.0))  # spacing (x, y, z)
    out = sitk.GetArrayFromImage(antialias(image, (2.0, 2.0, 2.0)))
    # x: 0.5 -> 2 mm (1.5 voxels), y: 0.8 -> 2 mm (0.75 voxels), z refined: not filtered.
    expected = gaussian_filter(noise.astype(np.float64), (0.0, 0.75, 1.5), mode="nearest")
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.shape == noise.shape and out.dtype == np.float32
    assert antialias(image, (0.5, 0.8, 3.0)) is image  # nothing downsampled


def test_antialiased_resampling_averages_the_noise_of_fine_pixels():
    # White noise on 0.7 mm pixels resampled to 2 mm: without the low-pass the 2 mm voxels
    # sample single noisy pixels; with it they average about (2 / 0.7)^2 of them.
    noise = np.random.default_rng(6).normal(size=(10, 150, 150)).astype(np.float32)
    image = image_from_array(noise, (0.7, 0.7, 2.0))
    plain = sitk.GetArrayFromImage(resample_to_spacing(image, (2.0, 2.0, 2.0), "linear"))
    smooth = sitk.GetArrayFromImage(
        resample_to_spacing(antialias(image, (2.0, 2.0, 2.0)), (2.0, 2.0, 2.0), "linear")
    )
    assert smooth[:, 2:-2, 2:-2].std() < 0.45 * plain[:, 2:-2, 2:-2].std()


# --------------------------------------------------------------------------- clip and scale
def test_clip_and_scale_equals_numpy_percentile_clipping():
    rng = np.random.default_rng(3)
    hu = rng.normal(60, 20, size=(10, 12, 14)).astype(np.float32)
    hu[0, 0, :5] = [-1000, -900, 3000, 2500, 1800]  # outliers the clip must absorb
    out = clip_and_scale(hu, 2.5, 97.5)
    low, high = np.percentile(hu.astype(np.float64), [2.5, 97.5])
    expected = (np.clip(hu.astype(np.float64), low, high) - low) / (high - low)
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.mean(out == 0.0) == pytest.approx(0.025, abs=0.002)


def test_clip_and_scale_within_a_reference_mask():
    rng = np.random.default_rng(4)
    hu = np.concatenate([rng.normal(-800, 50, 500), rng.normal(60, 10, 500)]).astype(np.float32)
    liver = np.arange(1000) >= 500
    out = clip_and_scale(hu, 2.5, 97.5, reference_mask=liver)
    low, high = np.percentile(hu[liver].astype(np.float64), [2.5, 97.5])
    np.testing.assert_allclose(out, (np.clip(hu, low, high) - low) / (high - low), atol=1e-6)
    assert np.all(out[~liver] == 0.0)  # air is below the liver's 2.5th percentile
    assert out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(PreprocessError, match="empty"):
        clip_and_scale(hu, 2.5, 97.5, reference_mask=np.zeros(1000, bool))


# --------------------------------------------------------------------------- crop
@pytest.mark.parametrize("size", [(9, 10, 11), (16, 16, 16)])
def test_crop_centres_the_tumour(size):
    spacing = (1.0, 1.0, 1.0)
    tumour = sphere((30, 40, 50), (13.3, 21.6, 24.2), 3.0, spacing)
    ct = np.random.default_rng(0).random((30, 40, 50)).astype(np.float32)
    centre = mask_centroid_vox(tumour)
    ct_box, mask_box = crop_around([ct, tumour], centre, size, pad_value=0)
    assert ct_box.shape == mask_box.shape == size
    assert ct_box.dtype == np.float32 and mask_box.dtype == np.uint8
    assert mask_box.sum() == tumour.sum()
    np.testing.assert_allclose(mask_centroid_vox(mask_box), np.array(size) // 2, atol=1.0)


def test_crop_pads_where_the_box_leaves_the_volume():
    tumour = np.zeros((20, 20, 20), np.uint8)
    tumour[0:3, 17:20, 1:4] = 1  # in a corner
    ct = np.full((20, 20, 20), 0.5, np.float32)
    stacked = np.stack([tumour, tumour])  # leading channel axis is kept
    ct_box, mask_box, stacked_box = crop_around(
        [ct, tumour, stacked], mask_centroid_vox(tumour), (12, 12, 12), pad_value=(0.0, 0, 0)
    )
    assert ct_box.shape == mask_box.shape == (12, 12, 12) and stacked_box.shape == (2, 12, 12, 12)
    assert mask_box.sum() == tumour.sum()
    # Box starts at (1-6, 18-6, 2-6) = (-5, 12, -4): 5 padded z slices, 4 padded x columns, 4 padded y rows at the end.
    assert np.all(ct_box[:5] == 0.0) and np.all(ct_box[:, :, :4] == 0.0) and np.all(ct_box[:, 8:] == 0.0)
    assert np.all(ct_box[5:, :8, 4:] == 0.5)
    np.testing.assert_array_equal(stacked_box[1], mask_box)


# --------------------------------------------------------------------------- one patient
def _write_phase(folder: Path, phase: str, spacing_zyx, shape_zyx, centre_mm_zyx, origin_xyz=(0.0, 0.0, 0.0)):
    centre_vox = [(c - o) / s for c, o, s in zip(centre_mm_zyx, reversed(origin_xyz), spacing_zyx, strict=True)]
    liver = sphere(shape_zyx, centre_vox, 14.0, spacing_zyx)
    tumour = sphere(shape_zyx, centre_vox, 7.0, spacing_zyx)
    noise = np.random.default_rng(len(phase)).normal(0, 10, shape_zyx)
    ct = (-100.0 + 160.0 * liver + 40.0 * tumour + noise).astype(np.int16)
    spacing_xyz = tuple(reversed(spacing_zyx))
    write_nifti(image_from_array(ct, spacing_xyz, origin_xyz), folder / f"{phase}.nii.gz")
    write_nifti(image_from_array(tumour, spacing_xyz, origin_xyz), folder / f"{phase}_tumour.nii.gz")
    write_nifti(image_from_array(liver, spacing_xyz, origin_xyz), folder / f"{phase}_liver.nii.gz")


def test_preprocess_patient_puts_phases_on_one_grid(tmp_path: Path):
    folder = tmp_path / "images" / "P1"
    folder.mkdir(parents=True)
    centre_mm = (20.0, 22.0, 21.0)  # (z, y, x), the same anatomy in every phase
    _write_phase(folder, "portal", (2.5, 0.8, 0.8), (16, 55, 55), centre_mm)
    _write_phase(folder, "arterial", (1.25, 1.0, 1.0), (32, 44, 44), centre_mm, origin_xyz=(-1.7, 0.6, -0.9))
    _write_phase(folder, "delayed", (2.0, 0.7, 0.7), (20, 64, 64), centre_mm, origin_xyz=(0.35, -0.35, 1.0))
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), crop_size_vox=(32, 32, 32), dtype="float32")
    image, masks, info = preprocess_patient(PatientFiles.resolve(tmp_path, "P1"), cfg, PHASES)
    assert image.shape == (3, 32, 32, 32) and image.dtype == np.float32
    assert masks.shape == (3, len(REGIONS), 32, 32, 32) and masks.dtype == np.uint8
    portal = PHASES.index("portal")
    # The reference grid is the portal grid at 1 mm (origin 0), so the anatomy's
    # centre sits at centre_mm - crop_start in the box, in every phase (within the
    # half output voxel by which nearest-neighbour resampling can shift a mask).
    true_centre = np.asarray(centre_mm) - np.asarray(info["crop_start_zyx"])
    for p, phase in enumerate(PHASES):
        np.testing.assert_allclose(mask_centroid_vox(masks[p, TUMOUR]), true_centre, atol=0.6, err_msg=phase)
        np.testing.assert_allclose(mask_centroid_vox(masks[p, LIVER]), true_centre, atol=0.6, err_msg=phase)
        assert dice(masks[p, TUMOUR] > 0, masks[portal, TUMOUR] > 0) > 0.85, phase
        assert 0.0 <= image[p].min() and image[p].max() <= 1.0
        # Tumour (brightest) > liver > outside, in every phase after scaling.
        tumour_mean = image[p][masks[p, TUMOUR] > 0].mean()
        liver_only = image[p][(masks[p, LIVER] > 0) & (masks[p, TUMOUR] == 0)].mean()
        assert tumour_mean > liver_only > image[p][masks[p, LIVER] == 0].mean()
    assert info["reference_phase"] == "portal"
    assert info["source"]["arterial"]["spacing_zyx_mm"] == [1.25, 1.0, 1.0]
    assert info["source"]["portal"]["size_zyx"] == [16, 55, 55]
    assert info["grid_size_zyx"] == [40, 44, 44]  # 16*2.5, 55*0.8 mm at 1 mm


@pytest.mark.parametrize("crop", [(24, 24, 24), (48, 20, 56), (7, 8, 6)])
def test_preprocess_patient_equals_resampling_the_whole_grid_then_cropping(tmp_path: Path, crop):
    """preprocess_patient resamples only sub-grids; the voxels must equal the whole-grid recipe."""
    folder = tmp_path / "images" / "P1"
    folder.mkdir(parents=True)
    centre_mm = (14.0, 25.0, 21.0)  # off-centre, so the (48, ., 56) box leaves the grid
    _write_phase(folder, "portal", (2.5, 0.8, 0.8), (16, 55, 55), centre_mm)
    _write_phase(folder, "arterial", (1.25, 1.0, 1.0), (32, 44, 44), centre_mm, origin_xyz=(-1.7, 0.6, -0.9))
    _write_phase(folder, "delayed", (2.0, 0.7, 0.7), (20, 64, 64), centre_mm, origin_xyz=(0.35, -0.35, 1.0))
    cfg = PreprocessConfig(
        spacing_mm=(1.0, 1.2, 1.2), crop_size_vox=crop, margin_mm=4.0, dtype="float32", clip_within_liver=False
    )
    files = PatientFiles.resolve(tmp_path, "P1")
    image, masks, info = preprocess_patient(files, cfg, PHASES)

    reference = resample_to_spacing(read_volume(files.images["portal"]), cfg.spacing_mm, "linear", 0)
    expected_image, expected_masks = [], []
    for phase in PHASES:
        ct = antialias(read_volume(files.images[phase]), tuple(reversed(cfg.spacing_mm)))
        native = sitk.GetArrayFromImage(ct).astype(np.float32)
        low, high = np.percentile(native, cfg.clip_percentiles).astype(np.float32)
        ct_grid = sitk.GetArrayFromImage(resample_onto(ct, reference, "linear", float(native.min())))
        expected_image.append((np.clip(ct_grid, low, high) - low) / (high - low))
        tumour = resample_onto(read_volume(files.tumour_masks[phase]), reference, "nearest", 0)
        liver = resample_onto(read_volume(files.liver_masks[phase]), reference, "nearest", 0)
        margin = margin_band(tumour, liver, cfg.margin_mm)
        expected_masks.append(np.stack([sitk.GetArrayFromImage(m) for m in (liver, margin, tumour)]))
    centre = mask_centroid_vox(expected_masks[PHASES.index("portal")][TUMOUR])
    want_image, want_masks = crop_around(
        [np.stack(expected_image), np.stack(expected_masks)], centre, crop, pad_value=(0.0, 0)
    )
    np.testing.assert_allclose(info["tumour_centroid_zyx_vox"], centre, atol=1e-3)
    np.testing.assert_array_equal(masks, want_masks)
    np.testing.assert_allclose(image, want_image, atol=1e-6)
    if crop == (48, 20, 56):
        assert np.all(masks[:, LIVER, :5] == 0) and np.all(image[:, :5] == 0.0)  # padding beyond the grid
        assert info["voxels"]["portal"]["tumour_fraction_in_crop"] == 1.0
    if crop == (7, 8, 6):  # a box smaller than the tumour
        assert 0 < info["voxels"]["portal"]["tumour_fraction_in_crop"] < 1


def test_preprocess_patient_on_the_real_ct_equals_the_whole_grid_recipe(real_ct_dir: Path, tmp_path: Path):
    """Real CT (direction diag(-1, -1, 1), 3 mm) with a simulated lesion inside its real liver."""
    ct = read_volume(real_ct_dir / "ct.nii.gz")
    liver = read_volume(real_ct_dir / "liver.nii.gz")
    liver_array = sitk.GetArrayFromImage(liver)
    centre = np.argwhere(liver_array > 0).mean(axis=0)  # (z, y, x) voxels
    tumour_array = sphere(liver_array.shape, centre, 12.0, tuple(reversed(ct.GetSpacing()))) & liver_array
    tumour = sitk.GetImageFromArray(tumour_array)
    tumour.CopyInformation(liver)
    folder = tmp_path / "images" / "R1"
    folder.mkdir(parents=True)
    for phase in PHASES:
        write_nifti(ct, folder / f"{phase}.nii.gz")
        write_nifti(tumour, folder / f"{phase}_tumour.nii.gz")
    write_nifti(liver, folder / "liver.nii.gz")
    cfg = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), crop_size_vox=(40, 40, 40), clip_within_liver=True)
    image, masks, info = preprocess_patient(PatientFiles.resolve(tmp_path, "R1"), cfg, PHASES)

    reference = resample_to_spacing(ct, cfg.spacing_mm, "linear", -1100)
    smooth = antialias(ct, tuple(reversed(cfg.spacing_mm)))
    liver_grid = resample_onto(liver, reference, "nearest", 0)
    tumour_grid = resample_onto(tumour, reference, "nearest", 0)
    margin = sitk.GetArrayFromImage(margin_band(tumour_grid, liver_grid, cfg.margin_mm))
    hu = sitk.GetArrayFromImage(smooth)
    low, high = np.percentile(hu[liver_array > 0], cfg.clip_percentiles).astype(np.float32)
    resampled = sitk.GetArrayFromImage(resample_onto(smooth, reference, "linear", -1100))
    scaled = (np.clip(resampled, low, high) - low) / (high - low)
    stacked = np.stack([sitk.GetArrayFromImage(liver_grid), margin, sitk.GetArrayFromImage(tumour_grid)])
    centre_grid = mask_centroid_vox(sitk.GetArrayFromImage(tumour_grid))
    want_image, want_masks = crop_around([scaled, stacked], centre_grid, cfg.crop_size_vox, pad_value=(0.0, 0))
    for p in range(len(PHASES)):
        np.testing.assert_array_equal(masks[p], want_masks)
        np.testing.assert_allclose(image[p].astype(np.float32), want_image, atol=1e-3)  # float16 storage
    assert info["clip_levels"]["portal"] == [pytest.approx(float(low)), pytest.approx(float(high))]
    assert info["voxels"]["portal"]["tumour_fraction_in_crop"] == 1.0
    # The lesion keeps its volume (3 -> 2 mm, within 5 %) and the margin straddles its boundary.
    assert masks[0, TUMOUR].sum() * 8.0 == pytest.approx(tumour_array.sum() * 27.0, rel=0.05)
    assert (masks[0, MARGIN] & masks[0, TUMOUR]).any() and (masks[0, MARGIN] & (1 - masks[0, TUMOUR])).any()


def test_preprocess_patient_names_a_missing_file(tiny_cohort: Path):
    (tiny_cohort / "images" / "P001" / "delayed_tumour.nii.gz").unlink()
    with pytest.raises(PatientPreprocessError, match=r"P001.*delayed_tumour") as err:
        preprocess_patient(PatientFiles.resolve(tiny_cohort, "P001"), PreprocessConfig(), PHASES)
    assert err.value.patient_id == "P001"


# --------------------------------------------------------------------------- cohort cache
CFG = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), crop_size_vox=(16, 16, 16), workers=1)


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_preprocess_cohort_writes_the_cache_layout(tiny_cohort: Path, tmp_path: Path):
    cache_root = tmp_path / "cache"
    # A run killed earlier left its temporary folder; it is cleared, a live run's is not.
    key = cache_key(CFG, hash_cohort_inputs(tiny_cohort))
    finished = subprocess.Popen(["true"])
    finished.wait()
    abandoned = cache_root / f".tmp-{key}-{finished.pid}"
    (abandoned / "patients").mkdir(parents=True)
    cache = preprocess_cohort(tiny_cohort, cache_root, CFG, progress=False)
    assert not abandoned.exists()
    manifest = cache.manifest
    assert list(manifest) == ["version", "cache_key", "params", "params_hash", "input_hash", "phases",
                              "regions", "shape_zyx", "spacing_mm", "dtype", "patients"]
    assert cache.root == cache_root / manifest["cache_key"]
    assert manifest["cache_key"] == f"{CFG.params_hash()}-{hash_cohort_inputs(tiny_cohort)[:16]}"
    assert manifest["phases"] == list(PHASES) and manifest["regions"] == list(REGIONS)
    assert manifest["shape_zyx"] == [16, 16, 16] and manifest["dtype"] == "float16"
    assert json.loads((cache_root / CURRENT).read_text())["cache_key"] == cache.cache_key
    assert current_cache(cache_root).root == cache.root

    cohort = pd.read_csv(tiny_cohort / "cohort.csv", dtype={"patient_id": str})
    pd.testing.assert_frame_equal(cache.labels, cohort)
    assert list(manifest["patients"]) == cohort["patient_id"].tolist()
    for pid in cache.patient_ids():
        image, masks = cache.load(pid)
        assert image.shape == (3, 16, 16, 16) and image.dtype == np.float16
        assert masks.shape == (3, 3, 16, 16, 16) and masks.dtype == np.uint8
        assert set(np.unique(masks)) == {0, 1}
        assert 0.0 <= image.min() and image.max() <= 1.0
        liver, margin, tumour = masks[:, LIVER] > 0, masks[:, MARGIN] > 0, masks[:, TUMOUR] > 0
        assert not np.any(margin & ~liver)
        assert np.any(margin & tumour) and np.any(margin & ~tumour)  # straddles the boundary
        assert not np.any(tumour & ~liver)
        info = manifest["patients"][pid]
        for phase in PHASES:
            counts = info["voxels"][phase]
            assert counts["tumour"] == tumour[PHASES.index(phase)].sum() > 0
            assert counts["margin"] == margin[PHASES.index(phase)].sum()
            assert counts["tumour_fraction_in_crop"] == 1.0
            assert info["source"][phase]["spacing_zyx_mm"] == [2.5, 0.8, 0.8]
        np.testing.assert_allclose(mask_centroid_vox(masks[PHASES.index("portal"), TUMOUR]), [8, 8, 8], atol=1.0)
    # Nothing is left behind but the cache folder and the pointer.
    assert sorted(p.name for p in cache_root.iterdir()) == sorted([cache.cache_key, CURRENT])


def test_second_run_is_a_no_op_and_new_params_get_a_new_key(tiny_cohort: Path, tmp_path: Path):
    cache_root = tmp_path / "cache"
    first = preprocess_cohort(tiny_cohort, cache_root, CFG, progress=False)
    before = _mtimes(first.root)
    again = preprocess_cohort(tiny_cohort, cache_root, CFG, progress=False)
    assert again.cache_key == first.cache_key
    assert _mtimes(first.root) == before

    wider = preprocess_cohort(tiny_cohort, cache_root, CFG.model_copy(update={"margin_mm": 8.0}), progress=False)
    assert wider.cache_key != first.cache_key and wider.root.is_dir() and first.root.is_dir()
    assert wider.cache_key.split("-")[1] == first.cache_key.split("-")[1]  # same inputs, other params
    assert json.loads((cache_root / CURRENT).read_text())["cache_key"] == wider.cache_key
    narrow_margin = first.load("P000")[1][:, MARGIN].sum()
    assert wider.load("P000")[1][:, MARGIN].sum() > narrow_margin

    # Changing one image byte-wise changes the input hash.
    (tiny_cohort / "images" / "P003" / "portal_tumour.nii.gz").write_bytes(
        (tiny_cohort / "images" / "P004" / "portal_tumour.nii.gz").read_bytes() + b"\0"
    )
    assert hash_cohort_inputs(tiny_cohort) != first.manifest["input_hash"]


def test_parallel_and_serial_runs_give_identical_arrays(tiny_cohort: Path, tmp_path: Path):
    serial = preprocess_cohort(tiny_cohort, tmp_path / "serial", CFG, progress=False)
    parallel = preprocess_cohort(
        tiny_cohort, tmp_path / "parallel", CFG.model_copy(update={"workers": 2}), progress=False
    )
    assert parallel.cache_key == serial.cache_key  # workers do not change the arrays
    for pid in serial.patient_ids():
        for a, b in zip(serial.load(pid), parallel.load(pid), strict=True):
            np.testing.assert_array_equal(a, b)
        assert serial.manifest["patients"][pid] == parallel.manifest["patients"][pid]


def test_a_repeated_patient_is_refused(tiny_cohort: Path, tmp_path: Path):
    table = pd.read_csv(tiny_cohort / "cohort.csv", dtype={"patient_id": str})
    pd.concat([table, table.iloc[[1]]]).to_csv(tiny_cohort / "cohort.csv", index=False)
    with pytest.raises(PreprocessError, match="P001"):
        preprocess_cohort(tiny_cohort, tmp_path / "cache", CFG, progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_broken_patient_names_the_patient_and_leaves_no_cache(tiny_cohort: Path, tmp_path: Path, workers):
    broken = tiny_cohort / "images" / "P002" / "portal.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated gzip
    cache_root = tmp_path / "cache"
    with pytest.raises(PreprocessError, match="P002") as err:
        preprocess_cohort(tiny_cohort, cache_root, CFG.model_copy(update={"workers": workers}), progress=False)
    assert isinstance(err.value, PatientPreprocessError) and err.value.patient_id == "P002"
    assert list(cache_root.iterdir()) == []
    assert not (cache_root / MANIFEST).exists()
