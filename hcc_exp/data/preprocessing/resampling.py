"""Resampling of CT volumes and masks onto a target grid, and anti-aliasing before downsampling.

nnU-Net v2's ``preprocessing/resampling`` counterpart. Pure: SimpleITK images in,
SimpleITK images out, no IO. SimpleITK geometry is (x, y, z); array axes are (z, y, x).

>>> import SimpleITK as sitk
>>> image = sitk.Image(10, 10, 5, sitk.sitkFloat32)
>>> image.SetSpacing((1.0, 1.0, 2.0))
>>> spacing_grid(image, (2.0, 2.0, 2.0)).size       # (x, y, z) sizes; in-plane 10 x 1 mm -> 5 x 2 mm
(5, 5, 5)
>>> spacing_grid(image, (1.0, 2.0, 2.0)).size       # spacing given as (z, y, x): z 5 x 2 mm -> 10 x 1 mm
(5, 5, 10)
>>> antialias_sigmas_mm((1.0, 1.0, 2.0), (2.0, 2.0, 2.0))
(0.5, 0.5, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from hcc_exp.errors import PreprocessError

Interpolator = Literal["bspline", "linear", "nearest"]

INTERPOLATORS: dict[str, int] = {
    "bspline": sitk.sitkBSpline,
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
}


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
    smooth = sitk.GetArrayViewFromImage(image).astype(np.float32)
    antialias_array(smooth, image.GetSpacing(), target_spacing_xyz_mm)
    out = sitk.GetImageFromArray(smooth)
    out.CopyInformation(image)
    return out


def antialias_array(
    array_zyx: np.ndarray, spacing_xyz_mm: Sequence[float], target_spacing_xyz_mm: Sequence[float]
) -> np.ndarray:
    """:func:`antialias` on a float32 (z, y, x) array, in place (no second volume in memory).

    ``scipy.ndimage.gaussian_filter`` filters one axis after the other through line buffers,
    writing into its input from the second axis on anyway, so the in-place result is the same.

    Returns:
        ``array_zyx`` itself (filtered).
    """
    if array_zyx.dtype != np.float32:
        raise PreprocessError(f"antialias_array needs a float32 array, not {array_zyx.dtype}")
    sigmas_mm = antialias_sigmas_mm(spacing_xyz_mm, target_spacing_xyz_mm)
    if any(sigmas_mm):
        sigma_zyx_vox = [
            s / float(d) for s, d in zip(reversed(sigmas_mm), reversed(tuple(spacing_xyz_mm)), strict=True)
        ]
        gaussian_filter(array_zyx, sigma_zyx_vox, output=array_zyx, mode="nearest")
    return array_zyx
