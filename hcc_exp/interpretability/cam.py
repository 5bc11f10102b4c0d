"""3D Grad-CAM per head (OS, RFS, MVI) and per phase, overlays, and region shares (Supplementary Table 3D).

Grad-CAM (``monai.visualize.GradCAM``) is taken at the network's ``target_layer_name`` (the
last dense block). The backbone runs the phases of a batch as one batch of ``B * P`` volumes,
so the target activations and their gradients are ``(B * P, C, d, h, w)`` and MONAI's
per-sample channel weights (spatially averaged gradients) are per patient *and phase*: each
phase gets its own map. The maps are trilinearly upsampled to the input grid and kept RAW
(MONAI's default postprocessing rescales each map to [0, 1], which changes nothing in the
shares of one map but makes maps incomparable and hides an all-zero map).

Each head is exposed to MONAI as one column of a ``(B, 4)`` score tensor: the OS and RFS
log-risks (higher = worse; the map shows what raises the risk) and the two MVI logits, of
which column "MVI present" is explained.

:func:`run_cams` writes, under ``RUN_DIR/cam/``::

    <patient_id>/<head>.png     3 phases x (axial, coronal, sagittal) through the tumour centroid
    <patient_id>/cams.npz       raw maps, one (P, D, H, W) float32 array per head
    regions.csv                 one row per patient, head, phase and region (energy, hit rate, volume)
    regions_summary.csv         means over patients per split, head, phase (and "all") and region
    regions.md                  the Supplementary Table 3D layout (phases pooled)
    region_shares.json          the summary as nested JSON, with definitions
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from monai.visualize import GradCAM
from torch import Tensor, nn

from hcc_exp.config import ExperimentConfig
from hcc_exp.data.cache import REGIONS, PreprocessedCohort
from hcc_exp.errors import ConfigError, UnknownPatientError
from hcc_exp.inference.checkpoint import (
    TrainedNetwork,
    cache_spacing_zyx_mm,
    load_trained_network,
)
from hcc_exp.interpretability.regions import (
    ANALYSIS_REGIONS,
    PARTITION,
    REGION_TITLES,
    RING_MM,
    STAT_COLUMNS,
    TOP_FRACTION,
    aggregate_region_statistics,
    analysis_regions,
    region_statistics,
)
from hcc_exp.models import HCCMultiTaskNet
from hcc_exp.progress import patient_progress
from hcc_exp.run_folder import RunFolder

HEADS: tuple[str, ...] = ("os", "rfs", "mvi")
HEAD_TITLES: dict[str, str] = {"os": "OS risk", "rfs": "RFS risk", "mvi": "MVI present"}
HEAD_SCORE_COLUMN: dict[str, int] = {"os": 0, "rfs": 1, "mvi": 3}
"""Column of :class:`HeadScores`' output explained for each head (class_idx of Grad-CAM)."""
SPLIT_ORDER: tuple[str, ...] = ("train", "internal", "external")
SPLIT_TITLES: dict[str, str] = {"train": "Training", "internal": "Internal validation", "external": "External test"}
CAM_COLORMAP = colormaps["inferno"]
CAM_MAX_ALPHA = 0.7
"""Opacity of the CAM overlay at its largest value (0 at zero, square-root ramp between)."""

_LIVER, _MARGIN, _TUMOUR = (REGIONS.index(name) for name in ("liver", "margin", "tumour"))


# --------------------------------------------------------------------------- Grad-CAM
class HeadScores(nn.Module):
    """The three heads of a network as one ``(B, 4)`` score tensor for Grad-CAM.

    Columns: OS log-risk, RFS log-risk, MVI logit "absent", MVI logit "present"
    (:data:`HEAD_SCORE_COLUMN` says which column explains which head).
    """

    def __init__(self, network: HCCMultiTaskNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, masks: Tensor | None = None) -> Tensor:
        out = self.network(image, masks)
        return torch.cat([out.os_risk[:, None], out.rfs_risk[:, None], out.mvi_logits], dim=1)


def _identity(x: Tensor) -> Tensor:
    return x


