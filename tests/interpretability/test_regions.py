"""Region energy, hit rate and volume share of a CAM on hand-made maps with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hcc_exp.interpretability.regions import (
    ANALYSIS_REGIONS,
    PARTITION,
    aggregate_region_statistics,
    analysis_regions,
    region_statistics,
    top_voxel_weights,
)


def _masks(shape, tumour, band, liver) -> np.ndarray:
    """(R, D, H, W) uint8 in cache order (liver, margin, tumour)."""
    return np.stack([liver, band, tumour]).astype(np.uint8).reshape(3, *shape)


def _box_case():
    """A 12^3 crop: liver = central 10^3, tumour = central 4^3, margin band = 6^3 shell around the tumour's rim."""
    shape = (12, 12, 12)
    liver = np.zeros(shape, bool)
    liver[1:11, 1:11, 1:11] = True
    tumour = np.zeros(shape, bool)
    tumour[4:8, 4:8, 4:8] = True
    band = np.zeros(shape, bool)
    band[3:9, 3:9, 3:9] = True
    band[5:7, 5:7, 5:7] = False  # band straddles the boundary: outer tumour rim + 1 voxel outside
    return shape, liver, band, tumour


def test_one_centimetre_ring_follows_the_anisotropic_spacing():
    # One row of 40 voxels, 2 mm apart along x; tumour at x = 10..14.
    shape = (1, 1, 40)
    tumour = np.zeros(shape, bool)
    tumour[0, 0, 10:15] = True
    liver = np.zeros(shape, bool)
    liver[0, 0, 2:30] = True
    regions = analysis_regions(_masks(shape, tumour, tumour, liver), spacing_zyx_mm=(5.0, 5.0, 2.0))
    ring = np.flatnonzero(regions["margin_1cm"][0, 0])
    # 2, 4, 6, 8, 10 mm from the tumour on each side.
    assert ring.tolist() == [5, 6, 7, 8, 9, 15, 16, 17, 18, 19]
    assert np.flatnonzero(regions["rest_of_liver"][0, 0]).tolist() == [2, 3, 4, *range(20, 30)]
    assert np.array_equal(regions["tumour_and_1cm_margin"], regions["tumour"] | regions["margin_1cm"])
    # The four partition regions cover every voxel exactly once.
    cover = sum(regions[name].astype(int) for name in PARTITION)
    assert np.all(cover == 1)


def test_energy_shares_match_the_analytic_values():
    shape, liver, band, tumour = _box_case()
    band_outside = band & ~tumour
    cam = np.where(tumour, 1.0, np.where(band_outside, 0.5, 0.0))
    regions = analysis_regions(_masks(shape, tumour, band, liver), (1.0, 1.0, 1.0))
    stats = region_statistics(cam, regions)

    n_t, n_bo = tumour.sum(), band_outside.sum()  # 64 and 216 - 64 = 152
    total = n_t * 1.0 + n_bo * 0.5
    assert stats.loc["tumour", "energy_share"] == pytest.approx(n_t / total)
    # The band holds the tumour rim (64 - 8 voxels at 1) and its outside part (at 0.5).
    assert stats.loc["peritumoral_margin", "energy_share"] == pytest.approx((56 + 0.5 * n_bo) / total)
    # Everything with energy lies within 1 cm of the tumour: all of it is tumour + ring.
    assert stats.loc["tumour_and_1cm_margin", "energy_share"] == pytest.approx(1.0)
    assert stats.loc["margin_1cm", "energy_share"] == pytest.approx(0.5 * n_bo / total)
    assert stats.loc["rest_of_liver", "energy_share"] == 0.0
    assert stats.loc["outside_liver", "energy_share"] == 0.0
    assert stats.loc["tumour", "volume_share"] == pytest.approx(64 / 12**3)
    assert stats.loc[list(PARTITION), "volume_share"].sum() == pytest.approx(1.0)
    assert stats.loc[list(PARTITION), "energy_share"].sum() == pytest.approx(1.0)
    assert list(stats.index) == list(ANALYSIS_REGIONS)


