"""Intensity window: percentile clipping and min-max scaling to [0, 1] (nnU-Net's ``normalization``).

Pure numpy; the percentiles follow ``np.percentile``'s linear method (integer CT is
counted from a histogram in one pass, with the same result).

>>> import numpy as np
>>> clip_and_scale(np.arange(101), 10, 90)[[0, 10, 50, 90, 100]].tolist()
[0.0, 0.0, 0.5, 1.0, 1.0]
>>> [float(v) for v in clip_levels(np.arange(101), 2.5, 97.5)]
[2.5, 97.5]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hcc_exp.errors import PreprocessError


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
    return apply_window(values, low, high)


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


def apply_window(values: np.ndarray, low: np.float32, high: np.float32) -> np.ndarray:
    """Clip float32 ``values`` (any shape) to ``[low, high]`` and map that window onto [0, 1].

    float32 throughout, so that the clipped maximum maps to exactly 1.0; all zeros when
    ``high <= low``.

    >>> apply_window(np.array([-5.0, 0.0, 5.0, 20.0], dtype=np.float32), np.float32(0), np.float32(10)).tolist()
    [0.0, 0.0, 0.5, 1.0]
    """
    out = np.clip(values, low, high)
    out -= low
    if high > low:
        out /= high - low
    return out
