"""IBSI-defined radiomics features of a region of interest: intensity statistics and 3D GLCM.

pyradiomics 3.1.0 is a source release with inconsistent metadata that needs a compiler (it
does not build here), so the baseline computes the features itself, following the Image
Biomarker Standardisation Initiative's reference manual (IBSI 1; Zwanenburg et al.,
Radiology 2020;295:328; https://ibsi.readthedocs.io, "Image features"), and is tested
against the manual's digital-phantom reference values:

* :func:`intensity_statistics`: the 18 intensity-based statistical features (IBSI family
  UHIW) of the ROI's intensities, e.g. mean (Q4LE), variance (ECT3, biased), skewness (KE2A),
  excess kurtosis (IPH6), percentiles, mean / robust / median absolute deviation, energy, RMS;
* :func:`discretised_entropy_uniformity`: entropy (TLU2) and uniformity (BJ5W) of the
  discretised intensity histogram;
* :func:`glcm_features`: the 25 grey level co-occurrence features (LFYI) of one GLCM merged
  over the 13 3D directions at Chebyshev distance 1 ("3D, merged", IAZD), symmetric, from
  discretised grey levels ``1..n_levels``; logarithms base 2.

Arrays are (z, y, x); masks boolean of the same shape.
"""

from __future__ import annotations

import numpy as np

DIRECTIONS_3D: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (0, 1, -1), (1, 0, 1), (1, 0, -1),
    (1, 1, 0), (1, -1, 0), (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1),
)  # fmt: skip
"""The 13 unique direction vectors of the 26-neighbourhood (IBSI GLCM section)."""

INTENSITY_FEATURES: tuple[str, ...] = (
    "mean", "variance", "skewness", "kurtosis", "median", "minimum", "p10", "p90", "maximum", "iqr",
    "range", "mad", "robust_mad", "medad", "cov", "qcod", "energy", "rms",
)  # fmt: skip
GLCM_FEATURES: tuple[str, ...] = (
    "joint_max", "joint_average", "joint_variance", "joint_entropy", "diff_average", "diff_variance",
    "diff_entropy", "sum_average", "sum_variance", "sum_entropy", "energy", "contrast", "dissimilarity",
    "inv_diff", "inv_diff_norm", "inv_diff_mom", "inv_diff_mom_norm", "inv_variance", "correlation",
    "autocorrelation", "cluster_tendency", "cluster_shade", "cluster_prominence", "info_corr_1", "info_corr_2",
)  # fmt: skip


def intensity_statistics(values: np.ndarray) -> dict[str, float]:
    """IBSI intensity-based statistics of the ROI's intensities ``values`` (1-D)."""
    x = np.asarray(values, dtype=float).reshape(-1)
    if x.size == 0:
        return {name: float("nan") for name in INTENSITY_FEATURES}
    mean = x.mean()
    centred = x - mean
    m2 = np.mean(centred**2)
    p10, p25, median, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    with np.errstate(divide="ignore", invalid="ignore"):
        skewness = np.mean(centred**3) / m2**1.5 if m2 > 0 else 0.0
        kurtosis = np.mean(centred**4) / m2**2 - 3.0 if m2 > 0 else 0.0
        cov = np.sqrt(m2) / mean if mean != 0 else float("nan")
        qcod = (p75 - p25) / (p75 + p25) if (p75 + p25) != 0 else float("nan")
    return {
        "mean": float(mean),
        "variance": float(m2),
        "skewness": float(skewness),
        "kurtosis": float(kurtosis),
        "median": float(median),
        "minimum": float(x.min()),
        "p10": float(p10),
        "p90": float(p90),
        "maximum": float(x.max()),
        "iqr": float(p75 - p25),
        "range": float(x.max() - x.min()),
        "mad": float(np.mean(np.abs(centred))),
        "robust_mad": float(np.mean(np.abs(robust - robust.mean()))),
        "medad": float(np.mean(np.abs(x - median))),
        "cov": float(cov),
        "qcod": float(qcod),
        "energy": float(np.sum(x**2)),
        "rms": float(np.sqrt(np.mean(x**2))),
    }


def discretise_fixed_bin_size(values: np.ndarray, bin_width: float, minimum: float = 0.0, n_levels: int | None = None) -> np.ndarray:
    """IBSI fixed bin size discretisation: ``floor((x - minimum) / w) + 1`` (clipped to ``n_levels``).

    >>> discretise_fixed_bin_size(np.array([0.0, 0.24, 0.25, 1.0]), 0.25, n_levels=4).tolist()
    [1, 1, 2, 4]
    """
    levels = np.floor((np.asarray(values, dtype=float) - minimum) / bin_width).astype(np.int64) + 1
    levels = np.maximum(levels, 1)
    return np.minimum(levels, n_levels) if n_levels is not None else levels


def discretised_entropy_uniformity(levels: np.ndarray) -> dict[str, float]:
    """Entropy (log2) and uniformity of the discretised intensity histogram."""
    _, counts = np.unique(np.asarray(levels).reshape(-1), return_counts=True)
    p = counts / counts.sum()
    return {"entropy": float(-np.sum(p * np.log2(p))), "uniformity": float(np.sum(p**2))}