def test_hit_rate_counts_the_top_five_percent():
    shape = (10, 10, 10)  # 1000 voxels -> top 5 % = 50 voxels
    tumour = np.zeros(shape, bool)
    tumour[:3] = True  # slices 0-2
    liver = np.zeros(shape, bool)
    liver[:6] = True  # tumour + slices 3-5
    rng = np.random.default_rng(0)
    cam = rng.uniform(0.0, 0.1, size=shape)
    # 30 top voxels in the tumour, 20 outside the liver (slices 8-9).
    cam[0, 0, :10] = cam[1, 0, :10] = cam[2, 0, :10] = 5.0 + rng.uniform(size=10)
    cam[9, 0, :10] = cam[9, 1, :10] = 5.0 + rng.uniform(size=10)
    regions = {
        "tumour": tumour,
        "rest_of_liver": liver & ~tumour,
        "outside_liver": ~liver,
    }
    stats = region_statistics(cam, regions, top_fraction=0.05)
    assert stats.loc["tumour", "hit_rate"] == pytest.approx(0.6)
    assert stats.loc["rest_of_liver", "hit_rate"] == pytest.approx(0.0)
    assert stats.loc["outside_liver", "hit_rate"] == pytest.approx(0.4)
    assert stats.loc["tumour", "volume_share"] == pytest.approx(0.3)


def test_ties_at_the_threshold_share_the_weight():
    cam = np.zeros((4, 5, 5))  # 100 voxels, k = 5
    cam[0, 0, :3] = 2.0  # 3 clear winners
    cam[1] = 1.0  # 25 voxels tied for the remaining 2 places
    weights = top_voxel_weights(cam, 0.05)
    assert weights.sum() == pytest.approx(5.0)
    assert np.all(weights[0, 0, :3] == 1.0)
    assert np.allclose(weights[1], 2 / 25)
    # A constant map: the hit rate falls back to the volume share (no arbitrary tie-break).
    region = np.zeros((4, 5, 5), bool)
    region[:1] = True
    stats = region_statistics(np.full((4, 5, 5), 0.3), {"r": region})
    assert stats.loc["r", "hit_rate"] == pytest.approx(0.25)
    assert stats.loc["r", "energy_share"] == pytest.approx(0.25)


def test_shares_do_not_depend_on_the_scale_of_the_map_and_ignore_negative_values():
    shape, liver, band, tumour = _box_case()
    regions = analysis_regions(_masks(shape, tumour, band, liver), (1.5, 1.5, 1.5))
    cam = np.random.default_rng(1).normal(size=shape)
    base = region_statistics(cam, regions)
    scaled = region_statistics(7.5 * cam, regions)
    pd.testing.assert_frame_equal(base, scaled)
    # Energy is the positive mass only: shifting negative voxels further down changes nothing.
    pushed = np.where(cam < 0, cam - 10.0, cam)
    assert np.allclose(region_statistics(pushed, regions)["energy_share"], base["energy_share"])
    positive = np.maximum(cam, 0)
    assert base.loc["tumour", "energy_share"] == pytest.approx(positive[tumour].sum() / positive.sum())


def test_all_zero_map_has_undefined_shares():
    shape, liver, band, tumour = _box_case()
    stats = region_statistics(np.zeros(shape), {"tumour": tumour})
    assert np.isnan(stats.loc["tumour", "energy_share"])
    assert np.isnan(stats.loc["tumour", "hit_rate"])
    assert stats.loc["tumour", "volume_share"] == pytest.approx(64 / 12**3)


def test_aggregate_averages_phases_then_patients():
    rows = []
    # patient A: tumour energy 0.8 (arterial) and 0.6 (portal) -> 0.7; patient B: 0.2 and 0.4 -> 0.3.
    for pid, values in (("A", (0.8, 0.6)), ("B", (0.2, 0.4))):
        for phase, energy in zip(("arterial", "portal"), values, strict=True):
            rows.append(
                {"patient_id": pid, "split": "train", "head": "os", "phase": phase, "region": "tumour",
                 "energy_share": energy, "hit_rate": energy / 2, "volume_share": 0.1}
            )
    summary = aggregate_region_statistics(pd.DataFrame(rows)).set_index("phase")
    assert summary.loc["all", "energy_share_mean"] == pytest.approx(0.5)
    assert summary.loc["all", "energy_share_sd"] == pytest.approx(np.std([0.7, 0.3], ddof=1))
    assert summary.loc["arterial", "energy_share_mean"] == pytest.approx(0.5)
    assert summary.loc["portal", "hit_rate_mean"] == pytest.approx(0.25)
    assert summary.loc["all", "n_patients"] == 2
    # Both patients beat chance: exact one-sided Wilcoxon p with n = 2 is 1/4.
    assert summary.loc["all", "p_energy_gt_volume"] == pytest.approx(0.25)


def test_rounding_noise_on_a_constant_map_is_a_tie():
    # Trilinear upsampling of a 1-voxel float32 map is constant only up to rounding.
    noisy = np.float32(0.3) + np.random.default_rng(2).normal(0, 1e-8, size=(4, 5, 5)).astype(np.float32)
    region = np.zeros((4, 5, 5), bool)
    region[:1] = True
    stats = region_statistics(noisy, {"r": region})
    assert stats.loc["r", "hit_rate"] == pytest.approx(0.25)
