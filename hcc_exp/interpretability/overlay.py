"""Overlay figures of a Grad-CAM: CT in a liver window, the raw map, tumour / margin / liver contours (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hcc_exp.vocabulary import REGIONS

CAM_COLORMAP = colormaps["inferno"]
CAM_MAX_ALPHA = 0.7
"""Opacity of the CAM overlay at its largest value (0 at zero, square-root ramp between)."""

_LIVER, _MARGIN, _TUMOUR = (REGIONS.index(name) for name in ("liver", "margin", "tumour"))


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
