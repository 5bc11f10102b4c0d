"""Sweep report: the ablation tables, the forest plot, each arm's best run and the trial counts.

Written twice from one list of blocks (:mod:`hcc_exp.document`):

* ``report.md`` next to its images (forest plot, copied evaluation figures);
* ``report.html``, self-contained: CSS inline, every image a base64 data URI.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

from hcc_exp import document as doc
from hcc_exp.formatting import format_number
from hcc_exp.reporting.ablation import AblationTable, build_ablation_table, task_metric
from hcc_exp.reporting.sweep_folder import EVALUATION_DIR, RunRecord
from hcc_exp.reporting.tables import TableLogger, ablation_blocks, metric_label, write_ablation_table
from hcc_exp.vocabulary import SPLITS

REPORT_DIR = "report"
BEST_RUNS_DIR = "best_runs"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "_"


def _display_path(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


def _split_and_metric(key: str) -> tuple[str, str] | None:
    """``"internal/os/c_index"`` -> ``("internal", "os/c_index")``; None for a key that is no metric key."""
    split, metric = key.split("/", 1) if key.count("/") >= 2 else ("", "")
    if split not in SPLITS:
        return None
    try:
        task_metric(metric)
    except ValueError:
        return None
    return split, metric


def run_metric_table(metrics: dict[str, float]) -> tuple[doc.Table, list[str]]:
    """Flat ``<split>/<task>/<metric>`` keys as a table (rows task/metric, columns splits).

    Returns:
        The table and the keys that do not follow the pattern, as ``"key: value"`` lines.
    """
    by_name: dict[str, dict[str, float]] = {}
    others: list[str] = []
    for key, value in metrics.items():
        parsed = _split_and_metric(key)
        if parsed is not None:
            by_name.setdefault(parsed[1], {})[parsed[0]] = value
        elif isinstance(value, float) and math.isfinite(value):
            others.append(f"{key}: {format_number(value, 4)}")
    splits = [s for s in SPLITS if any(s in v for v in by_name.values())]
    rows = tuple(
        (metric_label(name),) + tuple(format_number(values.get(s, math.nan)) for s in splits)
        for name, values in by_name.items()
    )
    return doc.Table(("metric",) + tuple(splits), rows), others


def best_run_blocks(table: AblationTable, out_dir: Path) -> list[doc.Block]:
    """Per arm: its best run by the sweep objective, its metrics and its evaluation figures.

    Figures are copied to ``out_dir/best_runs/<arm>/`` so the Markdown report stays
    readable when the run folders move.
    """
    best = table.sweep.best_runs()
    objective = table.objective
    blocks: list[doc.Block] = [
        doc.Heading("Best run per arm", 2),
        doc.Paragraph(f"Chosen by the sweep objective {objective.metric} ({objective.direction}) among completed trials."),
    ]
    for arm in table.arms:
        run: RunRecord | None = best.get(arm)
        if run is None:
            blocks += [doc.Heading(f"Arm '{arm}'", 3), doc.Paragraph("No completed run.")]
            continue
        trial = "–" if run.trial is None else str(run.trial)
        blocks += [
            doc.Heading(f"Arm '{arm}': {run.run_dir.name}", 3),
            doc.Paragraph(
                f"Trial {trial}, seed {run.seed}, {objective.metric} = {format_number(run.value, 4)}; "
                f"run folder {_display_path(run.run_dir, table.sweep_dir)}."
            ),
        ]
        metric_table, others = run_metric_table(run.metrics)
        if metric_table.rows:
            blocks.append(metric_table)
        if others:
            blocks.append(doc.BulletList(tuple(others)))
        images = run.evaluation_images()
        if images:
            target_dir = out_dir / BEST_RUNS_DIR / _safe_name(arm)
            target_dir.mkdir(parents=True, exist_ok=True)
            for image in images:
                relative = image.relative_to(run.run_dir / EVALUATION_DIR)
                target = target_dir / _safe_name("__".join(relative.parts))
                shutil.copyfile(image, target)
                blocks.append(doc.Image(target, f"{arm}: {EVALUATION_DIR}/{relative.as_posix()}"))
        else:
            blocks.append(doc.Paragraph("No evaluation figures (run `hcc-exp evaluate` on this run folder to add them)."))
    return blocks


def write_report(
    sweep_dir: Path,
    out_dir: Path | None = None,
    *,
    table: AblationTable | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    tracker: TableLogger | None = None,
) -> dict[str, Path]:
    """Write the sweep report as Markdown and as one self-contained HTML file.

    Args:
        sweep_dir: ``runs/<sweep name>``.
        out_dir: where to write; default ``<sweep_dir>/report``.
        table: a table already built by :func:`build_ablation_table` (else built here with
            ``n_bootstrap`` and ``seed``).
        tracker: optional, passed to :func:`write_ablation_table`.

    Returns:
        ``{"html", "markdown", "table_markdown", "csv", "forest_plot"}`` paths.
    """
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / REPORT_DIR
    if table is None:
        table = build_ablation_table(sweep_dir, n_bootstrap=n_bootstrap, seed=seed)
    files = write_ablation_table(table, out_dir, tracker=tracker)
    blocks: list[doc.Block] = [doc.Heading(f"Sweep report: {table.sweep_name}", 1)]
    blocks += ablation_blocks(table, files["forest_plot"], heading_level=2)
    blocks += best_run_blocks(table, out_dir)

    markdown = out_dir / "report.md"
    markdown.write_text(doc.to_markdown(blocks, out_dir), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(doc.to_html(blocks, f"Sweep report: {table.sweep_name}"), encoding="utf-8")
    return {
        "html": html_path,
        "markdown": markdown,
        "table_markdown": files["markdown"],
        "csv": files["csv"],
        "forest_plot": files["forest_plot"],
    }
