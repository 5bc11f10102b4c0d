"""The ROI regions of the cache: the peritumoral margin band around the tumour (liver and tumour come as masks).

Pure numpy / SimpleITK. See :func:`margin_band_array` for how the boundary distance is measured.

>>> import numpy as np
>>> z, y, x = np.mgrid[:21, :21, :21]
>>> ball = ((z - 10) ** 2 + (y - 10) ** 2 + (x - 10) ** 2) <= 5 ** 2   # 5 mm ball at 1 mm
>>> band = margin_band_array(ball, (1.0, 1.0, 1.0), margin_mm=2.0)      # |d| <= 1 mm
>>> bool(band[10, 10, 10]), bool(band[10, 10, 15]), bool(band[10, 10, 18])
(False, True, False)
>>> by_region(liver=1, margin=2, tumour=3)
[1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import SimpleITK as sitk
from scipy.special import ndtri

from hcc_exp.errors import PreprocessError
from hcc_exp.vocabulary import REGIONS

MARGIN_SMOOTHING_PER_MM = 0.4
"""Gaussian scale of the margin estimate, as a fraction of ``margin_mm`` (see :func:`margin_band_array`)."""

MARGIN_SMOOTHING_PER_VOXEL = 0.6
"""Lower bound of that scale, as a fraction of the coarsest voxel spacing (removes the voxel staircase)."""

T = TypeVar("T")


def by_region(**arrays: T) -> list[T]:
    """The per-region values ordered as the mask channels (:data:`hcc_exp.vocabulary.REGIONS`)."""
    return [arrays[name] for name in REGIONS]


def margin_band_array(
    tumour: np.ndarray,
    spacing_zyx_mm: Sequence[float],
    margin_mm: float,
) -> np.ndarray:
    """Voxels within ``margin_mm / 2`` of the tumour boundary, inside or outside (not clipped to the liver).

    The paper's 4 mm margin is 2 mm inside plus 2 mm outside the tumour boundary,
    so a voxel belongs to the band when the signed distance ``d`` of its centre to
    the tumour surface satisfies ``|d| <= margin_mm / 2``.

    Why not a threshold on a voxel distance map (e.g. ``SignedMaurerDistanceMap``):
    distances between voxel centres take few values at this scale (2, sqrt(5),
    sqrt(6) voxels...), so with 1-2 voxels per half-margin the band volume jumps by
    ~20 % between neighbouring thresholds, and the mask's staircase surface makes
    the band too thick. ``|d| <= margin_mm / 2`` on the Maurer map is off by +7 %
    (1 mm), +17 % (2 mm, where the half-margin is one voxel) and +17 % (a 2.5 mm
    slice mask resampled to 1 mm) for a 10 mm ball; erosion / dilation by
    ``margin_mm / 2`` by -14 %, -18 % and -33 % (0.8 x 0.8 x 2.5 mm grid).

    Here the surface is located to sub-voxel precision instead: the tumour mask is
    smoothed with a Gaussian of scale ``sigma`` (large enough to erase the voxel
    staircase); near a plane boundary the smoothed mask equals ``Phi(-d / sigma)``,
    so ``d = -sigma * Phi^-1(f)``, and a curved boundary shifts the level sets
    inward by ``sigma^2 * H`` (``H`` the mean curvature of the level set), which is
    added back. For balls of radius 10-15 mm the band volume then matches the
    analytic shell within 2 % at 1 mm and on a 0.8 x 0.8 x 2.5 mm grid, within 3 %
    for a 2.5 mm slice mask resampled to 1 mm and within 5 % at 2 mm (-9 % for a
    6 mm ball at 2 mm, three voxels across). Details finer than ``sigma`` (about
    0.4 x ``margin_mm``) are smoothed out of the band.

    Args:
        tumour: (D, H, W) mask, non-zero inside the tumour.
        spacing_zyx_mm: voxel spacing (z, y, x) in mm.
        margin_mm: full band width in mm (paper: 4).

    Returns:
        (D, H, W) bool band; all False when the tumour mask is empty.
    """
    inside = np.asarray(tumour) > 0
    band = np.zeros(inside.shape, dtype=bool)
    if margin_mm <= 0 or not inside.any():
        return band
    spacing = np.asarray(spacing_zyx_mm, dtype=float)
    half = margin_mm / 2.0
    sigma, reach = _margin_geometry(spacing_zyx_mm, margin_mm)

    # Work on the tumour's bounding box plus the band and the Gaussian's reach: the
    # result is the same as on the whole volume, at a fraction of the cost.
    region, pads = [], []
    for axis, n in enumerate(inside.shape):
        hits = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = int(hits[0]) - reach[axis], int(hits[-1]) + 1 + reach[axis]
        region.append(slice(max(lo, 0), min(hi, n)))
        pads.append((max(0, -lo), max(0, hi - n)))
    # Beyond the volume's edge the tumour is assumed to continue as it was at the
    # edge, so a tumour cut by the field of view gets no band along the cut.
    sub = inside[tuple(region)].astype(np.float32)
    if any(any(p) for p in pads):
        sub = np.pad(sub, pads, mode="edge")

    smooth_img = sitk.GetImageFromArray(sub)
    smooth_img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    f = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(smooth_img, sigma)).astype(np.float64)

    eps = 1e-6
    valid = (f > eps) & (f < 1.0 - eps)
    distance = -sigma * ndtri(np.clip(f, eps, 1.0 - eps))
    # Mean curvature of the level sets, kappa = -div(grad f / |grad f|) (> 0 for a convex tumour).
    grads = np.gradient(f, *spacing)
    norm = np.sqrt(sum(g * g for g in grads)) + 1e-12
    kappa = -sum(np.gradient(g / norm, s, axis=a) for a, (g, s) in enumerate(zip(grads, spacing, strict=True)))
    distance -= 0.5 * sigma**2 * np.clip(kappa, -2.0 / sigma, 2.0 / sigma)
    sub_band = valid & (np.abs(distance) <= half)

    unpad = tuple(slice(before, sub_band.shape[a] - after) for a, (before, after) in enumerate(pads))
    band[tuple(region)] = sub_band[unpad]
    return band


def _margin_geometry(spacing_zyx_mm: Sequence[float], margin_mm: float) -> tuple[float, np.ndarray]:
    """Gaussian scale (mm) of :func:`margin_band_array` and its reach (z, y, x voxels) beyond the tumour.

    Voxels further than ``reach`` from the tumour's bounding box neither belong to
    the band nor influence it.
    """
    spacing = np.asarray(spacing_zyx_mm, dtype=float)
    sigma = max(MARGIN_SMOOTHING_PER_MM * margin_mm, MARGIN_SMOOTHING_PER_VOXEL * float(spacing.max()))
    reach = np.ceil((margin_mm / 2.0 + 4.0 * sigma) / spacing).astype(int) + 1
    return sigma, reach


def margin_band(tumour: sitk.Image, liver: sitk.Image, margin_mm: float) -> sitk.Image:
    """Peritumoral band of width ``margin_mm`` centred on the tumour boundary, clipped to the liver.

    See :func:`margin_band_array` for how the boundary distance is measured.

    Args:
        tumour: binary tumour mask.
        liver: binary liver mask on the same grid.
        margin_mm: full band width in mm (paper: 4 mm = 2 mm inside + 2 mm outside).

    Returns:
        uint8 mask on the tumour's grid: ``band & liver``.

    Raises:
        PreprocessError: the masks are not on the same grid.
    """
    if tumour.GetSize() != liver.GetSize():
        raise PreprocessError(f"tumour mask size {tumour.GetSize()} != liver mask size {liver.GetSize()}")
    band = margin_band_array(
        sitk.GetArrayViewFromImage(tumour),
        tuple(reversed(tumour.GetSpacing())),
        margin_mm,
    )
    band &= sitk.GetArrayViewFromImage(liver) > 0
    out = sitk.GetImageFromArray(band.astype(np.uint8))
    out.CopyInformation(tumour)
    return out
