"""``hcc-exp evaluate RUN_DIR``: every statistic the paper reports, for every split and task.

:func:`evaluate_predictions` takes a predictions table and the labels, computes
(with the pure modules of this package) and writes into ``out_dir``::

    metrics.json        flat "<split>/<task>/<metric>" floats (only statistics that could be computed)
    reasons.json        "<split>/<task>/<metric>" -> why it could not be computed
    tables/             table_a_mvi, table_b_survival, table_4_baselines (.csv and .md),
                        calibration_<os|rfs>.csv, reliability_mvi.csv, dca_<os|rfs|mvi>.csv
    figures/            km_<os|rfs>.png, roc_<os|rfs|mvi>.png, calibration_<os|rfs>.png,
                        reliability_mvi.png, dca_<os|rfs|mvi>.png

:func:`evaluate_run` reads a run folder (``predictions.csv``, ``meta.json``), the
labels from the preprocessed cache and, for synthetic cohorts, the oracle, and
writes ``RUN_DIR/evaluation/``.

Conventions: ``os_risk`` / ``rfs_risk`` are Cox linear predictors (log relative
hazard, higher = worse); everything fitted (Youden threshold, median risk cut,
Breslow baseline hazard, IPCW censoring distribution) is fitted on the training
split and applied unchanged to the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hcc_exp.config import EvaluationConfig, build_config
from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.data.contract import ORACLE_CSV
from hcc_exp.errors import ConfigError, RunFolderError
from hcc_exp.evaluation import plots
from hcc_exp.evaluation.baselines import (
    BASELINES,
    BaselineComparison,
    compare_with_baselines,
    encode_baselines,
)
from hcc_exp.evaluation.classification import BinaryMetrics, binary_metrics, roc_points, youden_threshold
from hcc_exp.evaluation.common import ENDPOINT_TITLES, SPLIT_TITLES, SPLITS, NotEstimable
from hcc_exp.evaluation.concordance import (
    CIndexBootstrap,
    TorchsurvCIndex,
    bootstrap_c_index,
    bootstrap_indices,
    harrell_c_index,
    torchsurv_c_index,
)
from hcc_exp.evaluation.decision_curves import (
    BINARY_THRESHOLDS,
    SURVIVAL_THRESHOLDS,
    binary_decision_curve,
    survival_decision_curve,
)
from hcc_exp.evaluation.risk_groups import RiskGroupComparison, compare_risk_groups
from hcc_exp.evaluation.risk_model import fit_endpoint_risk_model
from hcc_exp.evaluation.survival import (
    BreslowBaseline,
    TimeDependentAUC,
    calibration_by_risk_group,
    kaplan_meier_event_probability,
    mvi_reliability,
    time_dependent_auc,
    time_dependent_roc,
)
from hcc_exp.run_folder import RunFolder, resolve_recorded_path

ENDPOINTS: tuple[str, ...] = ("os", "rfs")
TIME_COLUMN = {"os": "os_time_days", "rfs": "rfs_time_days"}
EVENT_COLUMN = {"os": "os_event", "rfs": "rfs_event"}
RISK_COLUMN = {"os": "os_risk", "rfs": "rfs_risk"}
PREDICTION_COLUMNS: tuple[str, ...] = ("patient_id", "split", "os_risk", "rfs_risk", "mvi_prob")
LABEL_COLUMNS: tuple[str, ...] = ("patient_id", "split", *TIME_COLUMN.values(), *EVENT_COLUMN.values(), "mvi")
ORACLE_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "os_linear_predictor",
    "rfs_linear_predictor",
    "mvi_probability",
)
ORACLE_RISK = {"os": "os_linear_predictor", "rfs": "rfs_linear_predictor"}
NOT_ESTIMABLE = "n/e"


# --------------------------------------------------------------------------- collecting numbers and reasons
class _Record:
    """Flat metrics plus, for every metric that could not be computed, the reason."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    def put(self, key: str, value: float | int, reason: str | None = None) -> None:
        value = float(value)
        if math.isfinite(value):
            self.metrics[key] = value
        else:
            self.reasons[key] = reason or "not finite"

    def miss(self, keys: list[str] | str, reason: str) -> None:
        for key in [keys] if isinstance(keys, str) else keys:
            self.reasons[key] = reason

    def text(self, key: str, digits: int = 3) -> str:
        """A table cell: the value, or "n/e (reason)"."""
        if key in self.metrics:
            return f"{self.metrics[key]:.{digits}f}"
        return f"{NOT_ESTIMABLE} ({self.reasons.get(key, 'not computed')})"

    def interval(self, key: str, low: str, high: str, digits: int = 3) -> str:
        if key not in self.metrics:
            return self.text(key, digits)
        cell = f"{self.metrics[key]:.{digits}f}"
        if low in self.metrics and high in self.metrics:
            lo, hi = self.metrics[low], self.metrics[high]
            sep = " to " if min(lo, hi) < 0 else "-"  # "-0.05-0.10" would read as a range of negatives
            cell += f" ({lo:.{digits}f}{sep}{hi:.{digits}f})"
        return cell

    def p_value(self, key: str) -> str:
        if key not in self.metrics:
            return self.text(key)
        p = self.metrics[key]
        return "< 0.001" if p < 0.001 else f"{p:.3f}"


