"""Rotation keeps CT and masks aligned and binary; time jitter stays in range and is reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hcc_exp.config import AugmentConfig
from hcc_exp.data.augment import (
    augment_batch,
    draw_angles,
    jitter_times,
    nearest_sample,
    random_rotation,
    rotate,
    rotate_batch,
    rotation_theta,
    sample_seed,
)
from hcc_exp.errors import InconsistentOutcomeError, InvalidTimeError


def cube_sample(size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """(P=3, D, H, W) float16 CT with a bright off-centre box; masks (3, 3, ...) uint8, tumour = the box."""
    image = torch.full((3, size, size, size), 0.2)
    box = torch.zeros(size, size, size, dtype=torch.bool)
    box[5:13, 8:18, 4:11] = True
    image[:, box] = 0.9
    masks = torch.zeros(3, 3, size, size, size, dtype=torch.uint8)
    masks[:, 0] = 1  # liver everywhere
    masks[:, 2] = box.to(torch.uint8)
    return image.to(torch.float16), masks


@pytest.mark.parametrize(("angles", "dims"), [((1, 0, 0), (1, 2)), ((0, 1, 0), (2, 0)), ((0, 0, 1), (0, 1))])
def test_quarter_turns_match_rot90(angles: tuple[int, int, int], dims: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 9, 9, 9, generator=g)
    masks = (torch.rand(2, 3, 9, 9, 9, generator=g) > 0.5).to(torch.uint8)
    out_image, out_masks = rotate(image, masks, torch.tensor(angles, dtype=torch.float64) * math.pi / 2)
    torch.testing.assert_close(
        out_image, torch.rot90(image, 1, dims=(dims[0] + 1, dims[1] + 1)), atol=1e-5, rtol=0
    )
    assert torch.equal(out_masks, torch.rot90(masks, 1, dims=(dims[0] + 2, dims[1] + 2)))


def test_zero_angle_is_identity() -> None:
    image, masks = cube_sample()
    out_image, out_masks = rotate(image, masks, torch.zeros(3))
    torch.testing.assert_close(out_image, image, atol=1e-3, rtol=0)  # float16 storage
    assert torch.equal(out_masks, masks)
    same_image, same_masks = random_rotation(image, masks, torch.Generator().manual_seed(0), 0.0)
    assert torch.equal(same_image, image) and torch.equal(same_masks, masks)


def test_rotation_keeps_masks_binary_and_aligned_with_ct() -> None:
    image, masks = cube_sample()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        out_image, out_masks = random_rotation(image, masks, g, 30.0)
        assert out_image.dtype == torch.float16 and out_masks.dtype == torch.uint8
        assert out_image.shape == image.shape and out_masks.shape == masks.shape
        assert set(out_masks.unique().tolist()) <= {0, 1}
        assert not torch.equal(out_masks, masks)
        bright = out_image[0] > 0.55
        tumour = out_masks[0, 2].bool()
        dice = 2 * (bright & tumour).sum() / (bright.sum() + tumour.sum())
        assert float(dice) > 0.9
        # every phase gets the same rotation
        assert torch.equal(out_masks[0], out_masks[2]) and torch.equal(out_image[0], out_image[1])


def test_random_rotation_is_reproducible_and_varies() -> None:
    image, masks = cube_sample()
    a = random_rotation(image, masks, torch.Generator().manual_seed(7), 15.0)
    b = random_rotation(image, masks, torch.Generator().manual_seed(7), 15.0)
    c = random_rotation(image, masks, torch.Generator().manual_seed(8), 15.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "make_generator", [np.random.default_rng, lambda s: torch.Generator().manual_seed(s)]
)
def test_jitter_stays_within_three_days_keeps_order_and_is_reproducible(make_generator) -> None:
    cases = [(400.0, 250.0), (300.0, 300.0), (2.0, 1.0), (5.0, 4.0), (1.0, 1.0)]
    generator = make_generator(0)
    shifts = set()
    for _ in range(200):
        for os_time, rfs_time in cases:
            new_os, new_rfs = jitter_times(os_time, rfs_time, generator, 3)
            assert abs(new_os - os_time) <= 3 and abs(new_rfs - rfs_time) <= 3
            assert new_rfs <= new_os and new_rfs >= 1 and new_os >= 1
            assert float(new_os).is_integer()
            shifts.add(new_os - os_time)
    assert shifts == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
    first = [jitter_times(400.0, 250.0, make_generator(42), 3) for _ in range(2)]
    assert first[0] == first[1]
    assert jitter_times(400.0, 250.0, make_generator(0), 0) == (400.0, 250.0)


def test_jitter_refuses_inconsistent_outcomes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InconsistentOutcomeError):
        jitter_times(100.0, 120.0, rng, 3)
    with pytest.raises(InvalidTimeError):
        jitter_times(-1.0, 0.0, rng, 3)


# --------------------------------------------------------------------------- per batch
def batch_of(n: int, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A collated batch as the loader yields it: float32 CT, uint8 masks, times, items."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, size, generator=g)
    masks = (torch.rand(n, 3, 3, size, size, size, generator=g) > 0.5).to(torch.uint8)
    os_time = torch.tensor([400.0, 30.0, 2.0, 1000.0, 5.0, 77.0][:n])
    rfs_time = torch.tensor([250.0, 30.0, 1.0, 10.0, 4.0, 70.0][:n])
    return {"image": image, "masks": masks, "os_time": os_time, "rfs_time": rfs_time,
            "item": torch.arange(n) * 5 + 3, "mvi": torch.zeros(n, dtype=torch.long)}


def test_nearest_sample_equals_grid_sample_nearest() -> None:
    g = torch.Generator().manual_seed(0)
    volumes = torch.randint(0, 2, (2, 4, 7, 9, 11), generator=g, dtype=torch.uint8)
    # locations inside, outside and exactly between two voxels (ties round half to even)
    grid = torch.rand(2, 5, 6, 8, 3, generator=g) * 2.6 - 1.3
    grid[0, 0, 0, :4, 0] = torch.tensor([-1.0, 1.0, 0.0, 0.1])  # x = 0.1 -> 5.5 voxels: a tie
    expected = F.grid_sample(volumes.float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    out = nearest_sample(volumes, grid)
    assert out.dtype == torch.uint8
    assert torch.equal(out.float(), expected)


def test_rotate_batch_equals_rotating_each_sample() -> None:
    batch = batch_of(4, size=12)
    g = torch.Generator().manual_seed(3)
    angles = torch.stack([draw_angles(g, 30.0) for _ in range(4)])
    image, masks = rotate_batch(batch["image"], batch["masks"], rotation_theta(angles, (12, 12, 12)))
    for i in range(4):
        one_image, one_masks = rotate(batch["image"][i], batch["masks"][i], angles[i])
        torch.testing.assert_close(image[i], one_image, rtol=0, atol=1e-6)
        assert torch.equal(masks[i], one_masks)
    assert masks.dtype == torch.uint8 and set(masks.unique().tolist()) <= {0, 1}


def test_augment_batch_draws_what_the_per_sample_path_draws() -> None:
    """Same seed (run seed, epoch, item) -> the same rotation and jitter as one sample at a time."""
    config = AugmentConfig(rotation_range_deg=20.0, time_jitter_days=3)
    batch = batch_of(6)
    out = augment_batch(batch, config, seed=5, epoch=2)
    for i, item in enumerate(batch["item"].tolist()):
        s = sample_seed(5, 2, item)
        image, masks = random_rotation(batch["image"][i], batch["masks"][i], torch.Generator().manual_seed(s), 20.0)
        os_t, rfs_t = jitter_times(float(batch["os_time"][i]), float(batch["rfs_time"][i]), np.random.default_rng(s), 3)
        torch.testing.assert_close(out["image"][i], image, rtol=0, atol=1e-6)
        assert torch.equal(out["masks"][i], masks)
        assert float(out["os_time"][i]) == os_t and float(out["rfs_time"][i]) == rfs_t
    # the input batch is not modified, other keys pass through
    assert torch.equal(batch["image"], batch_of(6)["image"]) and out["mvi"] is batch["mvi"]


def test_augment_batch_keeps_masks_binary_aligned_and_jitter_bounded() -> None:
    image, masks = cube_sample()
    n = 4
    batch = {"image": image.float().expand(n, *image.shape).clone(), "masks": masks.expand(n, *masks.shape).clone(),
             "os_time": torch.full((n,), 300.0), "rfs_time": torch.full((n,), 299.0), "item": torch.arange(n)}
    for epoch in range(5):
        out = augment_batch(batch, AugmentConfig(rotation_range_deg=30.0), seed=0, epoch=epoch)
        assert out["masks"].dtype == torch.uint8 and set(out["masks"].unique().tolist()) <= {0, 1}
        for i in range(n):
            bright = out["image"][i, 0] > 0.55
            tumour = out["masks"][i, 0, 2].bool()
            assert float(2 * (bright & tumour).sum() / (bright.sum() + tumour.sum())) > 0.9
        assert ((out["os_time"] - 300).abs() <= 3).all() and (out["rfs_time"] <= out["os_time"]).all()
        assert not torch.equal(out["masks"][0], out["masks"][1])  # every item its own rotation


def test_augment_batch_is_a_function_of_seed_epoch_and_item() -> None:
    config = AugmentConfig()
    batch = batch_of(3)
    a = augment_batch(batch, config, seed=1, epoch=0)
    assert torch.equal(a["image"], augment_batch(batch, config, seed=1, epoch=0)["image"])
    assert not torch.equal(a["image"], augment_batch(batch, config, seed=1, epoch=1)["image"])
    assert not torch.equal(a["image"], augment_batch(batch, config, seed=2, epoch=0)["image"])
    # a sample's augmentation does not depend on its batch-mates or its position in the batch
    flipped = {k: v.flip(0) for k, v in batch.items()}
    assert torch.equal(augment_batch(flipped, config, seed=1, epoch=0)["image"], a["image"].flip(0))


def test_augment_batch_without_rotation_or_jitter_is_identity() -> None:
    batch = batch_of(2)
    out = augment_batch(batch, AugmentConfig(rotation=False, time_jitter_days=0), seed=0, epoch=0)
    assert out["image"] is batch["image"] and out["os_time"] is batch["os_time"]
