"""Rendering of the ablation statistics (:mod:`hcc_exp.reporting.ablation`): Markdown, CSV, forest plot, terminal.

:func:`write_ablation_table` writes Markdown, CSV and a forest plot; :func:`render_table` prints the
main numbers with Rich. Every cell goes through the package's one formatter
(:mod:`hcc_exp.formatting`) and every Markdown file through the document model
(:mod:`hcc_exp.document`). :func:`build_ablation_table` and :class:`AblationTable` are
re-exported from the statistics module for existing imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from hcc_exp import document as doc
from hcc_exp.formatting import NOT_ESTIMABLE, format_interval, format_number, format_p
from hcc_exp.reporting.ablation import (  # noqa: F401  (re-exported)
    DEFAULT_METRICS,
    MAIN_METRICS,
    MAIN_SPLITS,
    REFERENCE_ARM,
    AblationTable,
    build_ablation_table,
    has_bootstrap,
    higher_is_better,
    task_metric,
)
from hcc_exp.vocabulary import SPLITS  # noqa: F401  (re-exported)

__all__ = [
    "AblationTable",
    "TableLogger",
    "ablation_blocks",
    "build_ablation_table",
    "format_interval",
    "format_number",
    "format_p",
    "metric_label",
    "plot_forest",
    "render_table",
    "write_ablation_table",
]

_METRIC_WORDS = {"c_index": "C-index", "f1": "F1", "auc": "AUC", "accuracy": "accuracy", "oracle_share": "oracle share"}


class TableLogger(Protocol):
    """What :func:`write_ablation_table` needs from a tracker (e.g. ``hcc_exp.tracking``)."""

    def log_table(self, name: str, frame: pd.DataFrame) -> None: ...


# --------------------------------------------------------------------------- labels
def metric_label(metric: str) -> str:
    """``"os/c_index"`` -> ``"OS C-index"``, ``"os/auc_365d"`` -> ``"OS AUC 365d"``.

    >>> metric_label("os/auc_365d"), metric_label("mvi/oracle_share")
    ('OS AUC 365d', 'MVI oracle share')
    """
    task, name = task_metric(metric)
    for key, word in _METRIC_WORDS.items():
        if name == key:
            return f"{task.upper()} {word}"
        if name.startswith(key + "_"):
            return f"{task.upper()} {word} {name[len(key) + 1:].replace('_', ' ')}"
    return f"{task.upper()} {name.replace('_', ' ')}"


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


# --------------------------------------------------------------------------- document blocks
def method_paragraph(table: AblationTable) -> str:
    pct = _pct(table.confidence)
    return (
        f"Reference arm: '{table.reference_arm}'. Each cell is the mean over seeds with its {pct} t-interval. "
        f"Δ = arm − {table.reference_arm}, paired by seed (mean and {pct} t-interval); p-values from the paired "
        "t-test and the Wilcoxon signed-rank test over seeds, Holm-adjusted across arms within each split and "
        f"metric. 'Δ bootstrap' is the difference of Harrell's C-index (OS, RFS) or of the MVI ROC AUC, averaged "
        f"over the seeds both arms share, with the "
        f"{pct} percentile interval over {table.n_bootstrap} patient resamples (seed {table.seed}) drawn "
        "identically for every arm and seed. #k = rank of the arm's mean (1 = best)."
    )


def trial_count_block(table: AblationTable) -> doc.Table:
    header = ("arm", "seeds used", "complete", "failed", "pruned", "running", "waiting", "total", "duration (h)")
    rows = []
    frame = table.trial_counts
    for record in frame.to_dict("records"):
        hours = record["duration_s"] / 3600 if pd.notna(record["duration_s"]) else math.nan
        rows.append(
            (
                str(record["arm"]), str(record["seeds_used"]), str(record["complete"]), str(record["fail"]),
                str(record["pruned"]), str(record["running"]), str(record["waiting"]), str(record["total"]),
                format_number(hours, 2),
            )
        )  # fmt: skip
    totals = frame.drop(columns=["arm"]).sum(numeric_only=True, min_count=1)
    total_hours = totals["duration_s"] / 3600 if pd.notna(totals["duration_s"]) else math.nan
    rows.append(
        ("all",) + tuple(str(int(totals[c])) for c in ("seeds_used", "complete", "fail", "pruned", "running", "waiting", "total"))
        + (format_number(total_hours, 2),)
    )
    return doc.Table(header, tuple(rows))


def _oracle_tasks(table: AblationTable, split: str) -> list[str]:
    of_split = table.rows[(table.rows["split"] == split) & table.rows["oracle_share"].notna()]
    return list(dict.fromkeys(task_metric(m)[0] for m in of_split["metric"]))


def split_blocks(table: AblationTable, split: str) -> list[doc.Block]:
    """Mean table and difference table of one split."""
    rows = table.rows[table.rows["split"] == split]
    metrics = [m for m in table.metrics if (rows["metric"] == m).any()]
    oracle_tasks = _oracle_tasks(table, split)
    header = ["arm", "seeds (failed)"] + [metric_label(m) for m in metrics] + [f"{t.upper()} oracle share" for t in oracle_tasks]
    mean_rows = []
    for arm in table.arms:
        of_arm = rows[rows["arm"] == arm]
        if of_arm.empty:
            continue
        first = of_arm.iloc[0]
        cells = [arm, f"{int(of_arm['n_seeds'].max())} ({int(first['n_failed'])})"]
        for metric in metrics:
            hit = of_arm[of_arm["metric"] == metric]
            if hit.empty:
                cells.append(NOT_ESTIMABLE)
                continue
            r = hit.iloc[0]
            rank = "" if pd.isna(r["rank"]) else f" #{int(r['rank'])}"
            cells.append(format_interval(r["mean"], r["ci_low"], r["ci_high"]) + rank)
        for task in oracle_tasks:
            hit = of_arm[(of_arm["metric"].str.startswith(task + "/")) & of_arm["oracle_share"].notna()]
            cells.append(format_number(hit.iloc[0]["oracle_share"]) if not hit.empty else NOT_ESTIMABLE)
        mean_rows.append(tuple(cells))

    diff_header = (
        "metric", "arm", "pairs", "Δ [CI]", "p t-test", "p t (Holm)", "p Wilcoxon", "p Wilcoxon (Holm)",
        "Δ bootstrap [CI]",
    )  # fmt: skip
    diff_rows = []
    for metric in metrics:
        for r in rows[rows["metric"] == metric].to_dict("records"):
            diff_rows.append(
                (
                    metric_label(metric), r["arm"], str(r["n_pairs"]),
                    format_interval(r["diff_mean"], r["diff_ci_low"], r["diff_ci_high"], signed=True),
                    format_p(r["t_p"]), format_p(r["t_p_holm"]), format_p(r["wilcoxon_p"]), format_p(r["wilcoxon_p_holm"]),
                    format_interval(r["boot_diff"], r["boot_ci_low"], r["boot_ci_high"], signed=True)
                    if has_bootstrap(metric) else "",
                )
            )  # fmt: skip
    return [
        doc.Heading(f"{split.capitalize()} split", 2),
        doc.Heading("Mean over seeds", 3),
        doc.Table(tuple(header), tuple(mean_rows), align_right_from=1),
        doc.Heading(f"Difference from '{table.reference_arm}'", 3),
        doc.Table(diff_header, tuple(diff_rows), align_right_from=2),
    ]


def not_estimable_notes(table: AblationTable) -> list[str]:
    """Distinct reasons why an interval or test is missing, with where they apply."""
    found: dict[str, list[str]] = {}
    for r in table.rows.to_dict("records"):
        for column in ("ci_note", "test_note", "boot_note"):
            reason = r[column]
            if isinstance(reason, str) and reason.startswith("not estimable"):
                found.setdefault(reason, []).append(f"{r['split']} {r['metric']} {r['arm']}")
    return [f"{reason} ({', '.join(where[:4])}{', …' if len(where) > 4 else ''})" for reason, where in found.items()]


def ablation_blocks(table: AblationTable, forest_plot: Path | None, *, heading_level: int = 1) -> list[doc.Block]:
    """The ablation section (trials, per-split tables, forest plot, notes) as document blocks."""
    objective = f"{table.objective.metric} ({table.objective.direction})"
    blocks: list[doc.Block] = [
        doc.Heading(f"Ablation: {table.sweep_name}", heading_level),
        doc.Paragraph(f"Sweep objective: {objective}. " + method_paragraph(table)),
        doc.Heading("Trials", heading_level + 1),
        trial_count_block(table),
    ]
    for split in table.splits:
        for block in split_blocks(table, split):
            if isinstance(block, doc.Heading):
                block = doc.Heading(block.text, block.level + heading_level - 1)
            blocks.append(block)
    if forest_plot is not None:
        blocks += [
            doc.Heading("Forest plot", heading_level + 1),
            doc.Image(forest_plot, f"Difference from '{table.reference_arm}' (arm − {table.reference_arm}) with {_pct(table.confidence)} intervals"),
        ]
    notes = list(table.notes) + not_estimable_notes(table)
    if notes:
        blocks += [doc.Heading("Notes", heading_level + 1), doc.BulletList(tuple(notes))]
    return blocks


# --------------------------------------------------------------------------- forest plot
def plot_forest(table: AblationTable, path: Path, *, splits: Sequence[str] | None = None) -> Path:
    """Forest plot of every arm's difference from the reference, one panel per metric and split.

    Circles: mean paired difference over seeds with its t-interval; squares (C-indices):
    the paired patient bootstrap estimate and percentile interval. Hollow markers have
    no interval (not estimable). Writes ``path`` (PNG) and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    plot_splits = [s for s in (splits or [s for s in table.splits if s != "train"] or table.splits) if s in table.splits]
    metrics = list(table.metrics)
    arms = [a for a in table.arms if a != table.reference_arm] or list(table.arms)
    n_rows, n_cols = max(len(metrics), 1), max(len(plot_splits), 1)
    height = max(1.6, 0.42 * len(arms) + 0.9)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(4.6 * n_cols + 1.2, height * n_rows + 0.8), squeeze=False, sharey=True, sharex="row"
    )
    pct = _pct(table.confidence)
    seed_colour, boot_colour = "#1f4e9c", "#d9730d"
    y = np.arange(len(arms))[::-1].astype(float)
    for i, metric in enumerate(metrics):
        for j, split in enumerate(plot_splits):
            ax = axes[i][j]
            rows = table.rows[(table.rows["split"] == split) & (table.rows["metric"] == metric)].set_index("arm")
            ax.axvline(0.0, color="#555", linewidth=1, linestyle="--", zorder=1)
            both = has_bootstrap(metric)
            label_transform = blended_transform_factory(ax.transAxes, ax.transData)
            for k, arm in enumerate(arms):
                r = rows.loc[arm] if arm in rows.index else None
                if r is None or not math.isfinite(r["diff_mean"]):
                    ax.text(0.02, y[k], "no estimate", transform=label_transform, va="center", fontsize=8, color="#888")
                    continue
                offset = 0.14 if both else 0.0
                _forest_point(ax, r["diff_mean"], r["diff_ci_low"], r["diff_ci_high"], y[k] + offset, seed_colour, "o")
                if both:
                    _forest_point(ax, r["boot_diff"], r["boot_ci_low"], r["boot_ci_high"], y[k] - offset, boot_colour, "s")
            ax.set_title(f"{split} · {metric_label(metric)}", fontsize=10)
            ax.grid(axis="x", color="#ddd", linewidth=0.6)
            ax.margins(x=0.08)
            ax.set_yticks(y, arms)
            ax.set_ylim(-0.6, len(arms) - 0.4)
            ax.tick_params(labelsize=9)
            ax.set_xlabel(f"Δ {metric_label(metric).split(' ', 1)[-1]} (arm − {table.reference_arm})", fontsize=9)
            ax.tick_params(axis="x", labelbottom=True)
        axes[i][0].set_ylabel("arm", fontsize=9)
    handles = [Line2D([], [], color=seed_colour, marker="o", linestyle="-", label=f"mean over seeds, {pct} t-interval")]
    if any(has_bootstrap(m) for m in metrics):
        handles.append(
            Line2D([], [], color=boot_colour, marker="s", linestyle="-", label=f"paired patient bootstrap, {pct} CI")
        )
    handles.append(
        Line2D([], [], color="#555", marker="o", markerfacecolor="white", linestyle="none", label="no interval (not estimable)")
    )
    fig.suptitle(f"{table.sweep_name}: difference from '{table.reference_arm}'", fontsize=12)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.5 / (height * n_rows + 0.8), 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _forest_point(ax: Any, value: float, low: float, high: float, y: float, colour: str, marker: str) -> None:
    if not math.isfinite(value):
        return
    if math.isfinite(low) and math.isfinite(high):
        ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt=marker, color=colour, ecolor=colour,
                    elinewidth=1.6, capsize=3, markersize=5, zorder=3)  # fmt: skip
    else:
        ax.plot(value, y, marker=marker, markerfacecolor="white", markeredgecolor=colour, linestyle="none",
                markersize=6, zorder=3)  # fmt: skip