# --------------------------------------------------------------------------- inputs
def merge_predictions(
    predictions: pd.DataFrame, labels: pd.DataFrame, source: str = "predictions"
) -> pd.DataFrame:
    """Join predictions with labels on ``patient_id`` (one row per predicted patient).

    Raises:
        RunFolderError: a column is missing, a patient is duplicated, unknown to the labels,
            in a different split there, or has a missing / non-finite prediction.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise RunFolderError(f"{source}: missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)}")
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise RunFolderError(f"labels: missing column(s) {missing}")
    preds = predictions.copy()
    preds["patient_id"] = preds["patient_id"].astype(str)
    labs = labels.copy()
    labs["patient_id"] = labs["patient_id"].astype(str)
    duplicated = preds["patient_id"][preds["patient_id"].duplicated()].tolist()
    if duplicated:
        raise RunFolderError(f"{source}: patient(s) {duplicated[:5]} appear more than once")
    unknown = sorted(set(preds["patient_id"]) - set(labs["patient_id"]))
    if unknown:
        raise RunFolderError(f"{source}: patient(s) {unknown[:5]} are not in the labels")
    for column in ("os_risk", "rfs_risk", "mvi_prob"):
        values = pd.to_numeric(preds[column], errors="coerce")
        bad = preds["patient_id"][~np.isfinite(values.to_numpy(dtype=float))].tolist()
        if bad:
            raise RunFolderError(
                f"{source}: column '{column}' is missing or not a finite number for patient(s) {bad[:5]}"
            )
        preds[column] = values.astype(float)
    merged = preds.merge(labs.drop(columns=["split"]), on="patient_id", how="left", validate="one_to_one")
    label_split = labs.set_index("patient_id")["split"].astype(str)
    moved = merged["patient_id"][
        merged["split"].astype(str).to_numpy() != label_split.loc[merged["patient_id"]].to_numpy()
    ]
    if len(moved):
        raise RunFolderError(
            f"{source}: patient(s) {moved.tolist()[:5]} have a different split than in the labels"
        )
    unknown_split = sorted(set(merged["split"].astype(str)) - set(SPLITS))
    if unknown_split:
        raise RunFolderError(f"{source}: unknown split(s) {unknown_split}; expected {list(SPLITS)}")
    return merged


def oracle_metrics(oracle: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """The ground-truth risk's own C-index (OS, RFS) and MVI AUC per split, for "oracle share".

    Args:
        oracle: ``oracle.csv`` (``patient_id``, ``os_linear_predictor``, ``rfs_linear_predictor``,
            ``mvi_probability``; ``split`` is taken from the labels).
        labels: the cohort's labels.

    Returns:
        ``{"<split>/os/oracle_c_index", "<split>/rfs/oracle_c_index", "<split>/mvi/oracle_auc"}``
        for every split where the statistic is defined.
    """
    from sklearn.metrics import roc_auc_score

    missing = [c for c in ORACLE_COLUMNS if c not in oracle.columns]
    if missing:
        raise RunFolderError(f"{ORACLE_CSV}: missing column(s) {missing}")
    frame = oracle.assign(patient_id=oracle["patient_id"].astype(str)).drop(
        columns=["split"], errors="ignore"
    )
    frame = frame.merge(
        labels.assign(patient_id=labels["patient_id"].astype(str)), on="patient_id", how="inner"
    )
    out: dict[str, float] = {}
    for split in SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            continue
        for endpoint in ENDPOINTS:
            c = harrell_c_index(
                part[TIME_COLUMN[endpoint]], part[EVENT_COLUMN[endpoint]], part[ORACLE_RISK[endpoint]]
            )
            if not isinstance(c, NotEstimable):
                out[f"{split}/{endpoint}/oracle_c_index"] = c
        mvi = part["mvi"].to_numpy(dtype=float)
        if np.unique(mvi).size == 2:
            out[f"{split}/mvi/oracle_auc"] = float(
                roc_auc_score(mvi, part["mvi_probability"].to_numpy(dtype=float))
            )
    return out


ORACLE_SHARE_METRICS: tuple[tuple[str, str], ...] = (("os", "c_index"), ("rfs", "c_index"), ("mvi", "auc"))
"""(task, metric) pairs that have an oracle counterpart ``<split>/<task>/oracle_<metric>``."""


def oracle_shares(metrics: dict[str, float], oracle: dict[str, float]) -> dict[str, float]:
    """``<split>/<task>/oracle_share = (model - 0.5) / (oracle - 0.5)`` wherever both are known.

    Args:
        metrics: flat run metrics (``internal/os/c_index``, ...).
        oracle: :func:`oracle_metrics` of the same cohort.

    Returns:
        The shares that are defined (finite model value, oracle above 0.5).
    """
    out: dict[str, float] = {}
    for split in SPLITS:
        for task, metric in ORACLE_SHARE_METRICS:
            model = metrics.get(f"{split}/{task}/{metric}")
            reference = oracle.get(f"{split}/{task}/oracle_{metric}")
            if model is None or reference is None or not np.isfinite(model) or reference <= 0.5:
                continue
            out[f"{split}/{task}/oracle_share"] = (float(model) - 0.5) / (reference - 0.5)
    return out


def run_oracle(run_dir: Path, meta: dict) -> dict[str, float] | None:
    """:func:`oracle_metrics` of a run's cohort, or None when it has no ``oracle.csv`` (a real cohort).

    Args:
        run_dir: the run folder (relative paths in ``meta`` are resolved from it).
        meta: its ``meta.json`` (``cohort_dir``, ``cache_dir``).
    """
    if not meta.get("cohort_dir") or not meta.get("cache_dir"):
        return None
    oracle_path = resolve_recorded_path(str(meta["cohort_dir"]), run_dir) / ORACLE_CSV
    if not oracle_path.is_file():
        return None
    labels = PreprocessedCohort.open(resolve_recorded_path(str(meta["cache_dir"]), run_dir)).labels
    return oracle_metrics(pd.read_csv(oracle_path, dtype={"patient_id": str}), labels)


# --------------------------------------------------------------------------- per endpoint
def _seeded(cfg: EvaluationConfig, *stream: int) -> np.random.Generator:
    """Independent, order-free generator per (split, task): the same split gives the same resamples."""
    return np.random.default_rng([cfg.seed, *stream])


def _n_groups(n: int) -> int:
    return int(np.clip(n // 15, 2, 5))


def _evaluate_endpoint(
    data: pd.DataFrame,
    endpoint: str,
    cfg: EvaluationConfig,
    record: _Record,
    dca_thresholds: tuple[float, ...],
) -> dict[str, Any]:
    """All survival statistics of one endpoint; fills ``record`` and returns the artefacts for figures/tables."""
    horizons = [float(h) for h in cfg.horizons_days]
    t_col, e_col, r_col = TIME_COLUMN[endpoint], EVENT_COLUMN[endpoint], RISK_COLUMN[endpoint]
    train = data[data["split"] == "train"]
    artefacts: dict[str, Any] = {"roc": {}, "calibration": {}, "dca": {}, "km": {}, "baselines": {}}

    if train.empty:
        breslow: BreslowBaseline | NotEstimable = NotEstimable("no training split")
        cut: float | NotEstimable = NotEstimable("no training split: no median risk cut")
    else:
        fitted = fit_endpoint_risk_model(train[r_col], train[t_col], train[e_col])  # the run's risk model
        breslow, cut = fitted.breslow, fitted.cutoff
        record.put(f"train/{endpoint}/risk_cut", cut)

    for s_index, split in enumerate(SPLITS):
        part = data[data["split"] == split]
        prefix = f"{split}/{endpoint}"
        if part.empty:
            record.miss(f"{prefix}/c_index", f"no {split} patients")
            continue
        time, event, risk = (
            part[t_col].to_numpy(float),
            part[e_col].to_numpy(float),
            part[r_col].to_numpy(float),
        )
        record.put(f"{prefix}/n", len(part))
        record.put(f"{prefix}/events", event.sum())
        rng = _seeded(cfg, s_index, ENDPOINTS.index(endpoint))
        indices = bootstrap_indices(len(part), cfg.bootstrap_resamples, rng)

        # C-index: ours with the vectorised bootstrap, torchsurv's with its own CI beside it
        c_keys = [f"{prefix}/c_index", f"{prefix}/c_index_ci_low", f"{prefix}/c_index_ci_high"]
        boot = bootstrap_c_index(time, event, risk, indices=indices)
        if isinstance(boot, CIndexBootstrap):
            record.put(c_keys[0], boot.estimate)
            record.put(c_keys[1], boot.ci_low, "no resample with a comparable pair")
            record.put(c_keys[2], boot.ci_high, "no resample with a comparable pair")
            record.put(f"{prefix}/c_index_valid_resamples", boot.n_valid)
        else:
            record.miss(c_keys, boot.reason)
        ts_keys = [
            f"{prefix}/c_index_torchsurv",
            f"{prefix}/c_index_torchsurv_ci_low",
            f"{prefix}/c_index_torchsurv_ci_high",
        ]
        ts = torchsurv_c_index(time, event, risk)
        if isinstance(ts, TorchsurvCIndex):
            for key, value in zip(ts_keys, (ts.estimate, ts.ci_low, ts.ci_high), strict=True):
                record.put(key, value, "torchsurv returned a non-finite value")
        else:
            record.miss(ts_keys, ts.reason)

        # time-dependent AUC / ROC (IPCW from the training split)
        artefacts["roc"][split] = {}
        for horizon in horizons:
            key = f"{prefix}/auc_{horizon:g}d"
            if train.empty:
                record.miss(key, "no training split for the censoring weights")
                artefacts["roc"][split][horizon] = NotEstimable("no training split")
                continue
            auc = time_dependent_auc(train[t_col], train[e_col], time, event, risk, horizon)
            if isinstance(auc, TimeDependentAUC):
                record.put(key, auc.auc)
            else:
                record.miss(key, auc.reason)
            artefacts["roc"][split][horizon] = time_dependent_roc(
                train[t_col], train[e_col], time, event, risk, horizon
            )

        # absolute risk (Breslow from training) -> calibration and decision curves
        artefacts["calibration"][split] = {}
        artefacts["dca"][split] = {}
        for horizon in horizons:
            label = plots.horizon_label(horizon)
            pred_key, obs_key = f"{prefix}/cal_predicted_{horizon:g}d", f"{prefix}/cal_observed_{horizon:g}d"
            observed = kaplan_meier_event_probability(time, event, horizon)
            if isinstance(observed, NotEstimable):
                record.miss(obs_key, observed.reason)
            else:
                record.put(obs_key, observed[0])
            if isinstance(breslow, NotEstimable):
                predicted = breslow
            elif horizon > breslow.max_time:
                predicted = NotEstimable(f"horizon beyond the training follow-up ({breslow.max_time:g} d)")
            else:
                predicted = breslow.event_probability(risk, [horizon])[:, 0]
            if isinstance(predicted, NotEstimable):
                record.miss(pred_key, predicted.reason)
                artefacts["calibration"][split][horizon] = predicted
                artefacts["dca"][split][label] = predicted
                continue
            record.put(pred_key, float(np.mean(predicted)))
            artefacts["calibration"][split][horizon] = calibration_by_risk_group(
                predicted, time, event, horizon, _n_groups(len(part))
            )
            artefacts["dca"][split][label] = survival_decision_curve(
                time, event, predicted, horizon, dca_thresholds
            )

        # risk groups at the training median, 5-year window
        hr_keys = [f"{prefix}/{k}" for k in ("hr", "hr_ci_low", "hr_ci_high", "hr_p", "logrank_p")]
        if isinstance(cut, NotEstimable):
            groups: RiskGroupComparison | NotEstimable = cut
        else:
            groups = compare_risk_groups(time, event, risk, cut, cfg.km_truncate_days)
        artefacts["km"][split] = groups
        if isinstance(groups, RiskGroupComparison):
            hr_reason = groups.reasons.get("hr", "")
            record.put(hr_keys[0], groups.hr, hr_reason)
            record.put(hr_keys[1], groups.hr_ci_low, hr_reason)
            record.put(hr_keys[2], groups.hr_ci_high, hr_reason)
            record.put(hr_keys[3], groups.hr_p, hr_reason)
            record.put(hr_keys[4], groups.logrank_p)
            record.put(f"{prefix}/n_high_risk", groups.n_high)
            record.put(f"{prefix}/n_low_risk", groups.n_low)
        else:
            record.miss(hr_keys, groups.reason)

        # clinical baselines, paired on the same resamples as the model's interval
        comparisons = compare_with_baselines(
            time,
            event,
            risk,
            encode_baselines(part),
            indices,
            _seeded(cfg, s_index, ENDPOINTS.index(endpoint), 1),
        )
        artefacts["baselines"][split] = comparisons
        for key, comparison in comparisons.items():
            b = f"{prefix}/baseline/{key}"
            names = [
                "c_index",
                "c_index_ci_low",
                "c_index_ci_high",
                "model_c_index",
                "diff",
                "diff_ci_low",
                "diff_ci_high",
                "diff_p",
            ]
            if isinstance(comparison, BaselineComparison):
                res = comparison.result
                values = [
                    res.baseline.estimate,
                    res.baseline.ci_low,
                    res.baseline.ci_high,
                    res.model.estimate,
                    res.estimate,
                    res.ci_low,
                    res.ci_high,
                    res.p_value,
                ]
                for name, value in zip(names, values, strict=True):
                    record.put(f"{b}/{name}", value, "no resample with a comparable pair")
                record.put(f"{b}/n", comparison.n)
            else:
                record.miss([f"{b}/{n}" for n in names], comparison.reason)
    return artefacts


def _evaluate_mvi(data: pd.DataFrame, record: _Record, dca_thresholds: tuple[float, ...]) -> dict[str, Any]:
    train = data[data["split"] == "train"]
    artefacts: dict[str, Any] = {"metrics": {}, "roc": {}, "reliability": {}, "dca": {}}
    names = ["f1", "accuracy", "sensitivity", "specificity", "precision", "auc", "brier"]
    threshold = (
        NotEstimable("no training split: Youden threshold undefined")
        if train.empty
        else youden_threshold(train["mvi"], train["mvi_prob"])
    )
    if not isinstance(threshold, NotEstimable):
        record.put("train/mvi/threshold", threshold)
    for split in SPLITS:
        part = data[data["split"] == split]
        prefix = f"{split}/mvi"
        if part.empty:
            record.miss(f"{prefix}/f1", f"no {split} patients")
            continue
        known = part[np.isfinite(part["mvi"].to_numpy(dtype=float))]
        y, prob = known["mvi"].to_numpy(dtype=float), known["mvi_prob"].to_numpy(dtype=float)
        record.put(f"{prefix}/n", len(known))
        if isinstance(threshold, NotEstimable):
            record.miss([f"{prefix}/{n}" for n in names], threshold.reason)
            metrics: BinaryMetrics | NotEstimable = threshold
        else:
            metrics = binary_metrics(y, prob, threshold)
            for name in names:
                record.put(f"{prefix}/{name}", getattr(metrics, name), metrics.reasons.get(name))
            for cell in ("tp", "fp", "fn", "tn", "n_positive"):
                record.put(f"{prefix}/{cell}", getattr(metrics, cell))
        artefacts["metrics"][split] = metrics
        artefacts["roc"][split] = roc_points(y, prob)
        artefacts["reliability"][split] = mvi_reliability(y, prob, _n_groups(len(known)))
        artefacts["dca"][split] = {"MVI": binary_decision_curve(y, prob, dca_thresholds)}
    return artefacts


def _add_oracle(record: _Record, oracle: dict[str, float]) -> None:
    for key, value in oracle.items():
        record.put(key, value)
    for split in SPLITS:
        for task, metric in (("os", "c_index"), ("rfs", "c_index"), ("mvi", "auc")):
            oracle_key, model_key = f"{split}/{task}/oracle_{metric}", f"{split}/{task}/{metric}"
            share_key = f"{split}/{task}/oracle_share"
            if oracle_key not in record.metrics:
                continue
            if model_key not in record.metrics:
                record.miss(share_key, f"model {metric} not estimable")
            elif record.metrics[oracle_key] <= 0.5:
                record.miss(share_key, f"oracle {metric} <= 0.5")
            else:
                record.put(share_key, (record.metrics[model_key] - 0.5) / (record.metrics[oracle_key] - 0.5))


# --------------------------------------------------------------------------- tables
def _markdown(frame: pd.DataFrame) -> str:
    cells = [[str(c) for c in frame.columns]] + [
        [str(v) for v in row] for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines) + "\n"


def _write_table(frame: pd.DataFrame, folder: Path, name: str, title: str, extra_md: str = "") -> None:
    frame.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.md").write_text(f"## {title}\n\n{_markdown(frame)}{extra_md}", encoding="utf-8")


def _table_mvi(record: _Record) -> pd.DataFrame:
    rows = []
    for split in SPLITS:
        p = f"{split}/mvi"
        if f"{p}/n" not in record.metrics:
            continue
        rows.append(
            {
                "Cohort": SPLIT_TITLES[split],
                "n": int(record.metrics[f"{p}/n"]),
                "MVI+": record.text(f"{p}/n_positive", 0),
                "Threshold (Youden, training)": record.text("train/mvi/threshold"),
                "AUC": record.text(f"{p}/auc"),
                "F1": record.text(f"{p}/f1"),
                "Accuracy": record.text(f"{p}/accuracy"),
                "Sensitivity": record.text(f"{p}/sensitivity"),
                "Specificity": record.text(f"{p}/specificity"),
                "Precision": record.text(f"{p}/precision"),
                "Brier": record.text(f"{p}/brier"),
                "TP/FP/FN/TN": "/".join(record.text(f"{p}/{c}", 0) for c in ("tp", "fp", "fn", "tn")),
            }
        )
    return pd.DataFrame(rows)


def _table_survival(record: _Record, horizons: list[float]) -> pd.DataFrame:
    rows = []
    for split in SPLITS:
        for endpoint in ENDPOINTS:
            p = f"{split}/{endpoint}"
            if f"{p}/n" not in record.metrics:
                continue
            row = {
                "Cohort": SPLIT_TITLES[split],
                "Endpoint": endpoint.upper(),
                "n": int(record.metrics[f"{p}/n"]),
                "Events": int(record.metrics[f"{p}/events"]),
                "C-index (95% CI, bootstrap)": record.interval(
                    f"{p}/c_index", f"{p}/c_index_ci_low", f"{p}/c_index_ci_high"
                ),
                "C-index torchsurv (95% CI, Noether)": record.interval(
                    f"{p}/c_index_torchsurv",
                    f"{p}/c_index_torchsurv_ci_low",
                    f"{p}/c_index_torchsurv_ci_high",
                ),
            }
            for h in horizons:
                row[f"AUC {plots.horizon_label(h)}"] = record.text(f"{p}/auc_{h:g}d")
            row["HR high vs low (95% CI)"] = record.interval(f"{p}/hr", f"{p}/hr_ci_low", f"{p}/hr_ci_high")
            row["HR P"] = record.p_value(f"{p}/hr_p")
            row["Log-rank P"] = record.p_value(f"{p}/logrank_p")
            rows.append(row)
    return pd.DataFrame(rows)


def _table_baselines(record: _Record) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Long CSV table plus two Markdown pivots (C-index, and model - baseline)."""
    long_rows, c_rows, d_rows = [], [], []
    predictors = [("model", "DL model")] + [(k, BASELINES[k][1]) for k in BASELINES]
    for key, name in predictors:
        c_row, d_row = {"Predictor": name}, {"Predictor": name}
        for split in SPLITS:
            for endpoint in ENDPOINTS:
                p = f"{split}/{endpoint}"
                if f"{p}/n" not in record.metrics:
                    continue
                column = f"{SPLIT_TITLES[split]} {endpoint.upper()}"
                if key == "model":
                    c_row[column] = record.interval(
                        f"{p}/c_index", f"{p}/c_index_ci_low", f"{p}/c_index_ci_high"
                    )
                    d_row[column] = "reference"
                    long_rows.append(
                        {
                            "predictor": key,
                            "cohort": split,
                            "endpoint": endpoint,
                            "n": record.metrics.get(f"{p}/n"),
                            **{
                                m: record.metrics.get(f"{p}/{m}")
                                for m in ("c_index", "c_index_ci_low", "c_index_ci_high")
                            },
                            "reason": record.reasons.get(f"{p}/c_index", ""),
                        }
                    )
                    continue
                b = f"{p}/baseline/{key}"
                c_row[column] = record.interval(f"{b}/c_index", f"{b}/c_index_ci_low", f"{b}/c_index_ci_high")
                d_row[column] = record.interval(f"{b}/diff", f"{b}/diff_ci_low", f"{b}/diff_ci_high")
                if f"{b}/diff_p" in record.metrics:
                    d_row[column] += f", P {record.p_value(f'{b}/diff_p')}"
                long_rows.append(
                    {
                        "predictor": key,
                        "cohort": split,
                        "endpoint": endpoint,
                        "n": record.metrics.get(f"{b}/n"),
                        **{
                            m: record.metrics.get(f"{b}/{m}")
                            for m in (
                                "c_index",
                                "c_index_ci_low",
                                "c_index_ci_high",
                                "model_c_index",
                                "diff",
                                "diff_ci_low",
                                "diff_ci_high",
                                "diff_p",
                            )
                        },
                        "reason": record.reasons.get(f"{b}/c_index", ""),
                    }
                )
        c_rows.append(c_row)
        d_rows.append(d_row)
    return pd.DataFrame(long_rows), pd.DataFrame(c_rows), pd.DataFrame(d_rows[1:])