def grad_cams(
    network: HCCMultiTaskNet,
    image: Tensor,
    masks: Tensor | None,
    heads: Sequence[str] = HEADS,
    target_layer: str | None = None,
) -> dict[str, Tensor]:
    """Raw 3D Grad-CAM of each head for every phase, on the input grid.

    Args:
        network: a 3D :class:`HCCMultiTaskNet` (left unchanged: hooks go on a copy, which
            is run in eval mode).
        image: ``(B, P, D, H, W)`` float CT in [0, 1].
        masks: ``(B, P, R, D, H, W)`` region masks (liver, margin, tumour), or None for ``roi="none"``.
        heads: subset of :data:`HEADS`.
        target_layer: dotted module name in ``network``; default ``network.target_layer_name``.

    Returns:
        head -> ``(B, P, D, H, W)`` float32 maps, >= 0 (Grad-CAM's ReLU), not rescaled.

    Raises:
        ConfigError: a 2D model, or an unknown head or layer.
    """
    if getattr(network.backbone, "dims", "3d") != "3d":
        raise ConfigError("Grad-CAM is implemented for 3D models only (model.dims=3d)")
    unknown = [h for h in heads if h not in HEAD_SCORE_COLUMN]
    if unknown:
        raise ConfigError(f"unknown head(s) {unknown}; valid: {list(HEADS)}")
    layer = target_layer or network.target_layer_name
    if layer not in dict(network.named_modules()):
        raise ConfigError(f"network has no layer {layer!r} for Grad-CAM")
    if image.ndim != 5:
        raise ConfigError(f"image must be (B, P, D, H, W), got shape {tuple(image.shape)}")
    b, p = image.shape[:2]
    # MONAI registers hooks it never removes: keep them off the caller's network.
    wrapped = HeadScores(copy.deepcopy(network)).float().eval()
    cam = GradCAM(nn_module=wrapped, target_layers=f"network.{layer}", postprocessing=_identity)
    device = next(wrapped.parameters()).device
    image = image.to(device=device, dtype=torch.float32)
    masks = None if masks is None else masks.to(device=device, dtype=torch.float32)
    maps: dict[str, Tensor] = {}
    with torch.enable_grad():
        for head in heads:
            # (B * P, 1, D, H, W): MONAI upsamples to image.shape[2:], the (D, H, W) grid.
            raw = cam(x=image, class_idx=HEAD_SCORE_COLUMN[head], masks=masks)
            maps[head] = raw.detach().reshape(b, p, *image.shape[2:]).float()
    return maps


# --------------------------------------------------------------------------- region table
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


# --------------------------------------------------------------------------- overlays
def _centroid(mask: np.ndarray) -> tuple[int, int, int]:
    if mask.any():
        return tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))  # type: ignore[return-value]
    return tuple(n // 2 for n in mask.shape)  # type: ignore[return-value]


def display_window(image: np.ndarray, liver: np.ndarray) -> tuple[float, float]:
    """Grey-level window (low, high) for showing one phase of the cached CT (display only).

    The cache scales the whole scan's 2.5-97.5th percentiles (air to contrast) to [0, 1], so
    the liver occupies a narrow band of it. Like a radiologist's liver window, the display
    spans the liver's 1st-99th percentile widened by half that range on both sides (the
    crop's non-padding voxels when there is no liver in the crop).
    """
    values = image[liver] if liver.any() else image[image > 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, [1.0, 99.0]))
    spread = high - low
    if spread <= 0:
        return 0.0, 1.0
    return low - 0.5 * spread, high + 0.5 * spread


