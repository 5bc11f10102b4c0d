"""Rotation keeps CT and masks aligned and binary; time jitter stays in range and is reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hcc_exp.data.augment import jitter_times, random_rotation, rotate
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