def _long_frame(nested: dict[str, dict[Any, Any]], key_name: str) -> pd.DataFrame:
    frames = []
    for split, per_key in nested.items():
        for key, value in per_key.items():
            if isinstance(value, pd.DataFrame):
                frames.append(value.assign(split=split, **{key_name: key}))
            else:
                frames.append(pd.DataFrame({"split": [split], key_name: [key], "reason": [value.reason]}))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame[["split", key_name, *[c for c in frame.columns if c not in ("split", key_name)]]]


# --------------------------------------------------------------------------- entry points
def evaluate_predictions(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    cfg: EvaluationConfig,
    out_dir: Path,
    oracle: dict[str, float] | None = None,
    *,
    dca_thresholds: tuple[float, ...] | None = None,
    figures: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float | str]:
    """Compute and write every table, figure and metric of the paper's evaluation.

    Args:
        predictions: ``patient_id, split, os_risk, rfs_risk, mvi_prob`` (one row per patient).
        labels: ``labels.csv`` rows (outcomes and clinical columns).
        cfg: horizons, bootstrap resamples, KM truncation, seed.
        out_dir: folder written (created): ``metrics.json``, ``reasons.json``, ``tables/``, ``figures/``.
        oracle: optional ``"<split>/<task>/oracle_c_index"`` / ``"<split>/mvi/oracle_auc"``
            values (:func:`oracle_metrics`); adds ``oracle_share = (model - 0.5) / (oracle - 0.5)``.
        dca_thresholds: threshold probabilities of every decision curve; default
            :data:`SURVIVAL_THRESHOLDS` (0-0.95 by 0.05: survival DCA in dcurves costs lifelines
            Kaplan-Meier fits per threshold) and :data:`BINARY_THRESHOLDS` (0-0.99 by 0.01) for MVI.
        figures: write the PNGs (False: numbers and tables only, e.g. for many sweep runs).
        progress: optional callback told the name of each step as it starts.

    Returns:
        Every metric key: a float where computed, else the string ``"not estimable: <reason>"``.
    """
    out_dir = Path(out_dir)
    tables_dir, figures_dir = out_dir / "tables", out_dir / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    step = progress or (lambda _name: None)
    data = merge_predictions(predictions, labels)
    record = _Record()
    horizons = [float(h) for h in cfg.horizons_days]

    survival: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        step(f"{endpoint.upper()} statistics")
        survival[endpoint] = _evaluate_endpoint(
            data, endpoint, cfg, record, dca_thresholds or SURVIVAL_THRESHOLDS
        )
    step("MVI statistics")
    mvi = _evaluate_mvi(data, record, dca_thresholds or BINARY_THRESHOLDS)
    if oracle:
        _add_oracle(record, oracle)

    step("tables")
    _write_table(_table_mvi(record), tables_dir, "table_a_mvi", "Table A. MVI classification per cohort")
    _write_table(
        _table_survival(record, horizons),
        tables_dir,
        "table_b_survival",
        "Table B. C-index, time-dependent AUC and high- vs low-risk hazard ratio per cohort",
    )
    long_baselines, c_pivot, d_pivot = _table_baselines(record)
    long_baselines.to_csv(tables_dir / "table_4_baselines.csv", index=False)
    (tables_dir / "table_4_baselines.md").write_text(
        "## Table 4. C-index (95% CI) of the model and univariate clinical baselines\n\n"
        + _markdown(c_pivot)
        + "\n## Model minus baseline C-index (paired bootstrap 95% CI, P)\n\n"
        + _markdown(d_pivot)
    , encoding="utf-8")
    for endpoint in ENDPOINTS:
        _long_frame(survival[endpoint]["calibration"], "horizon_days").to_csv(
            tables_dir / f"calibration_{endpoint}.csv", index=False
        )
        _long_frame(survival[endpoint]["dca"], "outcome").to_csv(
            tables_dir / f"dca_{endpoint}.csv", index=False
        )
    _long_frame({s: {"MVI": v} for s, v in mvi["reliability"].items()}, "outcome").to_csv(
        tables_dir / "reliability_mvi.csv", index=False
    )
    _long_frame(mvi["dca"], "outcome").to_csv(tables_dir / "dca_mvi.csv", index=False)

    if figures:
        step("figures")
        _write_figures(survival, mvi, cfg, figures_dir)

    (out_dir / "metrics.json").write_text(json.dumps(dict(sorted(record.metrics.items())), indent=1), encoding="utf-8")
    (out_dir / "reasons.json").write_text(json.dumps(dict(sorted(record.reasons.items())), indent=1), encoding="utf-8")
    result: dict[str, float | str] = {k: f"not estimable: {v}" for k, v in record.reasons.items()}
    result.update(record.metrics)
    return dict(sorted(result.items()))


