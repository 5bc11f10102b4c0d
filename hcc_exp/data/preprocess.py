"""Preprocessing of a cohort into the cache (paper, Methods: "Imaging annotation and preprocessing").

Per patient and phase: read the CT and its tumour and liver masks, resample to
``PreprocessConfig.spacing_mm`` with SimpleITK (the portal phase defines the
grid; the other phases are resampled onto that same grid so that voxels
correspond across phases), clip at the 2.5 / 97.5 percentiles and min-max scale
to [0, 1], derive the peritumoral band (``margin_mm`` wide, centred on the tumour
boundary, clipped to the liver), and crop a fixed box centred on the portal
tumour centroid. The result goes to the cache layout of :mod:`hcc_exp.data.cache`.
Only the box (and, for the masks, the tumour around it) is ever resampled, which
gives the same voxels as resampling the whole scan and cropping, at a fraction of
the cost (see :func:`preprocess_patient`).

The first part of this module is pure (SimpleITK images / numpy arrays in and
out, no IO); :func:`preprocess_cohort` does the IO, the parallelism and the
progress bar. Array axes are (z, y, x); SimpleITK geometry is (x, y, z).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from scipy.ndimage import gaussian_filter
from scipy.special import ndtri

from hcc_exp.config import PHASES, PreprocessConfig
from hcc_exp.data.cache import (
    CACHE_VERSION,
    CURRENT,
    LABELS,
    MANIFEST,
    PATIENTS_DIR,
    REGIONS,
    PreprocessedCohort,
)
from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR, PatientFiles, read_cohort_table
from hcc_exp.data.io import atomic_path, read_volume, same_grid
from hcc_exp.errors import CohortError, HccExpError, PatientPreprocessError, PreprocessError

Interpolator = Literal["bspline", "linear", "nearest"]

INTERPOLATORS: dict[str, int] = {
    "bspline": sitk.sitkBSpline,
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
}

REFERENCE_PHASE = "portal"
"""The phase whose resampled grid every phase is resampled onto (and whose tumour centres the crop)."""

MARGIN_SMOOTHING_PER_MM = 0.4
"""Gaussian scale of the margin estimate, as a fraction of ``margin_mm`` (see :func:`margin_band_array`)."""

MARGIN_SMOOTHING_PER_VOXEL = 0.6
"""Lower bound of that scale, as a fraction of the coarsest voxel spacing (removes the voxel staircase)."""


# =========================================================================== pure computation
@dataclass(frozen=True)
class Grid:
    """A voxel grid in physical space (SimpleITK order: x, y, z; mm).

    Attributes:
        size: voxels per axis (x, y, z).
        spacing: voxel spacing (x, y, z) in mm.
        origin: physical position of the first voxel's centre.
        direction: direction cosines, row-major 3x3.
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    @property
    def size_zyx(self) -> tuple[int, ...]:
        return tuple(reversed(self.size))

    def region(self, start_zyx: Sequence[int], stop_zyx: Sequence[int]) -> Grid:
        """The sub-grid of voxels ``start_zyx <= index < stop_zyx`` (same voxel centres)."""
        start_xyz = np.asarray(list(reversed(start_zyx)), dtype=float)
        size_xyz = tuple(int(b - a) for a, b in zip(reversed(start_zyx), reversed(stop_zyx), strict=True))
        origin = np.asarray(self.origin) + self._matrix() @ (start_xyz * np.asarray(self.spacing))
        return Grid(size_xyz, self.spacing, tuple(float(o) for o in origin), self.direction)

    def corner_points(self) -> np.ndarray:
        """Physical positions (rows x, y, z) of the centres of the grid's corner voxels."""
        last = np.asarray(self.size) - 1
        corners = np.array([np.where(np.array(bits, dtype=bool), last, 0) for bits in np.ndindex(*(2,) * len(last))])
        return np.asarray(self.origin) + (corners * np.asarray(self.spacing)) @ self._matrix().T

    def continuous_index_zyx(self, points_xyz: np.ndarray) -> np.ndarray:
        """Continuous (z, y, x) indices of physical points given as rows (x, y, z)."""
        local = (np.asarray(points_xyz, dtype=float) - np.asarray(self.origin)) @ self._matrix()
        return (local / np.asarray(self.spacing))[:, ::-1]

    def _matrix(self) -> np.ndarray:
        n = len(self.size)
        return np.asarray(self.direction, dtype=float).reshape(n, n)


