"""Fixed-size boxes around the tumour centroid (nnU-Net's ``cropping``).

Pure numpy. A box is a pair ``(start, stop)`` of (z, y, x) voxel indices, ``start <= index < stop``.

>>> import numpy as np
>>> crop_start((10.2, 4.6, 0.0), (4, 4, 4))       # the centre lands on index size // 2
(8, 3, -2)
>>> [b.tolist() for b in intersect_boxes((np.array([0, 0, 0]), np.array([4, 4, 4])), (np.array([2, 2, 2]), np.array([6, 6, 6])))]
[[2, 2, 2], [4, 4, 4]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hcc_exp.errors import PreprocessError

Box = tuple[np.ndarray, np.ndarray]
"""A box of grid indices (z, y, x): ``start <= index < stop``."""


def intersect_boxes(a: Box, b: Box) -> Box | None:
    """The common voxels of two boxes (None when they do not overlap)."""
    start, stop = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    return (start, stop) if np.all(stop > start) else None


def union_boxes(a: Box, b: Box | None) -> Box:
    """The smallest box holding both (``a`` when ``b`` is None)."""
    return a if b is None else (np.minimum(a[0], b[0]), np.maximum(a[1], b[1]))


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
