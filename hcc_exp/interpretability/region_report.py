"""Supplementary Table 3D (Grad-CAM region shares) as Markdown and as nested JSON.

Rendering only: the statistics come from :func:`hcc_exp.interpretability.regions.aggregate_region_statistics`.
Cells go through the package's one formatter (:mod:`hcc_exp.formatting`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.formatting import format_p, is_estimable, not_estimable
from hcc_exp.interpretability.gradcam import HEAD_TITLES, HEADS
from hcc_exp.interpretability.regions import ANALYSIS_REGIONS, REGION_TITLES
from hcc_exp.vocabulary import SPLIT_TITLES, SPLITS


def _pct(mean: float, sd: float) -> str:
    """``"mean ± SD"`` in percent (``"mean"`` without an SD); ``"n/e"`` when the mean is not estimable."""
    if not is_estimable(mean):
        return not_estimable()
    return f"{100 * mean:.1f} ± {100 * sd:.1f}" if is_estimable(sd) else f"{100 * mean:.1f}"


def render_region_markdown(summary: pd.DataFrame, *, target_layer: str, top_fraction: float, ring_mm: float) -> str:
    """Supplementary Table 3D as Markdown: per split and head, phases pooled (``phase == "all"``)."""
    lines = [
        "# Grad-CAM region shares (Supplementary Table 3D)",
        "",
        f"Raw 3D Grad-CAM at `{target_layer}`, upsampled to the cached grid. Per patient the phases are "
        "averaged, then patients are averaged (mean ± SD, %).",
        "",
        "- **Energy**: share of the positive CAM mass inside the region.",
        f"- **Hit rate**: share of the top {100 * top_fraction:g} % CAM voxels inside the region.",
        "- **Volume**: the region's share of the crop, the chance level of both.",
        f"- Tumour, 1 cm margin (0-{ring_mm:g} mm outside the tumour), rest of liver and outside liver "
        "tile the crop; the margin band and tumour + 1 cm overlap them.",
        "- p: one-sided paired Wilcoxon signed-rank test of the patient values against the volume share.",
        "",
    ]
    pooled = summary[summary["phase"] == "all"]
    for split in [s for s in SPLITS if s in set(pooled["split"])]:
        for head in [h for h in HEADS if h in set(pooled["head"])]:
            part = pooled[(pooled["split"] == split) & (pooled["head"] == head)].set_index("region")
            n = int(part["n_patients"].max()) if len(part) else 0
            lines += [
                f"## {SPLIT_TITLES.get(split, split)}: {HEAD_TITLES[head]} (n = {n})",
                "",
                "| Region | Volume (chance) | Energy | p (energy > chance) | Hit rate | p (hit > chance) |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for region in [r for r in ANALYSIS_REGIONS if r in part.index]:
                r = part.loc[region]
                lines.append(
                    f"| {REGION_TITLES[region]} | {_pct(r['volume_share_mean'], r['volume_share_sd'])} "
                    f"| {_pct(r['energy_share_mean'], r['energy_share_sd'])} | {format_p(r['p_energy_gt_volume'])} "
                    f"| {_pct(r['hit_rate_mean'], r['hit_rate_sd'])} | {format_p(r['p_hit_gt_volume'])} |"
                )
            lines.append("")
    return "\n".join(lines)


def _json_number(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def region_shares_json(summary: pd.DataFrame, **header: Any) -> dict[str, Any]:
    """``{..header, "shares": {split: {head: {phase: {region: {stat: value}}}}}}`` with NaN as null."""
    shares: dict[str, Any] = {}
    stat_columns = [c for c in summary.columns if c not in ("split", "head", "phase", "region")]
    for row in summary.to_dict(orient="records"):
        node = shares.setdefault(row["split"], {}).setdefault(row["head"], {}).setdefault(row["phase"], {})
        node[row["region"]] = {c: _json_number(row[c]) for c in stat_columns}
    return {**header, "shares": shares}