def spacing_grid(image: sitk.Image, spacing_zyx_mm: Sequence[float]) -> Grid:
    """The grid :func:`resample_to_spacing` resamples ``image`` onto (same origin and direction)."""
    new_spacing_xyz = tuple(float(s) for s in reversed(tuple(spacing_zyx_mm)))
    if len(new_spacing_xyz) != image.GetDimension() or min(new_spacing_xyz) <= 0:
        raise PreprocessError(f"invalid target spacing {tuple(spacing_zyx_mm)} for a {image.GetDimension()}D image")
    size = tuple(
        max(1, int(np.floor(n * s / ns + 0.5)))
        for n, s, ns in zip(image.GetSize(), image.GetSpacing(), new_spacing_xyz, strict=True)
    )
    return Grid(size, new_spacing_xyz, image.GetOrigin(), image.GetDirection())


def resample_to_spacing(
    image: sitk.Image,
    spacing_zyx_mm: Sequence[float],
    interpolator: Interpolator = "linear",
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample ``image`` to a new voxel spacing, keeping its physical extent, origin and direction.

    The output has ``round(size * spacing / new_spacing)`` voxels per axis, so the
    physical extent (size x spacing) changes by less than one output voxel. The
    origin (centre of the first voxel) and the direction cosines are kept. With
    the origin kept, the last output voxels can lie past the last input voxel
    centre (upsampling 2 -> 1 mm puts the last one on the input's outer edge, 5 ->
    1 mm two slices beyond it); the input is therefore extended by one voxel of
    its edge values first, so that these voxels are interpolated, not filled with
    ``default_value``.

    Args:
        image: a scalar SimpleITK image.
        spacing_zyx_mm: target spacing (z, y, x) in mm.
        interpolator: ``bspline`` / ``linear`` for intensities (output float32),
            ``nearest`` for masks (output keeps the input pixel type).
        default_value: value of output voxels more than one input voxel outside the
            input (none when only the spacing changes).

    Returns:
        The resampled image.
    """
    return resample_to_grid(image, spacing_grid(image, spacing_zyx_mm), interpolator, default_value)


def resample_onto(
    image: sitk.Image,
    reference: sitk.Image,
    interpolator: Interpolator = "linear",
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample ``image`` onto the grid (size, spacing, origin, direction) of ``reference``.

    Both images are placed in physical space, so a phase acquired on another grid
    lands voxel for voxel on the reference phase's grid. As in
    :func:`resample_to_spacing`, the input is extended by one voxel of its edge
    values; reference voxels further outside the input get ``default_value``.
    """
    return resample_to_grid(image, Grid.of(reference), interpolator, default_value)


def resample_to_grid(
    image: sitk.Image,
    grid: Grid,
    interpolator: Interpolator = "linear",
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample ``image`` onto ``grid`` (see :func:`resample_onto`); a sub-grid gives the same voxels."""
    # B-spline coefficients depend on the whole input, so it is always extended the
    # same way; linear and nearest read only neighbours, so only when needed.
    extend = interpolator == "bspline" or _reaches_past_centres(image, grid)
    return sitk.Resample(
        _extend_edges(image) if extend else image,
        grid.size,
        sitk.Transform(),
        _interpolator(interpolator),
        grid.origin,
        grid.spacing,
        grid.direction,
        float(default_value),
        _output_type(image, interpolator),
    )


def _reaches_past_centres(image: sitk.Image, grid: Grid) -> bool:
    # Whether a voxel of ``grid`` lies outside the box spanned by ``image``'s first
    # and last voxel centres (the grids are boxes: checking the corners suffices).
    limit = np.asarray(image.GetSize()) - 1
    for point in grid.corner_points():
        index = np.asarray(image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in point)))
        if np.any(index < -1e-6) or np.any(index > limit + 1e-6):
            return True
    return False


def _extend_edges(image: sitk.Image) -> sitk.Image:
    # One voxel of edge replication (origin moved accordingly): covers the outer
    # half-voxel border of the input box, where ITK would otherwise see "outside".
    pad = [1] * image.GetDimension()
    return sitk.ZeroFluxNeumannPad(image, pad, pad)


def _interpolator(name: str) -> int:
    try:
        return INTERPOLATORS[name]
    except KeyError:
        raise PreprocessError(f"unknown interpolator '{name}'; valid: {sorted(INTERPOLATORS)}") from None


def _output_type(image: sitk.Image, interpolator: str) -> int:
    # Interpolated intensities are fractional; masks keep their integer type.
    return image.GetPixelID() if interpolator == "nearest" else sitk.sitkFloat32


def antialias_sigmas_mm(
    source_spacing_mm: Sequence[float], target_spacing_mm: Sequence[float]
) -> tuple[float, ...]:
    """Gaussian scale (mm) per axis that low-passes a volume before downsampling it.

    ``sigma = max(0, (target / source - 1) / 2)`` source voxels, the anti-aliasing rule of
    ``skimage.transform.resize``; 0 where an axis keeps or refines its spacing.

    Args:
        source_spacing_mm: voxel spacing of the input, per axis (mm).
        target_spacing_mm: voxel spacing of the output, same axis order (mm).

    Returns:
        One sigma (mm) per axis, same order.
    """
    return tuple(
        max(0.0, (float(t) / float(s) - 1.0) / 2.0) * float(s)
        for s, t in zip(source_spacing_mm, target_spacing_mm, strict=True)
    )


def antialias(image: sitk.Image, target_spacing_xyz_mm: Sequence[float]) -> sitk.Image:
    """Low-pass ``image`` (SimpleITK, x/y/z axes) for resampling to ``target_spacing_xyz_mm``.

    A sampled Gaussian of :func:`antialias_sigmas_mm` per image axis
    (``scipy.ndimage.gaussian_filter``, edges replicated), as ``skimage.transform.resize``
    applies it; the input comes back unchanged (same object) when no axis is downsampled.

    Returns:
        A float32 image with the geometry of ``image``.
    """
    sigmas_mm = antialias_sigmas_mm(image.GetSpacing(), target_spacing_xyz_mm)
    if not any(sigmas_mm):
        return image
    sigma_zyx_vox = [
        s / float(d) for s, d in zip(reversed(sigmas_mm), reversed(image.GetSpacing()), strict=True)
    ]
    smooth = gaussian_filter(
        sitk.GetArrayViewFromImage(image).astype(np.float32), sigma_zyx_vox, mode="nearest"
    )
    out = sitk.GetImageFromArray(smooth)
    out.CopyInformation(image)
    return out


def clip_and_scale(
    array: np.ndarray,
    low_pct: float,
    high_pct: float,
    reference_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Clip intensities at two percentiles and min-max scale them to [0, 1].

    Args:
        array: intensities (any shape), e.g. HU of a (D, H, W) CT.
        low_pct, high_pct: percentiles in [0, 100] (paper: 2.5 and 97.5).
        reference_mask: same shape as ``array``; when given, the percentiles are
            computed over the voxels where it is non-zero (e.g. inside the liver),
            and still applied to the whole array.

    Returns:
        float32 array of ``array``'s shape in [0, 1]: 0 at the low percentile, 1 at
        the high one (all zeros when the two percentiles coincide).

    Raises:
        PreprocessError: the reference mask is empty or has another shape.
    """
    values = np.asarray(array, dtype=np.float32)
    low, high = clip_levels(values, low_pct, high_pct, reference_mask)
    return _scale(values, low, high)


def clip_levels(
    array: np.ndarray,
    low_pct: float,
    high_pct: float,
    reference_mask: np.ndarray | None = None,
) -> tuple[np.float32, np.float32]:
    """The two clipping levels of :func:`clip_and_scale` (array units, e.g. HU)."""
    sample = np.asarray(array)
    if reference_mask is not None:
        if reference_mask.shape != sample.shape:
            raise PreprocessError(f"reference mask shape {reference_mask.shape} != image shape {sample.shape}")
        sample = sample[np.asarray(reference_mask) > 0]
        if sample.size == 0:
            raise PreprocessError("the reference mask for intensity clipping is empty")
    low, high = _percentiles(sample, (low_pct, high_pct))
    return np.float32(low), np.float32(high)


def _percentiles(values: np.ndarray, q: Sequence[float]) -> list[float]:
    """``np.percentile(values, q)`` (linear method); for integer CT from a histogram, in one pass."""
    values = values.ravel()
    lowest = int(values.min()) if values.size and values.dtype.kind in "iu" else 0
    if values.dtype.kind not in "iu" or values.size == 0 or int(values.max()) - lowest > 1 << 20:
        return [float(v) for v in np.percentile(values.astype(np.float32, copy=False), q)]
    cumulative = np.cumsum(np.bincount((values - lowest).astype(np.intp, copy=False)))
    out = []
    for pct in q:
        # The linear method: interpolate between order statistics floor(h) and floor(h) + 1.
        h = (values.size - 1) * float(pct) / 100.0
        k = int(np.floor(h))
        below, above = np.searchsorted(cumulative, [k, min(k + 1, values.size - 1)], side="right")
        out.append(lowest + float(below) + (h - k) * float(above - below))
    return out


def _scale(values: np.ndarray, low: np.float32, high: np.float32) -> np.ndarray:
    # float32 throughout so that the clipped maximum maps to exactly 1.0.
    out = np.clip(values, low, high)
    out -= low
    if high > low:
        out /= high - low
    return out


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


def mask_centroid_vox(mask: np.ndarray) -> np.ndarray:
    """Centroid (z, y, x) in voxel indices of a non-empty mask.

    Raises:
        PreprocessError: the mask is empty.
    """
    coords = np.nonzero(np.asarray(mask) > 0)
    if coords[0].size == 0:
        raise PreprocessError("the mask is empty: no centroid")
    return np.array([c.mean() for c in coords])


def crop_start(centre_zyx_vox: Sequence[float], size_zyx: Sequence[int]) -> tuple[int, ...]:
    """First voxel of a ``size_zyx`` box whose centre voxel (index ``size // 2``) is nearest ``centre_zyx_vox``."""
    return tuple(int(np.floor(c + 0.5)) - int(n) // 2 for c, n in zip(centre_zyx_vox, size_zyx, strict=True))


def crop_around(
    arrays: Sequence[np.ndarray],
    centre_zyx_vox: Sequence[float],
    size_zyx: Sequence[int],
    pad_value: float | Sequence[float] = 0,
) -> list[np.ndarray]:
    """Crop the same fixed-size box out of each array, padding where it leaves the volume.

    Args:
        arrays: arrays whose last three axes are (D, H, W) of one shared grid
            (leading axes, e.g. channels, are kept).
        centre_zyx_vox: box centre in voxel indices (e.g. the tumour centroid); it
            lands on index ``size // 2`` of the box.
        size_zyx: box size (z, y, x) in voxels.
        pad_value: fill value outside the volume, one for all arrays or one per array.

    Returns:
        One array per input, of shape ``leading + size_zyx`` and the input's dtype.
    """
    size = tuple(int(n) for n in size_zyx)
    if len(size) != 3 or min(size) < 1:
        raise PreprocessError(f"crop size must be three positive ints, got {tuple(size_zyx)}")
    pads = list(pad_value) if isinstance(pad_value, Sequence) else [pad_value] * len(arrays)
    if len(pads) != len(arrays):
        raise PreprocessError(f"{len(pads)} pad values for {len(arrays)} arrays")
    start = crop_start(centre_zyx_vox, size)
    out: list[np.ndarray] = []
    for array, fill in zip(arrays, pads, strict=True):
        grid = array.shape[-3:]
        src, dst = [], []
        for s, n, g in zip(start, size, grid, strict=True):
            lo, hi = max(s, 0), min(s + n, g)
            if hi <= lo:  # box entirely outside the volume along this axis
                lo = hi = 0
            src.append(slice(lo, hi))
            dst.append(slice(lo - s, lo - s + (hi - lo)))
        box = np.full(array.shape[:-3] + size, fill, dtype=array.dtype)
        lead = (slice(None),) * (array.ndim - 3)
        box[lead + tuple(dst)] = array[lead + tuple(src)]
        out.append(box)
    return out


def preprocess_patient(
    files: PatientFiles,
    cfg: PreprocessConfig,
    phases: Sequence[str] = PHASES,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess one patient's phases into the cache arrays.

    The reference grid is the portal CT resampled to ``cfg.spacing_mm`` (the first
    listed phase when portal is not among ``phases``); every phase's CT and masks
    are resampled onto it in physical space, so voxels correspond across phases.
    One box of ``cfg.crop_size_vox`` centred on the reference tumour's centroid is
    kept for every phase.

    Only the parts of the reference grid that matter are resampled: the box, and
    for the masks the box plus each phase's tumour. Every voxel equals what
    resampling the whole grid and then cropping would give (a sub-grid has the
    same voxel centres), at a cost that grows with the box, not with the scan's
    field of view. With ``cfg.antialias`` each phase's CT is first low-passed along
    the axes it is downsampled on (:func:`antialias`), so a target voxel averages the
    source noise instead of sampling it. The clipping percentiles are taken over the
    phase's own (anti-aliased) voxels (inside its liver mask when
    ``cfg.clip_within_liver``) before resampling, so they do not depend on the
    partial-volume voxels that interpolation creates at the liver's edge.

    Args:
        files: the patient's resolved files.
        cfg: the preprocessing recipe.
        phases: phases to read, in channel order.

    Returns:
        ``image`` (P, D, H, W) of ``cfg.dtype`` in [0, 1] (0 where the box leaves the
        reference grid), ``masks`` (P, R, D, H, W) uint8 in {0, 1} with R =
        ``REGIONS`` (liver, margin, tumour), and an ``info`` dict of JSON types
        (source geometry, centroid, crop start, voxel counts, clip levels).

    Raises:
        PatientPreprocessError: a file is missing or unreadable, the reference
            tumour is empty, or the liver is empty while clipping inside it.
    """
    pid = files.patient_id
    phases = tuple(phases)
    if not phases:
        raise PatientPreprocessError(pid, "no phase to preprocess")
    reference_phase = REFERENCE_PHASE if REFERENCE_PHASE in phases else phases[0]
    started = time.perf_counter()
    volumes: dict[Path, sitk.Image] = {}

    def load(kind: str, phase: str) -> sitk.Image:
        table = {"image": files.images, "tumour": files.tumour_masks, "liver": files.liver_masks}[kind]
        path = table.get(phase)
        if path is None:
            raise PatientPreprocessError(pid, f"missing {kind} for phase {phase}: expected {files.expected_name(kind, phase)}")
        if path not in volumes:  # a liver mask shared by the phases is read once
            try:
                volumes[path] = read_volume(path, patient_id=pid)
            except CohortError as exc:
                raise PatientPreprocessError(pid, f"{exc.message}: {path}") from exc
        return volumes[path]

    for phase in phases:  # read everything first: a missing file fails before any work
        for kind in ("image", "tumour", "liver"):
            load(kind, phase)

    grid = spacing_grid(load("image", reference_phase), cfg.spacing_mm)
    spacing_zyx = tuple(float(s) for s in cfg.spacing_mm)
    whole = (np.zeros(3, dtype=int), np.asarray(grid.size_zyx))

    # Tumour centroid on the reference grid, from the region the tumour can occupy.
    ref_tumour = load("tumour", reference_phase)
    ref_region = _mask_region(ref_tumour, grid)
    if ref_region is None:
        raise PatientPreprocessError(pid, f"the {reference_phase} tumour mask is empty or outside its scan")
    ref_mask = _mask_on(ref_tumour, grid, ref_region)
    if not ref_mask.any():
        raise PatientPreprocessError(pid, f"the {reference_phase} tumour mask is empty on the resampled grid")
    centroid = mask_centroid_vox(ref_mask) + ref_region[0]
    start = np.asarray(crop_start(centroid, cfg.crop_size_vox))
    box = (start, start + np.asarray(cfg.crop_size_vox))
    inner = _intersect(box, whole)  # the part of the box inside the reference grid
    if inner is None:  # cannot happen: the centroid lies inside the grid
        raise PatientPreprocessError(pid, "the crop box misses the reference grid")
    into_box = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(*inner, start, strict=True))

    size = tuple(int(n) for n in cfg.crop_size_vox)
    image = np.zeros((len(phases), *size), dtype=np.float32)
    masks = np.zeros((len(phases), len(REGIONS), *size), dtype=np.uint8)
    source: dict[str, Any] = {}
    levels: dict[str, list[float]] = {}
    counts: dict[str, dict[str, Any]] = {}
    for p, phase in enumerate(phases):
        ct, tumour_img, liver_img = (load(kind, phase) for kind in ("image", "tumour", "liver"))

        # Masks: the box plus the whole tumour with a background rim, which is all the
        # margin depends on (margin_band_array extends a background edge as background).
        work = _union(inner, _mask_region(tumour_img, grid))
        tumour = _mask_on(tumour_img, grid, work)
        liver = _mask_on(liver_img, grid, work)
        margin = margin_band_array(tumour, spacing_zyx, cfg.margin_mm) & liver
        in_work = tuple(slice(int(a - w), int(b - w)) for a, b, w in zip(*inner, work[0], strict=True))
        for r, region_mask in enumerate(_by_region(liver=liver, margin=margin, tumour=tumour)):
            masks[(p, r, *into_box)] = region_mask[in_work]

        # CT: the box only; clip levels from the phase's own (anti-aliased) voxels.
        if cfg.antialias:
            ct = antialias(ct, tuple(reversed(spacing_zyx)))
        native = sitk.GetArrayViewFromImage(ct)
        reference_mask = None
        if cfg.clip_within_liver:
            reference_mask = _liver_on_ct_grid(liver_img, ct)
            if not reference_mask.any():
                raise PatientPreprocessError(pid, f"liver mask of phase {phase} is empty")
        low, high = clip_levels(native, *cfg.clip_percentiles, reference_mask=reference_mask)
        inner_grid = grid.region(*inner)
        ct_box = resample_to_grid(ct, inner_grid, cfg.image_interpolator, default_value=float(native.min()))
        image[(p, *into_box)] = _scale(sitk.GetArrayFromImage(ct_box), low, high)

        full_tumour = int(tumour.sum())
        counts[phase] = {region: int(masks[p, r].sum()) for r, region in enumerate(REGIONS)}
        counts[phase]["tumour_fraction_in_crop"] = (
            round(counts[phase]["tumour"] / full_tumour, 4) if full_tumour else None
        )
        source[phase] = {
            "size_zyx": list(reversed(ct.GetSize())),
            "spacing_zyx_mm": [round(float(s), 6) for s in reversed(ct.GetSpacing())],
        }
        levels[phase] = [round(float(low), 3), round(float(high), 3)]

    info = {
        "patient_id": pid,
        "reference_phase": reference_phase,
        "grid_size_zyx": list(grid.size_zyx),
        "source": source,
        "tumour_centroid_zyx_vox": [round(float(c), 3) for c in centroid],
        "crop_start_zyx": [int(v) for v in start],
        "voxels": counts,
        "clip_levels": levels,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return image.astype(cfg.dtype), masks, info


Region = tuple[np.ndarray, np.ndarray]
"""A box of grid indices (z, y, x): ``start <= index < stop``."""


def _by_region(**arrays: np.ndarray) -> list[np.ndarray]:
    return [arrays[name] for name in REGIONS]


def _intersect(a: Region, b: Region) -> Region | None:
    start, stop = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    return (start, stop) if np.all(stop > start) else None


def _union(a: Region, b: Region | None) -> Region:
    return a if b is None else (np.minimum(a[0], b[0]), np.maximum(a[1], b[1]))


def _mask_region(mask: sitk.Image, grid: Grid) -> Region | None:
    """Indices of ``grid`` that nearest-neighbour resampling of ``mask`` can set (None when empty).

    A grid voxel takes the value of the source voxel nearest to it, and the source
    is extended by one edge voxel before resampling, so foreground can only land
    within 1.5 source voxels of the foreground's bounding box.
    """
    array = sitk.GetArrayViewFromImage(mask)
    hits = [np.flatnonzero(np.any(array, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if hits[0].size == 0:
        return None
    lo = [h[0] - 1.5 for h in hits]  # (z, y, x) source indices
    hi = [h[-1] + 1.5 for h in hits]
    corners_xyz = np.array([[x, y, z] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])
    physical = np.array([mask.TransformContinuousIndexToPhysicalPoint(tuple(map(float, c))) for c in corners_xyz])
    index = grid.continuous_index_zyx(physical)
    start = np.floor(index.min(axis=0)).astype(int) - 1
    stop = np.ceil(index.max(axis=0)).astype(int) + 2
    return _intersect((start, stop), (np.zeros(3, dtype=int), np.asarray(grid.size_zyx)))


def _mask_on(mask: sitk.Image, grid: Grid, region: Region) -> np.ndarray:
    """Boolean (z, y, x) array of ``mask`` resampled (nearest neighbour) onto ``grid``'s ``region``."""
    resampled = resample_to_grid(mask, grid.region(*region), "nearest", 0)
    return sitk.GetArrayFromImage(resampled) > 0


def _liver_on_ct_grid(liver: sitk.Image, ct: sitk.Image) -> np.ndarray:
    if same_grid(ct, liver):
        liver = resample_onto(liver, ct, "nearest", 0)
    return sitk.GetArrayFromImage(liver) > 0


# =========================================================================== IO and orchestration
def hash_cohort_inputs(cohort_dir: Path | str, phases: Sequence[str] = PHASES) -> str:
    """blake2b hex digest of ``cohort.csv``, every file under ``images/`` (relative path, size, bytes) and the phases.

    The phases are part of the hash because they change the cached arrays.
    """
    cohort_dir = Path(cohort_dir)
    digest = hashlib.blake2b(digest_size=32)
    digest.update(("phases=" + ",".join(phases) + "\0").encode())
    files = [cohort_dir / COHORT_CSV]
    images_dir = cohort_dir / IMAGES_DIR
    if images_dir.is_dir():
        files += sorted((p for p in images_dir.rglob("*") if p.is_file()), key=lambda p: p.relative_to(cohort_dir).as_posix())
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    for path in files:
        digest.update(f"{path.relative_to(cohort_dir).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buffer):
                digest.update(view[:n])
    return digest.hexdigest()


def cache_key(cfg: PreprocessConfig, input_hash: str) -> str:
    """``<params_hash>-<first 16 hex of input_hash>``."""
    return f"{cfg.params_hash()}-{input_hash[:16]}"


def preprocess_cohort(
    cohort_dir: Path | str,
    cache_root: Path | str,
    cfg: PreprocessConfig,
    *,
    phases: Sequence[str] = PHASES,
    progress: bool = True,
    input_hash: str | None = None,
) -> PreprocessedCohort:
    """Preprocess every patient of a cohort into ``CACHE_ROOT/<cache_key>`` (layout: :mod:`hcc_exp.data.cache`).

    A cache with the same parameters and inputs is reused as is (no file is
    rewritten). Otherwise the patients are preprocessed in ``cfg.workers``
    processes (in this process when 1) into ``CACHE_ROOT/.tmp-<key>-<pid>``,
    which is renamed to ``CACHE_ROOT/<key>`` once complete. Either way
    ``CACHE_ROOT/current.json`` then names the key. The cohort is expected to be
    valid (``hcc-exp check``); this function does not validate it. Workers come
    from a fork server (spawn where there is none), so a script calling this with
    ``workers > 1`` needs the ``if __name__ == "__main__":`` guard.

    Args:
        input_hash: :func:`hash_cohort_inputs` of ``cohort_dir`` and ``phases`` when the
            caller has just computed it (it reads every byte of the cohort).

    Returns:
        The completed cache.

    Raises:
        PatientPreprocessError: a patient failed (named); no cache folder is left.
        PreprocessError: cohort.csv is missing or has no ``patient_id`` column.
    """
    started = time.perf_counter()
    cohort_dir = Path(cohort_dir)
    cache_root = Path(cache_root)
    phases = tuple(phases)
    unknown = [p for p in phases if p not in PHASES]
    if not phases or unknown:
        raise PreprocessError(f"phases must be a non-empty subset of {list(PHASES)}, got {list(phases)}")
    cohort_csv = cohort_dir / COHORT_CSV
    if not cohort_csv.is_file():
        raise PreprocessError(f"{cohort_csv} does not exist")
    table = read_cohort_table(cohort_csv)  # the table `check` validated, normalised the same way
    if "patient_id" not in table.columns:
        raise PreprocessError(f"{cohort_csv} has no patient_id column")
    patient_ids = table["patient_id"].astype(str).tolist()
    if not patient_ids:
        raise PreprocessError(f"{cohort_csv} lists no patient")
    repeated = sorted({pid for pid in patient_ids if patient_ids.count(pid) > 1})
    if repeated:
        raise PreprocessError(f"{cohort_csv} lists patient(s) more than once: {repeated}")

    input_hash = input_hash or hash_cohort_inputs(cohort_dir, phases)
    key = cache_key(cfg, input_hash)
    final = cache_root / key
    if not (final / MANIFEST).is_file():
        cache_root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_tmp(cache_root, key)
        tmp = cache_root / f".tmp-{key}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / PATIENTS_DIR).mkdir(parents=True)
        try:
            infos = _preprocess_patients(cohort_dir, tmp / PATIENTS_DIR, cfg, phases, patient_ids, progress)
            table.to_csv(tmp / LABELS, index=False, lineterminator="\n")  # normalised values, not the raw file
            manifest = {
                "version": CACHE_VERSION,
                "cache_key": key,
                "params": cfg.model_dump(mode="json"),
                "params_hash": cfg.params_hash(),
                "input_hash": input_hash,
                "cohort_dir": str(cohort_dir.resolve()),
                "phases": list(phases),
                "regions": list(REGIONS),
                "shape_zyx": list(cfg.crop_size_vox),
                "spacing_mm": list(cfg.spacing_mm),
                "dtype": cfg.dtype,
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 3),
                "patients": {pid: infos[pid] for pid in patient_ids},
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            try:
                os.rename(tmp, final)
            except OSError:
                # Another run completed the same key meanwhile: keep its copy.
                if not (final / MANIFEST).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    with atomic_path(cache_root / CURRENT) as pointer:
        pointer.write_text(json.dumps({"cache_key": key}) + "\n", encoding="utf-8")
    return PreprocessedCohort.open(final)


def _remove_abandoned_tmp(cache_root: Path, key: str) -> None:
    # A killed run leaves .tmp-<key>-<pid>; remove those whose process is gone.
    for folder in cache_root.glob(f".tmp-{key}-*"):
        try:
            os.kill(int(folder.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _preprocess_patients(
    cohort_dir: Path,
    out_dir: Path,
    cfg: PreprocessConfig,
    phases: tuple[str, ...],
    patient_ids: list[str],
    progress: bool,
) -> dict[str, dict[str, Any]]:
    workers = min(cfg.workers, len(patient_ids))
    infos: dict[str, dict[str, Any]] = {}
    columns = (
        TextColumn("[bold]preprocess[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("", total=len(patient_ids))
        if workers <= 1:
            for pid in patient_ids:
                infos[pid] = _preprocess_and_save(cohort_dir, pid, out_dir, cfg, phases)
                bar.update(task, advance=1, description=pid)
            return infos
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_worker_context(),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool:
            pending: dict[Future, str] = {
                pool.submit(_preprocess_and_save, cohort_dir, pid, out_dir, cfg, phases): pid for pid in patient_ids
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    pid = pending.pop(future)
                    error = future.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        if isinstance(error, PatientPreprocessError):
                            raise error
                        hint = (
                            " (a worker process died; a script calling preprocess_cohort with workers > 1"
                            " needs an `if __name__ == '__main__':` guard)"
                            if isinstance(error, BrokenProcessPool)
                            else ""
                        )
                        raise PatientPreprocessError(
                            pid, f"worker failed: {type(error).__name__}: {error}{hint}"
                        ) from error
                    infos[pid] = future.result()
                    bar.update(task, advance=1, description=pid)
    return infos


def _worker_context() -> mp.context.BaseContext:
    # Never fork the caller (torch / OpenMP threads may be running there). A fork
    # server is a fresh interpreter that imports this module once and forks the
    # workers from itself, so they start in milliseconds instead of re-importing
    # SimpleITK, scipy and pandas each; where there is none, spawn.
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return mp.get_context("spawn")


def _init_worker(threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _preprocess_and_save(
    cohort_dir: Path,
    patient_id: str,
    out_dir: Path,
    cfg: PreprocessConfig,
    phases: tuple[str, ...],
) -> dict[str, Any]:
    """Preprocess one patient and write its ``image.npy`` / ``masks.npy`` under ``out_dir/<patient_id>``."""
    try:
        files = PatientFiles.resolve(cohort_dir, patient_id, phases)
        image, masks, info = preprocess_patient(files, cfg, phases)
        folder = out_dir / patient_id
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "image.npy", image)
        np.save(folder / "masks.npy", masks)
        return info
    except PatientPreprocessError:
        raise
    except CohortError as exc:
        where = f": {exc.path}" if exc.path else ""
        raise PatientPreprocessError(patient_id, f"{exc.message}{where}") from exc
    except HccExpError as exc:
        raise PatientPreprocessError(patient_id, str(exc)) from exc
    except Exception as exc:  # any failure must name the patient
        raise PatientPreprocessError(patient_id, f"{type(exc).__name__}: {exc}") from exc
