"""Rich rendering of run results for the terminal (no computation here)."""

from __future__ import annotations

import math
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
