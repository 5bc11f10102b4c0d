"""Pure helpers of the benchmark scripts: output comparison, epoch counting, oracle share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_oracle import share
from benchmarks.bench_preprocess import _lps_from_hcc, _lps_from_monai, compare_patient
from benchmarks.bench_pruning import epochs_of_trial, replay_pruner


def _arrays(seed: int = 0, shape=(8, 8, 8)):
    rng = np.random.default_rng(seed)
    image = rng.random((3, *shape)).astype(np.float32)
    masks = np.zeros((3, 3, *shape), dtype=np.uint8)
    masks[:, 0, 1:7, 1:7, 1:7] = 1  # liver
    masks[:, 2, 3:5, 3:5, 3:5] = 1  # tumour
    masks[:, 1, 2:6, 2:6, 2:6] = 1  # margin
    return image, masks


def _monai_affine(origin_lps_xyz, spacing: float) -> np.ndarray:
    # MONAI's RAS affine of an LPS-identity image (voxel index order x, y, z).
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = [-origin_lps_xyz[0], -origin_lps_xyz[1], origin_lps_xyz[2]]
    return affine


def test_compare_patient_identical_outputs_on_the_same_grid():
    image, masks = _arrays()
    origin = (10.0, -4.0, 2.0)
    hcc = _lps_from_hcc(origin, (2.0, 2.0, 2.0), np.eye(3).ravel())
    monai = _lps_from_monai(_monai_affine(origin, 2.0))
    out = compare_patient(image, masks, hcc, image, masks, monai)
    assert out["grid_offset_vox"] == pytest.approx(0.0, abs=1e-9)
    assert out["voxels_compared"] == 1.0
    assert out["image_mad_liver"] == 0.0
    assert out["dice_liver"] == out["dice_margin"] == out["dice_tumour"] == 1.0


def test_compare_patient_maps_a_shifted_crop_in_physical_space():
    image, masks = _arrays(1)
    hcc = _lps_from_hcc((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), np.eye(3).ravel())
    # The MONAI crop starts one voxel further along z (LPS z + 2 mm): its voxel k is hcc's voxel k + 1.
    shifted_image = np.zeros_like(image)
    shifted_image[:, :-1] = image[:, 1:]
    shifted_masks = np.zeros_like(masks)
    shifted_masks[:, :, :-1] = masks[:, :, 1:]
    monai = _lps_from_monai(_monai_affine((0.0, 0.0, 2.0), 2.0))
    out = compare_patient(image, masks, hcc, shifted_image, shifted_masks, monai)
    assert out["voxels_compared"] == pytest.approx(7 / 8)
    assert out["image_mad_liver"] == pytest.approx(0.0, abs=1e-7)
    assert out["dice_tumour"] == 1.0 and out["dice_liver"] == 1.0


def test_compare_patient_same_levels_removes_a_level_difference():
    image, masks = _arrays(2)
    hcc_levels = [(-100.0, 150.0)] * 3
    monai_levels = [(-90.0, 140.0)] * 3
    hounsfield = image * 250.0 - 100.0
    monai_image = np.clip((hounsfield + 90.0) / 230.0, 0, 1).astype(np.float32)
    grid = _lps_from_hcc((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), np.eye(3).ravel())
    monai = _lps_from_monai(_monai_affine((0.0, 0.0, 0.0), 2.0))
    out = compare_patient(image, masks, grid, monai_image, masks, monai, hcc_levels, monai_levels)
    assert out["image_mad_liver"] > 0.01
    # Values between the two clip ranges differ by construction; inside both ranges they agree.
    assert out["image_mad_liver_same_levels"] < out["image_mad_liver"] / 5
    assert out["clip_level_abs_diff_hu"] == pytest.approx(10.0)


def test_epochs_of_trial_counts_validated_epochs(tmp_path):
    run = tmp_path / "runs" / "0003-search-s42"
    (run / "logs").mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": [0, 0, 1, 1, 2],
            "step": [3, 3, 7, 7, 11],
            "train/loss": [1.0, None, 0.9, None, None],
            "val/loss": [None, 2.0, None, 1.9, 1.8],  # pruned after the validation of epoch 2
        }
    ).to_csv(run / "logs" / "metrics.csv", index=False)
    assert epochs_of_trial(tmp_path, "runs/0003-search-s42") == {"from_log": 3, "from_metrics_json": None}
    (run / "metrics.json").write_text('{"epochs_trained": 3.0}')
    assert epochs_of_trial(tmp_path, "runs/0003-search-s42")["from_metrics_json"] == 3
    assert epochs_of_trial(tmp_path, None) == {"from_log": None, "from_metrics_json": None}


def test_share_of_the_oracle_margin():
    assert share(0.7, 0.8, "c_index") == pytest.approx(2 / 3, abs=1e-4)  # rounded for the JSON
    assert share(0.5, 0.8, "c_index") == 0.0
    # The package's one rule: an oracle at or below chance gives no share (was NaN at 0.5, negative below).
    assert share(0.6, 0.5, "c_index") is None and share(0.6, 0.4, "auc") is None
    assert share(0.6, None, "auc") is None


def test_replay_pruner_stops_a_trial_below_the_median():
    import optuna

    curves = [[0.8, 0.8, 0.8], [0.7, 0.7, 0.7], [0.1, 0.1, 0.1]]
    values = [0.8, 0.7, 0.1]
    out = replay_pruner(curves, values, optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    # Trials 0 and 1 are start-up trials (3 epochs each); trial 2 is below their median after its first epoch.
    assert out == {"epochs": 7, "pruned_trials": 1, "best_value": 0.8}
    none = replay_pruner(curves, values, optuna.pruners.NopPruner())
    assert none == {"epochs": 9, "pruned_trials": 0, "best_value": 0.8}
