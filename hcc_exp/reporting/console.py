"""Rich rendering of run results for the terminal (no computation here).

Cells go through the package's one formatter (:mod:`hcc_exp.formatting`), so a statistic that
could not be computed reads ``n/e`` here as in every table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hcc_exp.formatting import format_interval, format_number
from hcc_exp.vocabulary import SPLITS, metric_key


def _fmt(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``"n/e"`` for NaN, None or a "not estimable: ..." string.

    >>> _fmt(0.81234), _fmt(float("nan")), _fmt("not estimable: no events")
    ('0.812', 'n/e', 'n/e')
    """
    return format_number(value, digits)


def render_train_result(result, console: Console) -> None:
    """Per-split C-index / MVI metrics of a finished training run."""
    table = Table(title=f"Run {result.run_dir} (best epoch {result.best_epoch}, {result.epochs_trained} epochs)")
    table.add_column("split")
    columns = {
        "OS C-index": ("os", "c_index"),
        "RFS C-index": ("rfs", "c_index"),
        "MVI AUC": ("mvi", "auc"),
        "MVI F1": ("mvi", "f1"),
        "MVI accuracy": ("mvi", "accuracy"),
    }
    for column in columns:
        table.add_column(column, justify="right")
    m = result.metrics
    for split in SPLITS:
        if metric_key(split, "os", "c_index") not in m:
            continue
        table.add_row(split, *(_fmt(m.get(metric_key(split, task, name))) for task, name in columns.values()))
    console.print(table)
    console.print(f"Run folder: {result.run_dir}  ({result.seconds:.0f} s)")


