"""Rich rendering of run results for the terminal (no computation here).

Cells go through the package's one formatter (:mod:`hcc_exp.formatting`), so a statistic that
could not be computed reads ``n/e`` here as in every table.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

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
