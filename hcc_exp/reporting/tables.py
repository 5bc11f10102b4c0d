"""Ablation table of a sweep: every arm against the reference arm ``full``.

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

:func:`build_ablation_table` reads the sweep folder and computes;
:func:`write_ablation_table` writes Markdown, CSV and a forest plot;
:func:`render_table` prints the main numbers with Rich.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table as RichTable
from rich.text import Text

from hcc_exp.errors import HccExpError, RunFolderError, SweepError
from hcc_exp.evaluation.concordance import bootstrap_indices
from hcc_exp.reporting import document as doc
from hcc_exp.reporting.stats import (
    CONFIDENCE,
    PairedBootstrap,
    holm_adjust,
    mean_t_interval,
    paired_seed_comparison,
    pooled_paired_auc_difference,
    pooled_paired_c_index_difference,
)
from hcc_exp.reporting.sweep_folder import (
    RunRecord,
    SweepFolder,
    SweepObjective,
    read_labels,
    read_predictions,
    read_sweep,
)

REFERENCE_ARM = "full"
SPLITS: tuple[str, ...] = ("train", "internal", "external")
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
MAIN_SPLITS: tuple[str, ...] = ("internal", "external")
SURVIVAL_COLUMNS: dict[str, tuple[str, str, str]] = {
    "os": ("os_risk", "os_time_days", "os_event"),
    "rfs": ("rfs_risk", "rfs_time_days", "rfs_event"),
}
"""Endpoint -> (prediction column, label time column, label event column)."""
MVI_COLUMNS: tuple[str, str] = ("mvi_prob", "mvi")
"""(prediction column, label column) of the MVI task."""
BOOTSTRAP_METRICS: tuple[str, ...] = ("os/c_index", "rfs/c_index", "mvi/auc")
"""Metrics with a paired patient bootstrap of the difference from the reference arm."""
_LOWER_IS_BETTER = ("brier", "loss", "error", "ece")
_METRIC_WORDS = {"c_index": "C-index", "f1": "F1", "auc": "AUC", "accuracy": "accuracy", "oracle_share": "oracle share"}

ROW_COLUMNS: tuple[str, ...] = (
    "split", "metric", "arm", "is_reference", "n_seeds", "n_failed", "n_pruned",
    "mean", "ci_low", "ci_high", "ci_note", "rank",
    "n_pairs", "diff_mean", "diff_ci_low", "diff_ci_high",
    "t_statistic", "t_p", "t_p_holm", "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_p_holm", "test_note",
    "boot_diff", "boot_ci_low", "boot_ci_high", "boot_n_patients", "boot_n_seeds", "boot_n_resamples", "boot_note",
    "oracle_share", "oracle_share_n",
)  # fmt: skip


class TableLogger(Protocol):
    """What :func:`write_ablation_table` needs from a tracker (e.g. ``hcc_exp.tracking``)."""

    def log_table(self, name: str, frame: pd.DataFrame) -> None: ...


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


# --------------------------------------------------------------------------- labels
def metric_label(metric: str) -> str:
    """``"os/c_index"`` -> ``"OS C-index"``, ``"os/auc_365d"`` -> ``"OS AUC 365d"``."""
    task, _, name = metric.partition("/")
    for key, word in _METRIC_WORDS.items():
        if name == key:
            return f"{task.upper()} {word}"
        if name.startswith(key + "_"):
            return f"{task.upper()} {word} {name[len(key) + 1:].replace('_', ' ')}"
    return f"{task.upper()} {name.replace('_', ' ')}"


def higher_is_better(metric: str) -> bool:
    name = metric.rpartition("/")[2]
    return not any(marker in name for marker in _LOWER_IS_BETTER)


def _is_c_index(metric: str) -> bool:
    task, _, name = metric.partition("/")
    return task in SURVIVAL_COLUMNS and name == "c_index"


def _has_bootstrap(metric: str) -> bool:
    return metric in BOOTSTRAP_METRICS


# --------------------------------------------------------------------------- bootstrap inputs
@dataclass(frozen=True)
class _SurvivalData:
    time: np.ndarray
    event: np.ndarray
    scores: dict[str, dict[int, np.ndarray]]  # arm -> seed -> (patients,) risk

    @property
    def n_patients(self) -> int:
        return int(self.time.size)

    def paired_bootstrap(
        self, arm: np.ndarray, reference: np.ndarray, indices: np.ndarray, confidence: float
    ) -> PairedBootstrap:
        return pooled_paired_c_index_difference(self.time, self.event, arm, reference, indices, confidence)


@dataclass(frozen=True)
class _ClassificationData:
    labels: np.ndarray  # (patients,) 0 / 1
    scores: dict[str, dict[int, np.ndarray]]  # arm -> seed -> (patients,) probability

    @property
    def n_patients(self) -> int:
        return int(self.labels.size)

    def paired_bootstrap(
        self, arm: np.ndarray, reference: np.ndarray, indices: np.ndarray, confidence: float
    ) -> PairedBootstrap:
        return pooled_paired_auc_difference(self.labels, arm, reference, indices, confidence)


class _Loader:
    """Caches predictions and labels so each file is read once per table."""

    def __init__(self) -> None:
        self._predictions: dict[Path, pd.DataFrame] = {}
        self._labels: dict[Path, pd.DataFrame] = {}

    def predictions(self, run: RunRecord) -> pd.DataFrame:
        if run.run_dir not in self._predictions:
            self._predictions[run.run_dir] = read_predictions(run.run_dir)
        return self._predictions[run.run_dir]

    def labels(self, run: RunRecord) -> pd.DataFrame:
        cache_dir = run.cache_dir
        if cache_dir is None:
            raise RunFolderError(f"{run.run_dir}/meta.json names no cache_dir, so its labels are unknown")
        if cache_dir not in self._labels:
            self._labels[cache_dir] = read_labels(cache_dir)
        return self._labels[cache_dir]

    def survival(self, runs: Sequence[RunRecord], split: str, task: str) -> _SurvivalData:
        """Labels and risks of the patients of ``split`` present with a finite risk in every run.

        Raises:
            RunFolderError: a file is missing, or two runs' caches disagree on a patient's outcome.
        """
        risk_column, time_column, event_column = SURVIVAL_COLUMNS[task]
        labels, risks = self._aligned(runs, split, risk_column, (time_column, event_column), task.upper())
        return _SurvivalData(
            time=labels[time_column].to_numpy(float),
            event=labels[event_column].to_numpy(float).astype(bool),
            scores=risks,
        )

    def classification(self, runs: Sequence[RunRecord], split: str) -> _ClassificationData:
        """MVI labels and predicted probabilities of the patients of ``split`` present in every run."""
        labels, scores = self._aligned(runs, split, MVI_COLUMNS[0], (MVI_COLUMNS[1],), "MVI")
        return _ClassificationData(labels=labels[MVI_COLUMNS[1]].to_numpy(float).astype(int), scores=scores)

    def _aligned(
        self, runs: Sequence[RunRecord], split: str, score_column: str, label_columns: tuple[str, ...], what: str
    ) -> tuple[pd.DataFrame, dict[str, dict[int, np.ndarray]]]:
        """Labels (one row per patient) and per-arm, per-seed scores on the patients shared by every run."""
        per_run: list[pd.Series] = []
        for run in runs:
            frame = self.predictions(run)
            if score_column not in frame.columns:
                raise RunFolderError(f"{run.run_dir}/predictions.csv has no column {score_column}")
            rows = frame[frame["split"] == split]
            per_run.append(pd.Series(rows[score_column].to_numpy(float), index=rows["patient_id"].astype(str)))
        patients = sorted(set.intersection(*(set(s[np.isfinite(s.to_numpy())].index) for s in per_run)))
        if not patients:
            raise RunFolderError(f"no {split} patient has a finite {score_column} in every run")

        reference_labels: pd.DataFrame | None = None
        for run in runs:
            labels = self.labels(run)
            missing = [c for c in label_columns if c not in labels.columns]
            if missing:
                raise RunFolderError(f"labels of {run.cache_dir} lack column(s) {missing}")
            table = labels.drop_duplicates("patient_id").set_index("patient_id")
            absent = [p for p in patients if p not in table.index]
            if absent:
                raise RunFolderError(f"labels of {run.cache_dir} lack patient(s) {absent[:5]} predicted by {run.run_dir}")
            outcome = table.loc[patients, list(label_columns)].astype(float)
            if reference_labels is None:
                reference_labels = outcome
            elif not np.allclose(outcome.to_numpy(), reference_labels.to_numpy()):
                differing = outcome.index[(outcome != reference_labels).any(axis=1)].tolist()
                raise RunFolderError(
                    f"runs disagree on {what} labels (cache {run.cache_dir}, patient(s) {differing[:5]}): "
                    "arms must be compared on the same cohort"
                )
        if reference_labels is None:
            raise RunFolderError(f"no run to read {split} {what} labels from")
        scores: dict[str, dict[int, np.ndarray]] = {}
        for run, series in zip(runs, per_run, strict=True):
            scores.setdefault(run.arm, {})[run.seed] = series.loc[patients].to_numpy(float)
        return reference_labels, scores


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
        if any(f"{split}/{metric}" in run.metrics for run in sweep.runs)
    ]
    absent = [m for m in metrics if not any(m == p[1] for p in present)]
    if absent:
        notes.append("metric(s) reported by no run: " + ", ".join(absent))

    loader = _Loader()
    rows: list[dict[str, Any]] = []
    with Progress(transient=True, disable=not progress) as bar:
        task_id = bar.add_task("ablation table", total=len(present))
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
    loader: _Loader,
    *,
    n_bootstrap: int,
    seed: int,
    confidence: float,
    notes: list[str],
) -> list[dict[str, Any]]:
    key = f"{split}/{metric}"
    task = metric.partition("/")[0]
    reference_values = _seed_values(runs_by_arm.get(reference_arm, []), key)
    oracle_key = f"{split}/{task}/oracle_share"

    data: _SurvivalData | _ClassificationData | None = None
    indices: np.ndarray | None = None
    bootstrap_reason = f"not applicable: patient bootstrap is for {', '.join(BOOTSTRAP_METRICS)}"
    if _has_bootstrap(metric):
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


# --------------------------------------------------------------------------- formatting
def format_number(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number with ``digits`` decimals, or an en dash for nan/None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "–"
    return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"


def format_interval(value: Any, low: Any, high: Any, digits: int = 3, signed: bool = False) -> str:
    """``"0.812 [0.790, 0.834]"``; the bracket is omitted when the interval is not estimable."""
    text = format_number(value, digits, signed)
    if format_number(low) == "–" or format_number(high) == "–":
        return text
    return f"{text} [{format_number(low, digits, signed)}, {format_number(high, digits, signed)}]"


def format_p(value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


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
    return list(dict.fromkeys(m.partition("/")[0] for m in of_split["metric"]))


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
                cells.append("–")
                continue
            r = hit.iloc[0]
            rank = "" if pd.isna(r["rank"]) else f" #{int(r['rank'])}"
            cells.append(format_interval(r["mean"], r["ci_low"], r["ci_high"]) + rank)
        for task in oracle_tasks:
            hit = of_arm[(of_arm["metric"].str.startswith(task + "/")) & of_arm["oracle_share"].notna()]
            cells.append(format_number(hit.iloc[0]["oracle_share"]) if not hit.empty else "–")
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
                    if _has_bootstrap(metric) else "",
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
            both = _has_bootstrap(metric)
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
    if any(_has_bootstrap(m) for m in metrics):
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
                    cells.append(Text("–"))
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
