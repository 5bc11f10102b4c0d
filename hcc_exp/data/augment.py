"""Training-time augmentation (paper, "DL model training"): random 3D rotation and +-3 day time jitter.

Pure functions: tensors and numbers in, tensors and numbers out; randomness only from the
generator passed in.

Two granularities compute the same thing:

* per sample (:func:`rotate`, :func:`random_rotation`, :func:`jitter_times`): one patient's
  ``(P, D, H, W)`` CT and ``(P, R, D, H, W)`` masks;
* per batch (:func:`augment_batch`, the training path): a collated batch on the model's
  device, ONE ``affine_grid`` and ONE ``grid_sample`` for the CT of every sample and phase and
  ONE gather for every mask channel. Each sample's random numbers come from
  :func:`sample_seed` ``(seed, epoch, item)`` exactly as the per-sample path draws them, so a
  batch is augmented as its samples would be one by one (tested), whatever the batch
  composition, the device or the number of loader workers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hcc_exp.config import AugmentConfig
from hcc_exp.errors import InconsistentOutcomeError, InvalidTimeError


def rotation_matrix_zyx(angles_rad: Tensor) -> Tensor:
    """``(3, 3)`` rotation acting on ``(z, y, x)`` voxel coordinates.

    Args:
        angles_rad: ``(3,)`` angles about the z (axial), y and x axes, applied in that order
            (``R = R_x @ R_y @ R_z``). A positive angle about z turns y towards x (content at
            ``(y, x)`` moves to ``(y cos a - x sin a, y sin a + x cos a)``), about y turns x
            towards z, about x turns z towards y; a quarter turn equals ``torch.rot90`` over
            those two axes (tested).
    """
    a_z, a_y, a_x = (float(a) for a in angles_rad)

    def plane(i: int, j: int, angle: float) -> Tensor:
        m = torch.eye(3, dtype=torch.float64)
        c, s = math.cos(angle), math.sin(angle)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    # axis order in the matrix: 0 = z, 1 = y, 2 = x
    r_z = plane(1, 2, a_z)  # rotation in the (y, x) plane
    r_y = plane(2, 0, a_y)  # rotation in the (x, z) plane
    r_x = plane(0, 1, a_x)  # rotation in the (z, y) plane
    return r_x @ r_y @ r_z


def rotate(image: Tensor, masks: Tensor, angles_rad: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate CT and masks about the volume centre by the same rotation.

    Args:
        image: ``(P, D, H, W)`` CT (any float dtype); resampled trilinearly, outside values
            taken from the nearest border voxel (the crop lies inside the body).
        masks: ``(P, R, D, H, W)`` binary masks (uint8, bool or float); nearest-neighbour,
            zero outside, so they stay binary.
        angles_rad: ``(3,)`` angles about z, y, x (see :func:`rotation_matrix_zyx`).

    Returns:
        ``(image, masks)`` with the input shapes and dtypes.

    Rotation is in voxel units, i.e. physically correct for isotropic spacing (the cache is
    resampled to isotropic voxels). All channels of each kind go through one ``grid_sample``.
    """
    spatial = image.shape[-3:]
    rot = rotation_matrix_zyx(angles_rad)
    # grid_sample maps each OUTPUT location to an INPUT location: apply the inverse rotation.
    # Normalised coordinates (align_corners=True) are voxel offsets from the centre divided
    # by (n - 1) / 2, and affine_grid orders them (x, y, z).
    half = torch.tensor([(n - 1) / 2 if n > 1 else 1.0 for n in spatial], dtype=torch.float64)
    inverse_zyx = torch.diag(1 / half) @ rot.T @ torch.diag(half)
    inverse_xyz = inverse_zyx.flip(0).flip(1)
    theta = torch.zeros(1, 3, 4, dtype=torch.float32)
    theta[0, :, :3] = inverse_xyz.to(torch.float32)
    grid = F.affine_grid(theta, [1, 1, *spatial], align_corners=True).to(image.device)

    ct = image.to(torch.float32).unsqueeze(0)
    out_image = F.grid_sample(ct, grid, mode="bilinear", padding_mode="border", align_corners=True)
    flat_masks = masks.reshape(1, -1, *spatial).to(torch.float32)
    out_masks = F.grid_sample(flat_masks, grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return out_image[0].to(image.dtype), out_masks.reshape(masks.shape).to(masks.dtype)


def rotation_theta(angles_rad: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """``affine_grid`` matrices of rotations about the volume centre (what :func:`rotate` builds).

    Args:
        angles_rad: ``(B, 3)`` angles about z, y, x (see :func:`rotation_matrix_zyx`).
        spatial: ``(D, H, W)`` of the volumes.

    Returns:
        ``(B, 3, 4)`` float32 ``theta`` for ``F.affine_grid(..., align_corners=True)``: the
        inverse rotation in normalised ``(x, y, z)`` coordinates, zero translation.
    """
    half = torch.tensor([(n - 1) / 2 if n > 1 else 1.0 for n in spatial], dtype=torch.float64)
    theta = torch.zeros(angles_rad.shape[0], 3, 4, dtype=torch.float32)
    for i, angles in enumerate(angles_rad):
        # grid_sample maps each OUTPUT location to an INPUT location: apply the inverse rotation.
        inverse_zyx = torch.diag(1 / half) @ rotation_matrix_zyx(angles).T @ torch.diag(half)
        theta[i, :, :3] = inverse_zyx.flip(0).flip(1).to(torch.float32)
    return theta


def nearest_sample(volumes: Tensor, grid: Tensor) -> Tensor:
    """``grid_sample(mode="nearest", padding_mode="zeros", align_corners=True)`` as a gather, in any dtype.

    Args:
        volumes: ``(B, C, D, H, W)`` of any dtype (uint8 masks stay uint8: no float copy of
            the channels).
        grid: ``(B, D', H', W', 3)`` normalised ``(x, y, z)`` sampling locations.

    Returns:
        ``(B, C, D', H', W')``: the voxel nearest to each location, 0 outside the volume.
        Source indices are computed with the float32 arithmetic of torch's ``grid_sample``
        (``((g + 1) / 2) * (n - 1)``, rounded half to even), so the result equals it (tested).
    """
    b, c = volumes.shape[:2]
    sizes = volumes.shape[2:]  # (D, H, W); grid's last axis is (x, y, z)
    flat_index = torch.zeros(grid.shape[:-1], dtype=torch.long, device=grid.device)
    inside = torch.ones(grid.shape[:-1], dtype=torch.bool, device=grid.device)
    stride = 1
    for axis, n in zip((0, 1, 2), reversed(sizes), strict=True):  # x (W), y (H), z (D)
        coordinate = torch.round(((grid[..., axis] + 1) / 2) * (n - 1))
        inside &= (coordinate >= 0) & (coordinate <= n - 1)
        flat_index += coordinate.clamp(0, n - 1).long() * stride
        stride *= n
    index = flat_index.reshape(b, 1, -1).expand(b, c, -1)
    out = volumes.reshape(b, c, -1).gather(2, index) * inside.reshape(b, 1, -1).to(volumes.dtype)
    return out.reshape(b, c, *grid.shape[1:-1])


def rotate_batch(image: Tensor, masks: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate a batch of CT and masks, every sample by its own matrix (the batched :func:`rotate`).

    Args:
        image: ``(B, P, D, H, W)`` CT; trilinear, border padding.
        masks: ``(B, P, R, D, H, W)`` binary masks; nearest neighbour (:func:`nearest_sample`),
            zero outside, dtype kept.
        theta: ``(B, 3, 4)`` from :func:`rotation_theta`.

    Returns:
        ``(image, masks)`` with the input shapes and dtypes, on the input device.
    """
    b = image.shape[0]
    spatial = image.shape[-3:]
    grid = F.affine_grid(theta.to(image.device), [b, 1, *spatial], align_corners=True)
    ct = F.grid_sample(image.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=True)
    flat_masks = nearest_sample(masks.reshape(b, -1, *spatial), grid)
    return ct.to(image.dtype), flat_masks.reshape(masks.shape)


def sample_seed(seed: int, epoch: int, item: int) -> int:
    """The seed of one training item's augmentation: a pure function of (run seed, epoch, item).

    >>> sample_seed(42, 0, 5) == sample_seed(42, 0, 5) != sample_seed(42, 1, 5)
    True
    """
    return int(np.random.SeedSequence([int(seed), int(epoch), int(item)]).generate_state(1)[0])


def draw_angles(generator: torch.Generator, max_angle_deg: float) -> Tensor:
    """``(3,)`` float64 angles in radians, uniform in ``[-max, max]`` degrees about z, y, x."""
    unit = torch.rand(3, generator=generator, dtype=torch.float64)
    return torch.deg2rad((2 * unit - 1) * max_angle_deg)


def augment_batch(batch: dict[str, Tensor], config: AugmentConfig, *, seed: int, epoch: int) -> dict[str, Tensor]:
    """Rotation and time jitter of a collated training batch, on the batch's device.

    Args:
        batch: ``image (B, P, D, H, W)``, ``masks (B, P, R, D, H, W)``, ``os_time (B,)``,
            ``rfs_time (B,)`` and ``item (B,)`` (the dataset item of each sample; copies of
            one patient are different items).
        config: what to apply (``rotation``, ``rotation_range_deg``, ``time_jitter_days``).
        seed, epoch: with ``item``, the inputs of :func:`sample_seed`.

    Returns:
        A new dict with ``image``, ``masks``, ``os_time`` and ``rfs_time`` replaced; the random
        numbers of each sample are those of the per-sample path (a torch generator for the
        angles and a numpy generator for the jitter, both seeded with :func:`sample_seed`).
    """
    items = batch["item"].reshape(-1).tolist()
    seeds = [sample_seed(seed, epoch, item) for item in items]
    out = dict(batch)
    if config.rotation and config.rotation_range_deg > 0:
        angles = torch.stack(
            [draw_angles(torch.Generator().manual_seed(s), config.rotation_range_deg) for s in seeds]
        )
        theta = rotation_theta(angles, tuple(batch["image"].shape[-3:]))
        out["image"], out["masks"] = rotate_batch(batch["image"], batch["masks"], theta)
    if config.time_jitter_days > 0:
        times = [
            jitter_times(float(os_t), float(rfs_t), np.random.default_rng(s), config.time_jitter_days)
            for os_t, rfs_t, s in zip(batch["os_time"].tolist(), batch["rfs_time"].tolist(), seeds, strict=True)
        ]
        os_time, rfs_time = zip(*times, strict=True)
        out["os_time"] = torch.tensor(os_time, dtype=batch["os_time"].dtype).to(batch["os_time"].device)
        out["rfs_time"] = torch.tensor(rfs_time, dtype=batch["rfs_time"].dtype).to(batch["rfs_time"].device)
    return out


def random_rotation(
    image: Tensor, masks: Tensor, generator: torch.Generator, max_angle_deg: float
) -> tuple[Tensor, Tensor]:
    """Rotate by angles about the three image axes drawn uniformly from ``[-max, max]`` degrees.

    Args:
        image: ``(P, D, H, W)`` CT.
        masks: ``(P, R, D, H, W)`` binary masks.
        generator: seeded ``torch.Generator`` (CPU).
        max_angle_deg: largest absolute angle about each axis; 0 returns the inputs unchanged
            (and draws nothing).

    Returns:
        Rotated ``(image, masks)``, same shapes and dtypes; every phase and region gets the
        same rotation.
    """
    if max_angle_deg == 0:
        return image, masks
    return rotate(image, masks, draw_angles(generator, max_angle_deg))


def jitter_times(
    os_time_days: float,
    rfs_time_days: float,
    generator: np.random.Generator | torch.Generator,
    max_days: int,
) -> tuple[float, float]:
    """Shift OS and RFS times by independent integer days uniform in ``[-max_days, max_days]``.

    The two shifts are independent (the paper jitters "the time variables for OS and RFS");
    then ``OS' = max(OS + d_os, 1)`` and ``RFS' = min(max(RFS + d_rfs, 1), OS')``, so times stay
    >= 1 day, RFS never exceeds OS, and each time moves by at most ``max_days`` (given
    ``RFS <= OS`` on input; a time below 1 day is first raised to 1). Independent shifts also
    reorder a patient's RFS and OS when they are close; clamping RFS to OS keeps the outcome
    consistent (an RFS event at death stays at or before death). Events are unchanged (they
    are not inputs here).

    Args:
        os_time_days: OS time (days, >= 0).
        rfs_time_days: RFS time (days, >= 0, <= OS time).
        generator: seeded ``numpy.random.Generator`` or ``torch.Generator``; two integers are drawn.
        max_days: largest shift (``AugmentConfig.time_jitter_days``).

    Returns:
        ``(os_time_days, rfs_time_days)`` as floats.

    Raises:
        InvalidTimeError: a time is negative or not finite.
        InconsistentOutcomeError: RFS time exceeds OS time.
    """
    for name, value in (("os_time_days", os_time_days), ("rfs_time_days", rfs_time_days)):
        if not math.isfinite(value) or value < 0:
            raise InvalidTimeError(f"{name} must be a finite number >= 0, got {value}", column=name)
    if rfs_time_days > os_time_days:
        raise InconsistentOutcomeError(
            f"rfs_time_days ({rfs_time_days}) exceeds os_time_days ({os_time_days})", column="rfs_time_days"
        )
    if isinstance(generator, torch.Generator):
        d_os, d_rfs = torch.randint(-max_days, max_days + 1, (2,), generator=generator).tolist()
    else:
        d_os, d_rfs = generator.integers(-max_days, max_days + 1, size=2).tolist()
    new_os = max(float(os_time_days) + d_os, 1.0)
    new_rfs = min(max(float(rfs_time_days) + d_rfs, 1.0), new_os)
    return new_os, new_rfs
