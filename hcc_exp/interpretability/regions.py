"""Where a class activation map puts its weight: region energy and hit rate (Supplementary Table 3D).

Pure computation (arrays in, numbers out); :mod:`hcc_exp.interpretability.cam` does the IO.
:func:`cam_region_table` gives one patient's table over heads and phases.

For one CAM on the cached grid (``(D, H, W)``, raw, not rescaled) and that phase's
region masks, every analysis region gets three numbers:

* **activation energy**: the share of the positive CAM mass inside the region,
  ``sum(relu(cam)[region]) / sum(relu(cam))``;
* **hit rate**: the share of the top ``top_fraction`` (5 %) voxels of the CAM that lie in the
  region. Voxels tied at the threshold count fractionally, so the top set always weighs
  exactly ``k`` voxels and a constant CAM gives the volume share;
* **volume share**: the region's share of the crop's voxels, the chance level of both.

Analysis regions (built by :func:`analysis_regions` from the cache masks ``(liver, margin,
tumour)``): ``tumour``, ``margin_1cm`` (voxels outside the tumour within ``ring_mm`` = 10 mm
of it, by a Euclidean distance transform in mm on the cached grid), ``rest_of_liver``
(liver outside both) and ``outside_liver`` (everything else) partition the crop, so
their shares add up to 1. Two overlapping rows are reported besides: ``peritumoral_margin``
(the cached ``margin_mm`` band that straddles the tumour boundary) and
``tumour_and_1cm_margin`` (tumour plus the 1 cm ring, the paper's "tumour and its immediate
microenvironment").

Both energy and hit rate are undefined (NaN) for a CAM with no positive value.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from hcc_exp.data.cache import REGIONS

RING_MM = 10.0
"""Width of the peritumoral ring (mm outside the tumour boundary) of the ``margin_1cm`` region."""
TOP_FRACTION = 0.05
"""Share of the highest CAM voxels whose location the hit rate counts."""
TIE_RTOL = 1e-5
"""CAM values closer than this (relative to the map's largest magnitude) to the top-set threshold tie."""

PARTITION: tuple[str, ...] = ("tumour", "margin_1cm", "rest_of_liver", "outside_liver")
"""Regions that tile the crop (shares add up to 1)."""
ANALYSIS_REGIONS: tuple[str, ...] = (
    "tumour",
    "peritumoral_margin",
    "margin_1cm",
    "tumour_and_1cm_margin",
    "rest_of_liver",
    "outside_liver",
)
"""Every region reported, in table order."""
REGION_TITLES: dict[str, str] = {
    "tumour": "Tumour",
    "peritumoral_margin": "Peritumoral margin band",
    "margin_1cm": "1 cm margin (0-10 mm outside tumour)",
    "tumour_and_1cm_margin": "Tumour + 1 cm margin",
    "rest_of_liver": "Rest of liver",
    "outside_liver": "Outside liver",
}
STAT_COLUMNS: tuple[str, ...] = ("energy_share", "hit_rate", "volume_share")

_LIVER, _MARGIN, _TUMOUR = (REGIONS.index(name) for name in ("liver", "margin", "tumour"))


def analysis_regions(
    masks: np.ndarray, spacing_zyx_mm: tuple[float, float, float], ring_mm: float = RING_MM
) -> dict[str, np.ndarray]:
    """Boolean analysis regions of one phase.

    Args:
        masks: ``(R, D, H, W)`` binary masks in cache ``REGIONS`` order (liver, margin, tumour).
        spacing_zyx_mm: voxel spacing of the grid (z, y, x) in mm.
        ring_mm: width of the ``margin_1cm`` ring outside the tumour boundary, in mm.

    Returns:
        region name -> ``(D, H, W)`` bool, for every name in :data:`ANALYSIS_REGIONS`.
    """
    masks = np.asarray(masks)
    if masks.ndim != 4 or masks.shape[0] != len(REGIONS):
        raise ValueError(f"masks must be (R={len(REGIONS)}, D, H, W), got shape {masks.shape}")
    liver = masks[_LIVER] != 0
    band = masks[_MARGIN] != 0
    tumour = masks[_TUMOUR] != 0
    if tumour.any():
        # Distance (mm) from each voxel centre outside the tumour to the nearest tumour voxel centre.
        distance_mm = ndimage.distance_transform_edt(~tumour, sampling=tuple(float(s) for s in spacing_zyx_mm))
        ring = ~tumour & (distance_mm <= ring_mm)
    else:
        ring = np.zeros_like(tumour)
    near = tumour | ring
    return {
        "tumour": tumour,
        "peritumoral_margin": band,
        "margin_1cm": ring,
        "tumour_and_1cm_margin": near,
        "rest_of_liver": liver & ~near,
        "outside_liver": ~liver & ~near,
    }


def top_voxel_weights(cam: np.ndarray, top_fraction: float = TOP_FRACTION) -> np.ndarray:
    """Membership weight of each voxel in the top ``top_fraction`` of ``cam``.

    ``k = max(1, round(top_fraction * n))`` voxels are selected: those above the k-th
    largest value weigh 1, those equal to it (within ``TIE_RTOL`` of the largest magnitude)
    share the remaining weight equally, so the weights sum to exactly ``k`` and ties are
    not broken arbitrarily.

    Returns:
        Float array of ``cam``'s shape with values in [0, 1] summing to ``k``.
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    flat = np.asarray(cam, dtype=np.float64).ravel()
    k = max(1, int(round(top_fraction * flat.size)))
    threshold = np.partition(flat, flat.size - k)[flat.size - k]
    # Values within rounding error of the threshold are ties: the trilinear upsampling of a
    # constant float32 map is constant only up to ~1e-7, which must not pick the top set.
    tolerance = TIE_RTOL * float(np.abs(flat).max())
    above = flat > threshold + tolerance
    tied = np.abs(flat - threshold) <= tolerance
    weights = above.astype(np.float64)
    weights[tied] = (k - above.sum()) / tied.sum()
    return weights.reshape(np.shape(cam))


def region_statistics(
    cam: np.ndarray, regions: dict[str, np.ndarray], top_fraction: float = TOP_FRACTION
) -> pd.DataFrame:
    """Energy share, hit rate and volume share of each region for one CAM.

    Args:
        cam: ``(D, H, W)`` raw activation map (any scale; negative values carry no energy).
        regions: region name -> ``(D, H, W)`` bool mask (e.g. from :func:`analysis_regions`).
        top_fraction: share of highest voxels counted by the hit rate.

    Returns:
        One row per region (index ``region``), columns ``energy_share``, ``hit_rate``,
        ``volume_share``; energy and hit rate NaN when ``cam`` has no positive value.
    """
    cam = np.asarray(cam, dtype=np.float64)
    if not np.all(np.isfinite(cam)):
        raise ValueError("cam contains NaN or infinite values")
    positive = np.maximum(cam, 0.0)
    total = positive.sum()
    weights = top_voxel_weights(cam, top_fraction) if total > 0 else None
    k = weights.sum() if weights is not None else np.nan
    rows = {}
    for name, region in regions.items():
        region = np.asarray(region, dtype=bool)
        if region.shape != cam.shape:
            raise ValueError(f"region {name!r} has shape {region.shape}, cam has {cam.shape}")
        rows[name] = {
            "energy_share": positive[region].sum() / total if total > 0 else np.nan,
            "hit_rate": weights[region].sum() / k if weights is not None else np.nan,
            "volume_share": region.mean(),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(STAT_COLUMNS))
    frame.index.name = "region"
    return frame


def _greater_p(values: np.ndarray, chance: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p-value of ``values > chance`` (paired); NaN if not computable."""
    keep = np.isfinite(values) & np.isfinite(chance)
    diff = values[keep] - chance[keep]
    if diff.size < 2 or np.allclose(diff, 0.0):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(stats.wilcoxon(values[keep], chance[keep], alternative="greater").pvalue)
        except ValueError:
            return float("nan")


def aggregate_region_statistics(per_map: pd.DataFrame) -> pd.DataFrame:
    """Mean region shares per split, head, phase and region, over patients.

    Args:
        per_map: one row per (patient, head, phase, region) with columns ``patient_id``,
            ``split``, ``head``, ``phase``, ``region`` and :data:`STAT_COLUMNS`.

    Returns:
        One row per (split, head, phase, region), where ``phase`` is each phase and ``"all"``
        (each patient's phases averaged first, so every patient weighs the same). Columns:
        ``n_patients``, ``<stat>_mean`` and ``<stat>_sd`` for each stat, and
        ``p_energy_gt_volume`` / ``p_hit_gt_volume`` (one-sided paired Wilcoxon signed-rank
        test of the patient values against the region's volume share; NaN below 2 patients).
    """
    required = {"patient_id", "split", "head", "phase", "region", *STAT_COLUMNS}
    missing = required - set(per_map.columns)
    if missing:
        raise ValueError(f"per-map table lacks columns {sorted(missing)}")
    keys = ["split", "head", "region", "patient_id"]
    pooled = per_map.groupby(keys, sort=False)[list(STAT_COLUMNS)].mean().reset_index()
    pooled["phase"] = "all"
    per_patient = pd.concat([per_map[[*keys, "phase", *STAT_COLUMNS]], pooled], ignore_index=True)
    rows = []
    for (split, head, phase, region), group in per_patient.groupby(
        ["split", "head", "phase", "region"], sort=False
    ):
        row = {"split": split, "head": head, "phase": phase, "region": region, "n_patients": group["patient_id"].nunique()}
        for stat in STAT_COLUMNS:
            values = group[stat].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            row[f"{stat}_mean"] = float(finite.mean()) if finite.size else np.nan
            row[f"{stat}_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else np.nan
        volume = group["volume_share"].to_numpy(dtype=float)
        row["p_energy_gt_volume"] = _greater_p(group["energy_share"].to_numpy(dtype=float), volume)
        row["p_hit_gt_volume"] = _greater_p(group["hit_rate"].to_numpy(dtype=float), volume)
        rows.append(row)
    return pd.DataFrame(rows)


def cam_region_table(
    cams: dict[str, np.ndarray],
    masks: np.ndarray,
    phases: Sequence[str],
    spacing_zyx_mm: tuple[float, float, float],
    *,
    ring_mm: float = RING_MM,
    top_fraction: float = TOP_FRACTION,
) -> pd.DataFrame:
    """Region shares of one patient's maps.

    Args:
        cams: head -> ``(P, D, H, W)`` raw maps.
        masks: ``(P, R, D, H, W)`` region masks of the same phases.
        phases: the P phase names.
        spacing_zyx_mm: grid spacing (mm) for the 1 cm ring.

    Returns:
        Rows ``head, phase, region, energy_share, hit_rate, volume_share``.
    """
    frames = []
    for k, phase in enumerate(phases):
        regions = analysis_regions(masks[k], spacing_zyx_mm, ring_mm)
        for head, maps in cams.items():
            stats = region_statistics(maps[k], regions, top_fraction).reset_index()
            stats.insert(0, "phase", phase)
            stats.insert(0, "head", head)
            frames.append(stats)
    return pd.concat(frames, ignore_index=True)