def _write_figures(
    survival: dict[str, dict[str, Any]], mvi: dict[str, Any], cfg: EvaluationConfig, figures_dir: Path
) -> None:
    for endpoint in ENDPOINTS:
        art = survival[endpoint]
        title = ENDPOINT_TITLES[endpoint]
        plots.plot_kaplan_meier(art["km"], endpoint, figures_dir / f"km_{endpoint}.png", cfg.km_truncate_days)
        plots.plot_time_dependent_roc(art["roc"], endpoint, figures_dir / f"roc_{endpoint}.png")
        plots.plot_survival_calibration(
            art["calibration"], endpoint, figures_dir / f"calibration_{endpoint}.png"
        )
        plots.plot_decision_curves(
            art["dca"], f"{title}: decision curves (event by horizon)", figures_dir / f"dca_{endpoint}.png"
        )
    plots.plot_binary_roc(mvi["roc"], figures_dir / "roc_mvi.png")
    plots.plot_reliability(mvi["reliability"], figures_dir / "reliability_mvi.png")
    plots.plot_decision_curves(
        mvi["dca"], "Microvascular invasion: decision curves", figures_dir / "dca_mvi.png"
    )


def _run_config(run_dir: Path) -> EvaluationConfig:
    config_path = RunFolder(run_dir).config_yaml
    if not config_path.is_file():
        return EvaluationConfig()
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        return build_config(raw, source=str(config_path)).evaluation
    except (yaml.YAMLError, ConfigError) as exc:
        raise RunFolderError(f"{config_path}: cannot read the run's config: {exc}") from exc


