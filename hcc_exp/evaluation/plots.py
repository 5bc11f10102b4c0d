"""PNG figures of the evaluation (matplotlib, Agg backend): one figure per endpoint, one panel per split.

Each function takes results of the pure modules, keyed by split, and writes one
PNG. A panel whose statistic is :class:`NotEstimable` shows the reason instead
of a curve, so a figure is always written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from lifelines.plotting import add_at_risk_counts  # noqa: E402

from hcc_exp.evaluation.common import ENDPOINT_TITLES, SPLIT_TITLES, NotEstimable  # noqa: E402
from hcc_exp.evaluation.risk_groups import RiskGroupComparison  # noqa: E402
from hcc_exp.evaluation.survival import TimeDependentROC  # noqa: E402

DPI = 120
HORIZON_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def horizon_label(days: float) -> str:
    """365 -> "1 year", 730 -> "2 years", other -> "<days> d"."""
    years = days / 365.0
    if abs(years - round(years)) < 1e-9 and round(years) >= 1:
        n = int(round(years))
        return f"{n} year" if n == 1 else f"{n} years"
    return f"{days:g} d"


def _panel_title(split: str, n: int | None = None) -> str:
    title = SPLIT_TITLES.get(split, split)
    return f"{title} (n = {n})" if n is not None else title


def _not_estimable(ax, reason: str) -> None:
    ax.text(
        0.5,
        0.5,
        "Not estimable:\n" + _wrap(reason),
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _wrap(text: str, width: int = 38) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)


def _probability_axes(ax, xlabel: str, ylabel: str, top: float = 1.0) -> None:
    """Square [0, 1] x [0, top] axes for ROC, calibration and reliability panels."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _notes_box(ax, notes: list[str]) -> None:
    """Why some horizons of a panel are missing, in small print at its lower right."""
    if notes:
        ax.text(0.98, 0.02, _wrap("; ".join(notes), 45), transform=ax.transAxes, fontsize=7.5, ha="right", va="bottom")


def _panels(
    n: int,
    rows: int = 1,
    height: float = 4.2,
    width: float = 4.6,
    extra_bottom_in: float = 0.0,
    extra_left_in: float = 0.0,
):
    """A rows x n grid with margins fixed in inches (room for tick labels, axis labels,
    panel titles and the suptitle), so savefig needs neither tight_layout nor
    bbox_inches="tight" (each costs a full extra draw). ``extra_*_in`` make room for
    the at-risk table under and left of Kaplan-Meier axes."""
    left_in, right_in, top_in = 0.8 + extra_left_in, 0.35, 0.85
    bottom_in, gap_w_in, gap_h_in = 0.6 + extra_bottom_in, 0.9 + extra_left_in, 0.95
    fig_w, fig_h = width * n + extra_left_in, height * rows + extra_bottom_in
    fig, axes = plt.subplots(rows, n, figsize=(fig_w, fig_h), squeeze=False)
    axis_w = (fig_w - left_in - right_in - gap_w_in * (n - 1)) / n
    axis_h = (fig_h - top_in - bottom_in - gap_h_in * (rows - 1)) / rows
    fig.subplots_adjust(
        left=left_in / fig_w,
        right=1 - right_in / fig_w,
        top=1 - top_in / fig_h,
        bottom=bottom_in / fig_h,
        wspace=gap_w_in / axis_w,
        hspace=gap_h_in / axis_h,
    )
    return fig, axes


def _suptitle(fig, text: str) -> None:
    fig.suptitle(text, y=1 - 0.12 / fig.get_figheight(), va="top", fontsize=12)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _format_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