def render_evaluation(run_dir: Path, metrics: dict, console: Console) -> None:
    """The headline numbers of ``hcc-exp evaluate`` (full tables are in RUN_DIR/evaluation)."""
    table = Table(title=f"Evaluation of {run_dir} (more in evaluation/tables)", box=box.SIMPLE_HEAD)
    table.add_column("split", no_wrap=True)
    table.add_column("OS C [95% CI]", justify="right", no_wrap=True)
    table.add_column("RFS C [95% CI]", justify="right", no_wrap=True)
    table.add_column("MVI F1", justify="right", no_wrap=True)
    table.add_column("MVI AUC", justify="right", no_wrap=True)
    table.add_column("OS share*", justify="right", min_width=9)
    for split in SPLITS:
        if metric_key(split, "os", "c_index") not in metrics:
            continue

        def ci(task: str, split: str = split) -> str:
            key = metric_key(split, task, "c_index")
            return format_interval(metrics.get(key), metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high"), 2)

        table.add_row(
            split,
            ci("os"),
            ci("rfs"),
            _fmt(metrics.get(metric_key(split, "mvi", "f1")), 2),
            _fmt(metrics.get(metric_key(split, "mvi", "auc")), 2),
            _fmt(metrics.get(metric_key(split, "os", "oracle_share")), 2),
        )
    console.print(table)
    console.print("* OS share of the oracle margin: (model - 0.5) / (oracle - 0.5)")
    console.print(f"Tables and figures: {Path(run_dir) / 'evaluation'}")


def render_synthetic_summary(summary, console: Console, oracle: Mapping[str, float] | None = None) -> None:
    """Per-split counts and event rates of a written synthetic cohort (``SyntheticSummary``).

    ``oracle``: flat ``"<split>/<task>/<metric>"`` metrics of the true linear predictors; when
    given, the oracle's OS / RFS C-index and MVI AUC get a column each.
    """
    table = Table(title=f"Synthetic cohort {summary.cohort_dir} (seed {summary.seed}, v{summary.version})")
    columns = ["split", "n", "OS events", "RFS events", "MVI+"]
    oracle_keys = [
        ("oracle OS C", "os", "oracle_c_index"),
        ("oracle RFS C", "rfs", "oracle_c_index"),
        ("oracle MVI AUC", "mvi", "oracle_auc"),
    ]
    if oracle is not None:
        columns += [title for title, _, _ in oracle_keys]
    for col in columns:
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in SPLITS:
        row = [
            split,
            str(summary.n_per_split[split]),
            f"{summary.os_event_rate[split]:.0%}",
            f"{summary.rfs_event_rate[split]:.0%}",
            f"{summary.mvi_rate[split]:.0%}",
        ]
        if oracle is not None:
            row += [_fmt(oracle.get(metric_key(split, task, metric))) for _, task, metric in oracle_keys]
        table.add_row(*row)
    console.print(table)


# ----------------------------------------------------------------------------- hcc-exp check
CHECK_ROWS_PER_PROBLEM = 20
"""The check report lists at most this many rows of each problem class; the rest are counted."""


def _check_where(problem, cohort_dir: Path) -> str:
    parts = []
    if problem.column is not None:
        parts.append(f"column {problem.column}")
    if problem.path is not None:
        path = Path(problem.path)
        try:
            path = path.relative_to(cohort_dir)
        except ValueError:
            pass
        parts.append(str(path))
    return "\n".join(parts)


def _problem_table(title: str, problems: list, cohort_dir: Path, style: str, rows_per_class: int) -> Table:
    """First ``rows_per_class`` problems of each class, then one "... and N more" row per class.

    Linear in the number of problems (one pass to group them), and the table holds at most
    ``rows_per_class + 1`` rows per class whatever their number. Every cell is a ``Text``:
    patient ids, file names and messages are user data and never Rich markup.
    """
    by_class: dict[str, list] = {}
    for problem in problems:
        by_class.setdefault(type(problem).__name__, []).append(problem)
    table = Table(title=Text(title, style=style), show_lines=False)
    table.add_column("problem", style=style, no_wrap=True)
    table.add_column("patient", no_wrap=True)
    table.add_column("column / file")
    table.add_column("what is wrong")
    for name, members in by_class.items():
        for p in members[:rows_per_class]:
            table.add_row(Text(name), Text(p.patient_id or ""), Text(_check_where(p, cohort_dir)), Text(p.message))
        if len(members) > rows_per_class:
            more = len(members) - rows_per_class
            table.add_row(Text(name), Text(""), Text(""), Text(f"... and {more:,} more {name}", style="italic"))
    return table


def _rate(count: int, n: int) -> str:
    return f"{count} ({count / n:.0%})" if n else "-"


def _days(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "not reached"
    return f"{value:.0f}"


def render_validation_report(
    report, console: Console, *, rows_per_class: int = CHECK_ROWS_PER_PROBLEM, problem_list: Path | None = None
) -> None:
    """Print a :class:`~hcc_exp.data.validate.ValidationReport`: its problems, or the cohort summary.

    Args:
        report: what :func:`~hcc_exp.data.validate.validate_cohort` returned.
        console: where to print (markup in user data is never interpreted).
        rows_per_class: rows shown per problem class; the rest are counted in one row.
        problem_list: where the full list was written (named under the table), if anywhere.
    """
    cohort_dir = Path(report.cohort_dir)
    if report.errors:
        title = f"{len(report.errors)} problem(s) in {cohort_dir}"
        console.print(_problem_table(title, report.errors, cohort_dir, "red", rows_per_class))
    elif report.summary is not None:
        s = report.summary
        table = Table(title=Text(f"Cohort {cohort_dir}: OK"))
        for col in ("split", "patients", "institutions", "OS events", "RFS events", "MVI+", "median follow-up (d)"):
            table.add_column(col, justify="left" if col in ("split", "institutions") else "right")
        last = list(s.splits)[-1] if s.splits else None
        for row in (*s.splits.values(), s.overall):
            table.add_row(
                Text(row.split),
                str(row.n_patients),
                Text(", ".join(f"{k}: {v}" for k, v in row.institutions.items())),
                _rate(row.os_events, row.n_patients),
                _rate(row.rfs_events, row.n_patients),
                _rate(row.mvi_positive, row.n_patients),
                _days(row.median_followup_days),
                end_section=row.split == last,
            )
        console.print(table)
        if s.spacing_range_mm:
            spacing = Table(title="Voxel spacing (x, y, z) in mm")
            spacing.add_column("phase")
            spacing.add_column("smallest", justify="right")
            spacing.add_column("largest", justify="right")
            for phase, (low, high) in s.spacing_range_mm.items():
                spacing.add_row(phase, " x ".join(f"{v:.3g}" for v in low), " x ".join(f"{v:.3g}" for v in high))
            console.print(spacing)
    if report.warnings:
        title = f"{len(report.warnings)} warning(s)"
        console.print(_problem_table(title, report.warnings, cohort_dir, "yellow", rows_per_class))
    if problem_list is not None:
        console.print(Text.assemble("Full list of problems: ", str(problem_list)))