def plot_cam_overlay(
    image: np.ndarray,
    cam: np.ndarray,
    masks: np.ndarray,
    phases: Sequence[str],
    spacing_zyx_mm: tuple[float, float, float],
    path: Path | str,
    *,
    title: str,
) -> Path:
    """Save a phases x (axial, coronal, sagittal) grid of CT + CAM + tumour / margin contours.

    Slices pass through each phase's tumour centroid. The CT is shown in grey in a liver
    window (:func:`display_window`; display only, the arrays are not changed). The raw CAM is
    drawn in ``inferno`` on one colour scale shared by the phases (0 to the largest value)
    with an opacity rising with the value, so weak activation leaves the CT visible. Arrays
    are shown as stored: axial rows are y, columns x; coronal and sagittal put z upwards
    (for an LPS-aligned scan: radiological axial view, head up).

    Args:
        image: ``(P, D, H, W)`` CT in [0, 1] on the cached (z, y, x) grid.
        cam: ``(P, D, H, W)`` raw maps of one head.
        masks: ``(P, R, D, H, W)`` region masks (liver, margin, tumour).
        phases: the P phase names (row labels).
        spacing_zyx_mm: grid spacing, for the aspect ratio of coronal / sagittal views.
        path: PNG file to write.
        title: figure title (patient and head).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sz, sy, sx = (float(s) for s in spacing_zyx_mm)
    vmax = float(np.max(cam)) if np.max(cam) > 0 else 1.0
    n_phases = len(phases)
    height_in = 3.0 * n_phases + 1.0
    # A fixed layout: constrained layout costs more than drawing the figure.
    fig = Figure(figsize=(9.6, height_in))
    axes = fig.subplots(
        n_phases,
        3,
        squeeze=False,
        gridspec_kw={
            "left": 0.05,
            "right": 0.87,
            "top": 1 - 0.55 / height_in,
            "bottom": 0.45 / height_in,
            "wspace": 0.04,
            "hspace": 0.06,
        },
    )
    for row, phase in enumerate(phases):
        zc, yc, xc = _centroid(masks[row, _TUMOUR] != 0)
        ct_low, ct_high = display_window(image[row], masks[row, _LIVER] != 0)
        # (slice of (image, cam, masks), aspect = row spacing / column spacing, origin, label)
        views = (
            (np.s_[zc, :, :], sy / sx, "upper", f"axial z={zc}"),
            (np.s_[:, yc, :], sz / sx, "lower", f"coronal y={yc}"),
            (np.s_[:, :, xc], sz / sy, "lower", f"sagittal x={xc}"),
        )
        for col, (index, aspect, origin, label) in enumerate(views):
            ax = axes[row, col]
            ct_slice = image[row][index]
            cam_slice = cam[row][index]
            ax.imshow(ct_slice, cmap="gray", vmin=ct_low, vmax=ct_high, aspect=aspect, origin=origin, interpolation="nearest")
            level = np.clip(cam_slice / vmax, 0.0, 1.0)
            overlay = CAM_COLORMAP(level)
            overlay[..., 3] = CAM_MAX_ALPHA * np.sqrt(level)
            ax.imshow(overlay, aspect=aspect, origin=origin, interpolation="bilinear")
            for channel, colour, style in ((_LIVER, "royalblue", "dotted"), (_MARGIN, "lime", "solid"), (_TUMOUR, "cyan", "solid")):
                region = masks[row, channel][index]
                if region.any() and not region.all():
                    ax.contour(region.astype(float), levels=[0.5], colors=colour, linewidths=0.9, linestyles=style, origin=origin)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label.split()[0], fontsize=10)
            ax.text(
                0.02, 0.98, label, transform=ax.transAxes, color="white", fontsize=7, va="top",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.0, "edgecolor": "none"},
            )
            if col == 0:
                ax.set_ylabel(phase, fontsize=11)
    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(0.0, vmax), cmap=CAM_COLORMAP), cax=fig.add_axes((0.9, 0.25, 0.02, 0.5))
    )
    bar.set_label("Grad-CAM (raw, a.u.; opacity rises with value)")
    handles = [
        Line2D([], [], color="cyan", lw=1.2, label="tumour"),
        Line2D([], [], color="lime", lw=1.2, label="peritumoral margin band"),
        Line2D([], [], color="royalblue", lw=1.2, ls="dotted", label="liver"),
    ]
    fig.legend(handles=handles, loc="lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- run folder
def select_patients(cohort: PreprocessedCohort, patient_ids: Sequence[str] | None, max_patients: int) -> list[str]:
    known = cohort.patient_ids()
    if patient_ids:
        for pid in patient_ids:
            if str(pid) not in known:
                raise UnknownPatientError(f"not in the preprocessed cache {cohort.root}", patient_id=str(pid))
        return list(dict.fromkeys(str(pid) for pid in patient_ids))
    if max_patients < 1:
        raise ConfigError(f"max_patients must be >= 1, got {max_patients}")
    chosen: list[str] = []
    for split in SPLIT_ORDER:
        chosen.extend(cohort.patient_ids(split)[:max_patients])
    return chosen


def _phase_index(cohort: PreprocessedCohort, config: ExperimentConfig) -> list[int]:
    missing = [p for p in config.phases if p not in cohort.phases]
    if missing:
        raise ConfigError(f"phases {missing} of the model are not in the cache {cohort.root} ({list(cohort.phases)})")
    return [cohort.phases.index(p) for p in config.phases]


def patient_cams(
    network: HCCMultiTaskNet, image: np.ndarray, masks: np.ndarray, heads: Sequence[str] = HEADS
) -> dict[str, np.ndarray]:
    """Raw Grad-CAMs of one patient: ``image (P, D, H, W)``, ``masks (P, R, D, H, W)`` -> head -> ``(P, D, H, W)``."""
    image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    masks_t = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[None]
    maps = grad_cams(network, image_t, masks_t, heads)
    return {head: m[0].cpu().numpy() for head, m in maps.items()}


def write_patient_cams(
    trained: TrainedNetwork, image: np.ndarray, masks: np.ndarray, patient_id: str, out_dir: Path
) -> dict[str, Path]:
    """One Grad-CAM overlay per head of a predicted patient, ``out_dir/cam_<head>.png``.

    The :data:`hcc_exp.inference.predict.Explainer` of ``hcc-exp predict``: ``image (P, D, H, W)``
    and ``masks (P, R, D, H, W)`` are the preprocessed arrays the network saw.

    Returns:
        ``{"cam_<head>": png}`` per head.
    """
    config = trained.config
    cams = patient_cams(trained.network, image, masks)
    written = {}
    for head in HEADS:
        written[f"cam_{head}"] = plot_cam_overlay(
            image,
            cams[head],
            masks,
            config.phases,
            tuple(config.preprocess.spacing_mm),
            Path(out_dir) / f"cam_{head}.png",
            title=f"Patient {patient_id}: Grad-CAM of the {HEAD_TITLES[head]} head",
        )
    return written


def _pct(mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}" if np.isfinite(sd) else f"{100 * mean:.1f}"


def _p(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


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
    for split in [s for s in SPLIT_ORDER if s in set(pooled["split"])]:
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
                    f"| {_pct(r['energy_share_mean'], r['energy_share_sd'])} | {_p(r['p_energy_gt_volume'])} "
                    f"| {_pct(r['hit_rate_mean'], r['hit_rate_sd'])} | {_p(r['p_hit_gt_volume'])} |"
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


def run_cams(run_dir: Path | str, patient_ids: Sequence[str] | None = None, max_patients: int = 4) -> Path:
    """Grad-CAM overlays and region shares of a trained run.

    Args:
        run_dir: run folder (``checkpoints/best.ckpt``, ``meta.json`` with the cache).
        patient_ids: patients to explain; default the first ``max_patients`` of each split.
        max_patients: patients per split when none are named.

    Returns:
        The ``RUN_DIR/cam`` folder.

    Raises:
        RunFolderError: missing checkpoint, meta.json or cache.
        UnknownPatientError: a named patient is not in the cache.
    """
    run = RunFolder(Path(run_dir))
    trained = load_trained_network(run.best_checkpoint)
    config, network = trained.config, trained.network
    cohort = run.open_cache()
    phase_index = _phase_index(cohort, config)
    spacing = cache_spacing_zyx_mm(cohort, config)
    chosen = select_patients(cohort, patient_ids, max_patients)
    split_of = dict(zip(cohort.labels["patient_id"].astype(str), cohort.labels["split"].astype(str), strict=True))
    out_dir = run.cam_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    frames = []
    with patient_progress("Grad-CAM") as bar:
        task = bar.add_task("patients", total=len(chosen))
        for pid in chosen:
            image, masks = cohort.load(pid)
            image = np.asarray(image[phase_index], dtype=np.float32)
            masks = np.asarray(masks[phase_index])
            cams = patient_cams(network, image, masks)
            patient_dir = out_dir / pid
            patient_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(patient_dir / "cams.npz", **cams)
            for head, maps in cams.items():
                plot_cam_overlay(
                    image,
                    maps,
                    masks,
                    config.phases,
                    spacing,
                    patient_dir / f"{head}.png",
                    title=f"Patient {pid} ({SPLIT_TITLES.get(split_of[pid], split_of[pid])}): "
                    f"Grad-CAM of the {HEAD_TITLES[head]} head",
                )
            table = cam_region_table(cams, masks, config.phases, spacing)
            table.insert(0, "split", split_of[pid])
            table.insert(0, "patient_id", pid)
            frames.append(table)
            bar.advance(task)

    per_map = pd.concat(frames, ignore_index=True)
    per_map.to_csv(out_dir / "regions.csv", index=False, float_format="%.6g")
    summary = aggregate_region_statistics(per_map)
    summary.to_csv(out_dir / "regions_summary.csv", index=False, float_format="%.6g")
    layer = network.target_layer_name
    (out_dir / "regions.md").write_text(
        render_region_markdown(summary, target_layer=layer, top_fraction=TOP_FRACTION, ring_mm=RING_MM)
    , encoding="utf-8")
    payload = region_shares_json(
        summary,
        checkpoint=str(trained.checkpoint),
        target_layer=layer,
        top_fraction=TOP_FRACTION,
        ring_mm=RING_MM,
        spacing_zyx_mm=list(spacing),
        partition=list(PARTITION),
        regions={r: REGION_TITLES[r] for r in ANALYSIS_REGIONS},
        statistics=list(STAT_COLUMNS),
        patients={s: [p for p in chosen if split_of[p] == s] for s in SPLIT_ORDER},
    )
    (out_dir / "region_shares.json").write_text(json.dumps(payload, indent=2, allow_nan=False), encoding="utf-8")
    return out_dir