# --------------------------------------------------------------------------- Kaplan-Meier
def plot_kaplan_meier(
    comparisons: Mapping[str, RiskGroupComparison | NotEstimable],
    endpoint: str,
    path: Path,
    truncate_days: float | None = None,
) -> Path:
    """Kaplan-Meier curves of low vs high risk per split, with numbers at risk under each axis."""
    splits = list(comparisons)
    fig, axes = _panels(len(splits), height=4.4, width=5.6, extra_bottom_in=1.0, extra_left_in=0.6)
    for ax, split in zip(axes[0], splits, strict=True):
        result = comparisons[split]
        if isinstance(result, NotEstimable):
            ax.set_title(_panel_title(split))
            _not_estimable(ax, result.reason)
            continue
        result.km_low.plot_survival_function(ax=ax, ci_show=True, color="tab:blue", show_censors=True)
        result.km_high.plot_survival_function(ax=ax, ci_show=True, color="tab:red", show_censors=True)
        if truncate_days is not None:
            ax.set_xlim(0, truncate_days)
            ax.set_xticks(np.arange(0, truncate_days + 1, 365))
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("Time since surgery (days)")
        ax.set_ylabel(f"{ENDPOINT_TITLES.get(endpoint, endpoint)} probability")
        ax.set_title(_panel_title(split, result.n_high + result.n_low))
        if np.isfinite(result.hr):
            stat = f"HR {result.hr:.2f} (95% CI {result.hr_ci_low:.2f}-{result.hr_ci_high:.2f})\n"
        else:
            stat = "HR not estimable\n"
        stat += f"log-rank P {_format_p(result.logrank_p)}"
        ax.text(
            0.03,
            0.05,
            stat,
            transform=ax.transAxes,
            fontsize=8.5,
            va="bottom",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
        )
        ax.legend(loc="upper right", fontsize=9)
        add_at_risk_counts(result.km_low, result.km_high, ax=ax, rows_to_show=["At risk"], fig=fig)
    _suptitle(fig, f"{ENDPOINT_TITLES.get(endpoint, endpoint)} by model risk group (cut: training median)")
    return _save(fig, path)


# --------------------------------------------------------------------------- ROC
def plot_time_dependent_roc(
    curves: Mapping[str, Mapping[float, TimeDependentROC | NotEstimable]], endpoint: str, path: Path
) -> Path:
    """Cumulative/dynamic ROC curves at each horizon, one panel per split."""
    splits = list(curves)
    fig, axes = _panels(len(splits))
    for ax, split in zip(axes[0], splits, strict=True):
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="Chance")
        notes = []
        for k, (horizon, roc) in enumerate(curves[split].items()):
            if isinstance(roc, NotEstimable):
                notes.append(f"{horizon_label(horizon)}: not estimable ({roc.reason})")
                continue
            ax.plot(
                roc.false_positive_rate,
                roc.true_positive_rate,
                color=HORIZON_COLOURS[k % 5],
                lw=2,
                label=f"{horizon_label(horizon)}: AUC = {roc.auc:.3f}",
            )
        _notes_box(ax, notes)
        _probability_axes(ax, "1 - specificity (false positive rate)", "Sensitivity (true positive rate)", top=1.01)
        ax.set_title(_panel_title(split))
        ax.legend(loc="center right" if notes else "lower right", fontsize=8.5)
    _suptitle(
        fig, f"{ENDPOINT_TITLES.get(endpoint, endpoint)}: time-dependent ROC (IPCW, training censoring)"
    )
    return _save(fig, path)


def plot_binary_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float] | NotEstimable], path: Path
) -> Path:
    """ROC curves of the MVI probability, one panel per split."""
    splits = list(curves)
    fig, axes = _panels(len(splits))
    for ax, split in zip(axes[0], splits, strict=True):
        ax.set_title(_panel_title(split))
        result = curves[split]
        if isinstance(result, NotEstimable):
            _not_estimable(ax, result.reason)
            continue
        fpr, tpr, auc = result
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="Chance")
        ax.plot(fpr, tpr, color="tab:blue", lw=2, label=f"MVI: AUC = {auc:.3f}")
        _probability_axes(ax, "1 - specificity (false positive rate)", "Sensitivity (true positive rate)", top=1.01)
        ax.legend(loc="lower right", fontsize=9)
    _suptitle(fig, "Microvascular invasion: ROC")
    return _save(fig, path)