# --------------------------------------------------------------------------- writers
def write_ablation_table(
    table: AblationTable, out_dir: Path, *, tracker: TableLogger | None = None
) -> dict[str, Path]:
    """Write ``ablation.md``, ``ablation.csv`` (one row per split, metric and arm) and ``ablation_forest.png``.

    Args:
        table: from :func:`build_ablation_table`.
        out_dir: created if needed.
        tracker: optional; receives ``log_table("ablation", rows)``.

    Returns:
        ``{"markdown": ..., "csv": ..., "forest_plot": ...}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "ablation.csv"
    table.rows.to_csv(csv_path, index=False, float_format="%.6g")
    forest = plot_forest(table, out_dir / "ablation_forest.png")
    markdown = out_dir / "ablation.md"
    markdown.write_text(doc.to_markdown(ablation_blocks(table, forest), out_dir), encoding="utf-8")
    if tracker is not None:
        tracker.log_table("ablation", table.rows)
    return {"markdown": markdown, "csv": csv_path, "forest_plot": forest}


def render_table(
    table: AblationTable,
    console: Console,
    *,
    splits: Sequence[str] = MAIN_SPLITS,
    metrics: Sequence[str] = MAIN_METRICS,
) -> None:
    """Print the main table: per arm, mean [CI] over seeds and Δ vs the reference with Holm p (t-test)."""
    splits = [s for s in splits if s in table.splits]
    metrics = [m for m in metrics if m in table.metrics]
    rich_table = RichTable(
        title=f"Ablation {table.sweep_name} (mean [{_pct(table.confidence)} CI] over seeds; Δ vs {table.reference_arm}, Holm p)",
        show_lines=True,
    )
    rich_table.add_column("arm", style="bold")
    rich_table.add_column("seeds\n(failed)", justify="right")
    for split in splits:
        for metric in metrics:
            rich_table.add_column(f"{split}\n{metric_label(metric)}", justify="right")
    counts = table.trial_counts.set_index("arm")
    for arm in table.arms:
        seeds = int(counts.loc[arm, "seeds_used"]) if arm in counts.index else 0
        failed = int(counts.loc[arm, "fail"]) if arm in counts.index else 0
        cells: list[Text] = [Text(arm), Text(f"{seeds} ({failed})")]
        for split in splits:
            for metric in metrics:
                try:
                    r = table.row(split, metric, arm)
                except KeyError:
                    cells.append(Text(NOT_ESTIMABLE))
                    continue
                text = Text(format_interval(r["mean"], r["ci_low"], r["ci_high"]))
                if arm != table.reference_arm:
                    delta = format_number(r["diff_mean"], signed=True)
                    style = ""
                    if pd.notna(r["t_p_holm"]) and r["t_p_holm"] < 0.05:
                        style = "red" if (r["diff_mean"] < 0) == higher_is_better(metric) else "green"
                    text.append(f"\nΔ {delta} p={format_p(r['t_p_holm'])}", style=style)
                cells.append(text)
        rich_table.add_row(*cells)
    console.print(rich_table)
    for note in table.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