def evaluate_run(
    run_dir: Path,
    cfg: EvaluationConfig | None = None,
    *,
    dca_thresholds: tuple[float, ...] | None = None,
    show_progress: bool = True,
) -> dict[str, float | str]:
    """Evaluate a run folder and write ``RUN_DIR/evaluation/``.

    Args:
        run_dir: a run folder with ``predictions.csv`` and ``meta.json`` (``cache_dir``,
            optionally ``cohort_dir`` holding ``oracle.csv``).
        cfg: evaluation settings; default: the ``evaluation`` section of ``RUN_DIR/config.yaml``
            (or the defaults when the run has none).
        dca_thresholds: as :func:`evaluate_predictions`.
        show_progress: show a Rich spinner with the current step.

    Returns:
        As :func:`evaluate_predictions`.

    Raises:
        RunFolderError: a file is missing or malformed (named in the message).
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    run.require(run.meta_json, run.predictions_csv)
    meta = run.read_meta()
    cfg = cfg or _run_config(run_dir)
    cache = run.open_cache()
    labels = cache.labels
    predictions = run.read_predictions()
    oracle = run_oracle(run_dir, meta)
    out_dir = run.evaluation_dir
    # issue 16: subgroup / calibration-slope / Brier statistics, radiomics and combined baselines
    from hcc_exp.evaluation.extended import write_extended
    from hcc_exp.evaluation.risk_model import RiskModel

    risk_model = RiskModel.load(run.risk_model_json) if run.risk_model_json.is_file() else None
    if not show_progress:
        result = evaluate_predictions(predictions, labels, cfg, out_dir, oracle, dca_thresholds=dca_thresholds)
        return {**result, **write_extended(out_dir, predictions, labels, cache, risk_model, cfg)}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]evaluate[/bold] {task.description}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("loading", total=None)
        result = evaluate_predictions(
            predictions,
            labels,
            cfg,
            out_dir,
            oracle,
            dca_thresholds=dca_thresholds,
            progress=lambda name: bar.update(task, description=name),
        )
        extra = write_extended(
            out_dir, predictions, labels, cache, risk_model, cfg, progress=lambda name: bar.update(task, description=name)
        )
        return {**result, **extra}