def glcm_3d_merged(levels: np.ndarray, mask: np.ndarray, n_levels: int) -> np.ndarray:
    """(n_levels, n_levels) symmetric co-occurrence counts summed over the 13 directions.

    Args:
        levels: (z, y, x) int grey levels in ``1..n_levels`` (values outside the mask ignored).
        mask: (z, y, x) bool ROI; a pair counts when both voxels are inside.
    """
    levels = np.asarray(levels, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    counts = np.zeros(n_levels * n_levels, dtype=np.int64)
    shape = np.array(levels.shape)
    for direction in DIRECTIONS_3D:
        d = np.array(direction)
        src = tuple(slice(max(0, -k), n - max(0, k)) for k, n in zip(d, shape, strict=True))
        dst = tuple(slice(max(0, k), n - max(0, -k)) for k, n in zip(d, shape, strict=True))
        both = mask[src] & mask[dst]
        i, j = levels[src][both] - 1, levels[dst][both] - 1
        counts += np.bincount(i * n_levels + j, minlength=n_levels * n_levels)
        counts += np.bincount(j * n_levels + i, minlength=n_levels * n_levels)
    return counts.reshape(n_levels, n_levels)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def glcm_features(matrix: np.ndarray) -> dict[str, float]:
    """The 25 IBSI GLCM features of one (merged) co-occurrence matrix; grey levels ``1..N_g``."""
    m = np.asarray(matrix, dtype=float)
    total = m.sum()
    if total == 0:
        return {name: float("nan") for name in GLCM_FEATURES}
    p = m / total
    n_g = p.shape[0]
    g = np.arange(1, n_g + 1, dtype=float)
    i, j = np.meshgrid(g, g, indexing="ij")
    p_i = p.sum(axis=1)
    mu = float(np.sum(i * p))
    mu_i = float(np.sum(g * p_i))
    var_i = float(np.sum((g - mu_i) ** 2 * p_i))
    k_diff = np.arange(n_g)
    p_diff = np.bincount(np.abs(i - j).astype(int).ravel(), weights=p.ravel(), minlength=n_g)
    k_sum = np.arange(2 * n_g + 1)
    p_sum = np.bincount((i + j).astype(int).ravel(), weights=p.ravel(), minlength=2 * n_g + 1)
    diff_avg = float(np.sum(k_diff * p_diff))
    sum_avg = float(np.sum(k_sum * p_sum))
    hxy = _entropy(p.ravel())
    outer = np.outer(p_i, p_i)
    nz = outer > 0
    hxy1 = float(-np.sum(p[nz] * np.log2(outer[nz])))
    hxy2 = float(-np.sum(outer[nz] * np.log2(outer[nz])))
    hx = _entropy(p_i)
    cluster = i + j - 2 * mu_i
    return {
        "joint_max": float(p.max()),
        "joint_average": mu,
        "joint_variance": float(np.sum((i - mu) ** 2 * p)),
        "joint_entropy": hxy,
        "diff_average": diff_avg,
        "diff_variance": float(np.sum((k_diff - diff_avg) ** 2 * p_diff)),
        "diff_entropy": _entropy(p_diff),
        "sum_average": sum_avg,
        "sum_variance": float(np.sum((k_sum - sum_avg) ** 2 * p_sum)),
        "sum_entropy": _entropy(p_sum),
        "energy": float(np.sum(p**2)),
        "contrast": float(np.sum((i - j) ** 2 * p)),
        "dissimilarity": float(np.sum(np.abs(i - j) * p)),
        "inv_diff": float(np.sum(p_diff / (1 + k_diff))),
        "inv_diff_norm": float(np.sum(p_diff / (1 + k_diff / n_g))),
        "inv_diff_mom": float(np.sum(p_diff / (1 + k_diff**2))),
        "inv_diff_mom_norm": float(np.sum(p_diff / (1 + (k_diff / n_g) ** 2))),
        "inv_variance": float(np.sum(p_diff[1:] / k_diff[1:] ** 2)),
        "correlation": float(np.sum((i - mu_i) * (j - mu_i) * p) / var_i) if var_i > 0 else float("nan"),
        "autocorrelation": float(np.sum(i * j * p)),
        "cluster_tendency": float(np.sum(cluster**2 * p)),
        "cluster_shade": float(np.sum(cluster**3 * p)),
        "cluster_prominence": float(np.sum(cluster**4 * p)),
        "info_corr_1": float((hxy - hxy1) / hx) if hx > 0 else float("nan"),
        "info_corr_2": float(np.sqrt(max(0.0, 1 - np.exp(-2 * (hxy2 - hxy))))),
    }


def roi_features(image: np.ndarray, mask: np.ndarray, *, bin_width: float, n_levels: int) -> dict[str, float]:
    """Intensity statistics, histogram entropy / uniformity and 3D-merged GLCM features of one ROI.

    Args:
        image: (z, y, x) intensities (the cache's [0, 1] scale).
        mask: (z, y, x) bool ROI.
        bin_width, n_levels: fixed bin size discretisation from 0 into ``n_levels`` grey levels.

    Returns:
        ``{"first_<name>": ..., "hist_<name>": ..., "glcm_<name>": ...}`` (NaN for an empty ROI).
    """
    mask = np.asarray(mask, dtype=bool)
    values = np.asarray(image, dtype=float)[mask]
    out = {f"first_{k}": v for k, v in intensity_statistics(values).items()}
    levels = discretise_fixed_bin_size(image, bin_width, 0.0, n_levels)
    if values.size:
        out.update({f"hist_{k}": v for k, v in discretised_entropy_uniformity(levels[mask]).items()})
    else:
        out.update({"hist_entropy": float("nan"), "hist_uniformity": float("nan")})
    out.update({f"glcm_{k}": v for k, v in glcm_features(glcm_3d_merged(levels, mask, n_levels)).items()})
    return out
