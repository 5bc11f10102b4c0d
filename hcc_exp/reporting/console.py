"""Rich rendering of run results for the terminal (no computation here)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

SPLITS = ("train", "internal", "external")


def _fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, str) and value.startswith("not estimable"):
        return "n/e"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "n/a" if math.isnan(float(value)) else f"{float(value):.{digits}f}"
    return "n/a" if value is None else str(value)


def render_train_result(result, console: Console) -> None:
    """Per-split C-index / MVI metrics of a finished training run."""
    table = Table(title=f"Run {result.run_dir} (best epoch {result.best_epoch}, {result.epochs_trained} epochs)")
    table.add_column("split")
    for column in ("OS C-index", "RFS C-index", "MVI AUC", "MVI F1", "MVI accuracy"):
        table.add_column(column, justify="right")
    for split in SPLITS:
        m = result.metrics
        if f"{split}/os/c_index" not in m:
            continue
        table.add_row(
            split,
            _fmt(m.get(f"{split}/os/c_index")),
            _fmt(m.get(f"{split}/rfs/c_index")),
            _fmt(m.get(f"{split}/mvi/auc")),
            _fmt(m.get(f"{split}/mvi/f1")),
            _fmt(m.get(f"{split}/mvi/accuracy")),
        )
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
        if f"{split}/os/c_index" not in metrics:
            continue

        def ci(task: str, split: str = split) -> str:
            base = f"{split}/{task}/c_index"
            low, high = _fmt(metrics.get(base + "_ci_low"), 2), _fmt(metrics.get(base + "_ci_high"), 2)
            return f"{_fmt(metrics.get(base), 2)} [{low}-{high}]"

        table.add_row(
            split,
            ci("os"),
            ci("rfs"),
            _fmt(metrics.get(f"{split}/mvi/f1"), 2),
            _fmt(metrics.get(f"{split}/mvi/auc"), 2),
            _fmt(metrics.get(f"{split}/os/oracle_share"), 2),
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
    oracle_keys = [("oracle OS C", "os", "c_index"), ("oracle RFS C", "rfs", "c_index"), ("oracle MVI AUC", "mvi", "auc")]
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
            row += [_fmt(oracle.get(f"{split}/{task}/{metric}")) for _, task, metric in oracle_keys]
        table.add_row(*row)
    console.print(table)
