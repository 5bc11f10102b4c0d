"""Ablation statistics of a sweep: every arm against the reference arm ``full``.

For each split and metric the table holds, per arm:

* mean over seeds with a 95 % t-interval, the number of seeds used, and the
  failed / pruned trials of the arm;
* the difference from ``full`` paired by seed (mean and t-interval), the
  paired t-test and Wilcoxon signed-rank p-values and their Holm adjustment
  across arms (one family per split and metric);
* for C-indices and the MVI AUC, the paired patient bootstrap CI of the
  difference of the seed-averaged Harrell C / ROC AUC (same patients in every
  resample for every arm);
* the oracle share (synthetic cohorts) where ``evaluation/metrics.json`` has it.

:func:`build_ablation_table` reads the sweep folder and computes (the patient-level bootstrap inputs
come from :mod:`hcc_exp.reporting.ablation_inputs`); :mod:`hcc_exp.reporting.tables` renders.
Metrics are ``"<task>/<metric>"`` (``"os/c_index"``), looked up in each run as ``"<split>/<task>/<metric>"`` (:func:`hcc_exp.vocabulary.metric_key`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.errors import HccExpError, SweepError
from hcc_exp.evaluation.concordance import bootstrap_indices
from hcc_exp.evaluation.oracle import SHARE
from hcc_exp.progress import patient_progress
from hcc_exp.reporting.ablation_inputs import (  # noqa: F401  (MVI_COLUMNS re-exported)
    MVI_COLUMNS,
    SURVIVAL_COLUMNS,
    ClassificationData,
    PredictionLoader,
    SurvivalData,
)
from hcc_exp.reporting.stats import (
    CONFIDENCE,
    PairedBootstrap,
    holm_adjust,
    mean_t_interval,
    paired_seed_comparison,
)
from hcc_exp.reporting.sweep_folder import RunRecord, SweepFolder, SweepObjective, read_sweep
from hcc_exp.vocabulary import SPLITS, metric_key, parse_metric_key

REFERENCE_ARM = "full"
DEFAULT_METRICS: tuple[str, ...] = (
    "os/c_index",
    "rfs/c_index",
    "mvi/f1",
    "mvi/auc",
    "mvi/accuracy",
    "os/auc_365d",
    "rfs/auc_365d",
)
MAIN_METRICS: tuple[str, ...] = ("os/c_index", "rfs/c_index", "mvi/f1")
MAIN_SPLITS: tuple[str, ...] = SPLITS[1:]
"""Splits of the terminal table: internal validation and external test."""
BOOTSTRAP_METRICS: tuple[str, ...] = ("os/c_index", "rfs/c_index", "mvi/auc")
"""Metrics with a paired patient bootstrap of the difference from the reference arm."""
_LOWER_IS_BETTER = ("brier", "loss", "error", "ece")

ROW_COLUMNS: tuple[str, ...] = (
    "split", "metric", "arm", "is_reference", "n_seeds", "n_failed", "n_pruned",
    "mean", "ci_low", "ci_high", "ci_note", "rank",
    "n_pairs", "diff_mean", "diff_ci_low", "diff_ci_high",
    "t_statistic", "t_p", "t_p_holm", "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_p_holm", "test_note",
    "boot_diff", "boot_ci_low", "boot_ci_high", "boot_n_patients", "boot_n_seeds", "boot_n_resamples", "boot_note",
    "oracle_share", "oracle_share_n",
)  # fmt: skip


@dataclass
class AblationTable:
    """The ablation statistics of one sweep.

    Attributes:
        sweep_name: the sweep's name.
        sweep_dir: the sweep folder.
        reference_arm: arm every other arm is compared with.
        objective: the sweep's objective (ranks the runs of an arm).
        splits, metrics: those present in the table, in the requested order.
        arms: reference first, then in order of first trial.
        rows: one row per (split, metric, arm), columns :data:`ROW_COLUMNS`.
        trial_counts: per arm: seeds_used, complete, fail, pruned, running, waiting, total, duration_s.
        n_bootstrap, seed, confidence: bootstrap resamples, its seed, interval coverage.
        notes: skipped runs, absent metrics, bootstrap problems.
        sweep: the folder as read (runs, trials), for reports.
    """

    sweep_name: str
    sweep_dir: Path
    reference_arm: str
    objective: SweepObjective
    splits: tuple[str, ...]
    metrics: tuple[str, ...]
    arms: tuple[str, ...]
    rows: pd.DataFrame
    trial_counts: pd.DataFrame
    n_bootstrap: int
    seed: int
    confidence: float
    notes: tuple[str, ...]
    sweep: SweepFolder = field(repr=False)

    def row(self, split: str, metric: str, arm: str) -> pd.Series:
        """The row of one arm for ``split`` and ``metric`` (KeyError if absent)."""
        hit = self.rows[(self.rows["split"] == split) & (self.rows["metric"] == metric) & (self.rows["arm"] == arm)]
        if hit.empty:
            raise KeyError(f"no row for split={split} metric={metric} arm={arm}")
        return hit.iloc[0]


# --------------------------------------------------------------------------- metric names
def task_metric(metric: str) -> tuple[str, str]:
    """``"<task>/<metric>"`` -> ``(task, metric)``, the task checked against the vocabulary.

    The metric part may hold further ``/`` (a baseline's ``"os/baseline/bclc/c_index"``).

    >>> task_metric("os/auc_365d"), task_metric("os/baseline/afp/diff")
    (('os', 'auc_365d'), ('os', 'baseline/afp/diff'))
    """
    task, name = metric.split("/", 1) if "/" in metric else (metric, "")
    parsed = parse_metric_key(metric_key(SPLITS[0], task, name.replace("/", "-") or "?"))
    return parsed.task, name


def split_metric_key(split: str, metric: str) -> str:
    """The run metric key of ``"<task>/<metric>"`` on ``split``.

    >>> split_metric_key("internal", "os/c_index")
    'internal/os/c_index'
    """
    return metric_key(split, *task_metric(metric))


def higher_is_better(metric: str) -> bool:
    """False for losses, errors and Brier / ECE scores (a lower value ranks first).

    >>> higher_is_better("os/c_index"), higher_is_better("mvi/brier")
    (True, False)
    """
    _, name = task_metric(metric)
    return not any(marker in name for marker in _LOWER_IS_BETTER)


def _is_c_index(metric: str) -> bool:
    task, name = task_metric(metric)
    return task in SURVIVAL_COLUMNS and name == "c_index"


def has_bootstrap(metric: str) -> bool:
    """Whether ``metric`` gets the paired patient bootstrap of the difference (:data:`BOOTSTRAP_METRICS`)."""
    return metric in BOOTSTRAP_METRICS


# --------------------------------------------------------------------------- build
def _seed_values(runs: Sequence[RunRecord], key: str) -> dict[int, float]:
    return {run.seed: run.metrics.get(key, math.nan) for run in runs}


def _nan_bootstrap(reason: str) -> PairedBootstrap:
    return PairedBootstrap(math.nan, math.nan, math.nan, 0, 0, 0, reason)


def build_ablation_table(
    sweep_dir: Path,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    splits: Sequence[str] = SPLITS,
    reference_arm: str = REFERENCE_ARM,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    progress: bool = False,
) -> AblationTable:
    """Read a sweep folder and compute the ablation statistics.

    Args:
        sweep_dir: ``runs/<sweep name>`` with ``trials.csv`` and run folders.
        metrics: ``"<task>/<metric>"`` keys looked up as ``"<split>/<task>/<metric>"`` in each
            run's metrics; metrics no run reports are left out (with a note).
        splits: splits to tabulate.
        reference_arm: the arm every other arm is compared with.
        n_bootstrap: patient resamples of the C-index bootstrap.
        seed: seeds the bootstrap generator (``numpy.random.default_rng([seed, split, endpoint])``).
        confidence: coverage of every interval.
        progress: show a Rich progress bar.

    Raises:
        SweepError: the folder is missing or holds no completed run.
    """
    sweep = read_sweep(sweep_dir)
    if not sweep.runs:
        raise SweepError(f"sweep {sweep.root} has no completed trial with a readable run folder")
    notes = list(sweep.notes)
    arms = sweep.arms(reference_arm)
    runs_by_arm = {arm: sorted((r for r in sweep.runs if r.arm == arm), key=lambda r: r.seed) for arm in arms}
    reference_runs = runs_by_arm.get(reference_arm, [])
    if not reference_runs:
        notes.append(f"reference arm '{reference_arm}' has no completed run: differences are not estimable")
    counts = sweep.trial_counts(reference_arm).set_index("arm")

    present = [
        (split, metric)
        for split in splits
        for metric in metrics
        if any(split_metric_key(split, metric) in run.metrics for run in sweep.runs)
    ]
    absent = [m for m in metrics if not any(m == p[1] for p in present)]
    if absent:
        notes.append("metric(s) reported by no run: " + ", ".join(absent))

    loader = PredictionLoader()
    rows: list[dict[str, Any]] = []
    with patient_progress("ablation table:", enabled=progress) as bar:
        task_id = bar.add_task("split x metric", total=len(present))
        for split, metric in present:
            rows += _metric_rows(
                split, metric, arms, runs_by_arm, reference_arm, counts, loader,
                n_bootstrap=n_bootstrap, seed=seed, confidence=confidence, notes=notes,
            )  # fmt: skip
            bar.advance(task_id)
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    kept_splits = tuple(s for s in splits if (frame["split"] == s).any())
    kept_metrics = tuple(m for m in metrics if (frame["metric"] == m).any())
    return AblationTable(
        sweep_name=sweep.name,
        sweep_dir=sweep.root,
        reference_arm=reference_arm,
        objective=sweep.objective,
        splits=kept_splits,
        metrics=kept_metrics,
        arms=tuple(arms),
        rows=frame,
        trial_counts=counts.reset_index(),
        n_bootstrap=n_bootstrap,
        seed=seed,
        confidence=confidence,
        notes=tuple(dict.fromkeys(notes)),
        sweep=sweep,
    )


def _metric_rows(
    split: str,
    metric: str,
    arms: Sequence[str],
    runs_by_arm: dict[str, list[RunRecord]],
    reference_arm: str,
    counts: pd.DataFrame,
    loader: PredictionLoader,
    *,
    n_bootstrap: int,
    seed: int,
    confidence: float,
    notes: list[str],
) -> list[dict[str, Any]]:
    key = split_metric_key(split, metric)
    task, _ = task_metric(metric)
    reference_values = _seed_values(runs_by_arm.get(reference_arm, []), key)
    oracle_key = metric_key(split, task, SHARE)

    data: SurvivalData | ClassificationData | None = None
    indices: np.ndarray | None = None
    bootstrap_reason = f"not applicable: patient bootstrap is for {', '.join(BOOTSTRAP_METRICS)}"
    if has_bootstrap(metric):
        all_runs = [run for arm in arms for run in runs_by_arm[arm]]
        if not runs_by_arm.get(reference_arm):
            bootstrap_reason = f"not estimable: reference arm '{reference_arm}' has no run"
        else:
            try:
                data = loader.survival(all_runs, split, task) if _is_c_index(metric) else loader.classification(all_runs, split)
            except HccExpError as exc:
                bootstrap_reason = f"not estimable: {exc}"
                notes.append(f"{key} bootstrap: {exc}")
            else:
                split_index = SPLITS.index(split) if split in SPLITS else len(SPLITS)
                metric_index = BOOTSTRAP_METRICS.index(metric)
                rng = np.random.default_rng([seed, split_index, metric_index])
                indices = bootstrap_indices(data.n_patients, n_bootstrap, rng)

    rows: list[dict[str, Any]] = []
    for arm in arms:
        runs = runs_by_arm[arm]
        values = _seed_values(runs, key)
        interval = mean_t_interval(list(values.values()), confidence)
        common = sorted(set(values) & set(reference_values))
        comparison = paired_seed_comparison(
            [values[s] for s in common], [reference_values[s] for s in common], confidence
        )
        test_note = comparison.reason
        if not reference_values:
            test_note = f"not estimable: reference arm '{reference_arm}' has no run"
        elif arm == reference_arm:
            test_note = "reference arm"
        elif not common:
            test_note = f"not estimable: no seed shared with '{reference_arm}'"

        if data is not None and indices is not None:
            arm_scores, reference_scores = data.scores.get(arm, {}), data.scores[reference_arm]
            shared = sorted(set(arm_scores) & set(reference_scores))
            if shared:
                boot = data.paired_bootstrap(
                    np.stack([arm_scores[s] for s in shared]), np.stack([reference_scores[s] for s in shared]),
                    indices, confidence,
                )  # fmt: skip
            else:
                boot = _nan_bootstrap(f"not estimable: no seed with predictions shared with '{reference_arm}'")
        else:
            boot = _nan_bootstrap(bootstrap_reason)
        oracle = [run.metrics[oracle_key] for run in runs if oracle_key in run.metrics]
        oracle_finite = [v for v in oracle if math.isfinite(v)]
        arm_counts = counts.loc[arm] if arm in counts.index else None
        rows.append(
            {
                "split": split,
                "metric": metric,
                "arm": arm,
                "is_reference": arm == reference_arm,
                "n_seeds": interval.n,
                "n_failed": int(arm_counts["fail"]) if arm_counts is not None else 0,
                "n_pruned": int(arm_counts["pruned"]) if arm_counts is not None else 0,
                "mean": interval.mean,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "ci_note": interval.reason,
                "rank": math.nan,
                "n_pairs": comparison.n_pairs,
                "diff_mean": comparison.diff.mean,
                "diff_ci_low": comparison.diff.low,
                "diff_ci_high": comparison.diff.high,
                "t_statistic": comparison.t_statistic,
                "t_p": comparison.t_p,
                "t_p_holm": math.nan,
                "wilcoxon_statistic": comparison.wilcoxon_statistic,
                "wilcoxon_p": comparison.wilcoxon_p,
                "wilcoxon_p_holm": math.nan,
                "test_note": test_note,
                "boot_diff": boot.estimate,
                "boot_ci_low": boot.low,
                "boot_ci_high": boot.high,
                "boot_n_patients": boot.n_patients,
                "boot_n_seeds": boot.n_seeds,
                "boot_n_resamples": boot.n_resamples,
                "boot_note": boot.reason,
                "oracle_share": float(np.mean(oracle_finite)) if oracle_finite else math.nan,
                "oracle_share_n": len(oracle_finite),
            }
        )

    # Holm family: the non-reference arms of this split and metric.
    others = [i for i, row in enumerate(rows) if not row["is_reference"]]
    for column in ("t_p", "wilcoxon_p"):
        adjusted = holm_adjust([rows[i][column] for i in others])
        for i, value in zip(others, adjusted, strict=True):
            rows[i][column + "_holm"] = float(value)
    means = pd.Series([row["mean"] for row in rows], dtype=float)
    ranks = means.rank(ascending=not higher_is_better(metric), method="min")
    for row, rank in zip(rows, ranks, strict=True):
        row["rank"] = rank
    return rows