# --------------------------------------------------------------------------- calibration
def plot_survival_calibration(
    tables: Mapping[str, Mapping[float, pd.DataFrame | NotEstimable]], endpoint: str, path: Path
) -> Path:
    """Predicted vs Kaplan-Meier observed P(event by t) per risk group, one panel per split."""
    splits = list(tables)
    fig, axes = _panels(len(splits))
    for ax, split in zip(axes[0], splits, strict=True):
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="Ideal")
        notes = []
        for k, (horizon, table) in enumerate(tables[split].items()):
            if isinstance(table, NotEstimable):
                notes.append(f"{horizon_label(horizon)}: not estimable ({table.reason})")
                continue
            shown = table[np.isfinite(table["observed"])]
            err = np.vstack(
                [shown["observed"] - shown["observed_ci_low"], shown["observed_ci_high"] - shown["observed"]]
            )
            ax.errorbar(
                shown["predicted"],
                shown["observed"],
                yerr=np.clip(err, 0, None),
                fmt="o-",
                capsize=3,
                color=HORIZON_COLOURS[k % 5],
                label=f"{horizon_label(horizon)} ({len(shown)} group{'' if len(shown) == 1 else 's'})",
            )
        _notes_box(ax, notes)
        _probability_axes(ax, "Predicted probability of event by horizon", "Observed (Kaplan-Meier) probability")
        ax.set_title(_panel_title(split))
        ax.legend(loc="upper left", fontsize=8.5)
    _suptitle(fig, f"{ENDPOINT_TITLES.get(endpoint, endpoint)}: calibration by risk quantile group (95% CI)")
    return _save(fig, path)


def plot_reliability(tables: Mapping[str, pd.DataFrame | NotEstimable], path: Path) -> Path:
    """Reliability curve of the MVI probability, one panel per split."""
    splits = list(tables)
    fig, axes = _panels(len(splits))
    for ax, split in zip(axes[0], splits, strict=True):
        ax.set_title(_panel_title(split))
        table = tables[split]
        if isinstance(table, NotEstimable):
            _not_estimable(ax, table.reason)
            continue
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="Ideal")
        ax.plot(
            table["mean_predicted"], table["observed_fraction"], "o-", color="tab:blue", label="MVI model"
        )
        _probability_axes(ax, "Mean predicted MVI probability", "Observed fraction with MVI")
        ax.legend(loc="upper left", fontsize=9)
    _suptitle(fig, "Microvascular invasion: reliability (quantile bins)")
    return _save(fig, path)


# --------------------------------------------------------------------------- DCA
def plot_decision_curves(
    curves: Mapping[str, Mapping[str, pd.DataFrame | NotEstimable]], title: str, path: Path
) -> Path:
    """Net benefit vs threshold (model, treat all, treat none): rows = outcome definitions, columns = splits.

    Args:
        curves: split -> {row label (e.g. "1 year") -> dcurves table or NotEstimable}.
        title: figure title.
    """
    splits = list(curves)
    row_labels = list(dict.fromkeys(label for split in splits for label in curves[split]))
    fig, axes = _panels(len(splits), rows=len(row_labels))
    for r, label in enumerate(row_labels):
        for c, split in enumerate(splits):
            ax = axes[r][c]
            ax.set_title(f"{_panel_title(split)}, {label}")
            table = curves[split].get(label, NotEstimable("not computed"))
            if isinstance(table, NotEstimable):
                _not_estimable(ax, table.reason)
                continue
            nb = table.pivot(index="threshold", columns="model", values="net_benefit").astype(float)
            prevalence = float(table["prevalence"].iloc[0])
            ax.plot(nb.index, nb["model"], color="tab:blue", lw=2, label="Model")
            ax.plot(nb.index, nb["all"], color="tab:red", lw=1.2, label="Treat all")
            ax.plot(nb.index, nb["none"], color="black", lw=1.2, ls="--", label="Treat none")
            top = max(0.05, prevalence * 1.15)
            ax.set_ylim(-0.05, top)
            ax.set_xlim(0, max(float(nb.index.max()), 0.05))
            ax.set_xlabel("Threshold probability")
            ax.set_ylabel("Net benefit")
            ax.legend(loc="upper right", fontsize=8.5)
    _suptitle(fig, title)
    return _save(fig, path)
