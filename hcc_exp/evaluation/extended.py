"""Publication statistics beyond the core evaluation: one step that ``evaluate`` calls.

:func:`extended_metrics` adds, for every split and task, under ``<split>/<task>/<metric>``
(:func:`hcc_exp.vocabulary.metric_key`):

* subgroup C-index with bootstrap CI by institution, sex and BCLC stage:
  ``subgroup_<variable>_<level>_c_index`` (+ ``_ci_low``, ``_ci_high``, ``_n``, ``_events``);
* calibration at each horizon (Crowson et al. 2016): ``calibration_intercept_<h>d``,
  ``calibration_slope_<h>d`` (+ ``_se``);
* Brier score at each horizon and integrated: ``brier_<h>d``, ``integrated_brier``;
* the radiomics baseline (:mod:`hcc_exp.evaluation.radiomics_baseline`; needs the cache) and
  the clinical / combined Cox models (:mod:`hcc_exp.evaluation.combined`), each scored like
  the network with a paired bootstrap of the difference: ``<predictor>_c_index`` /
  ``<predictor>_auc`` (+ CI), ``<predictor>_diff`` (network minus predictor, + CI, ``_diff_p``);
  ``train/<endpoint>/combined_lr_statistic`` and ``combined_lr_p`` (does the network add to
  BCLC + AFP?).

Survival probabilities come from the run's risk model (Breslow baselines fitted on the
training split) when given, else from a Breslow fit on the training predictions here.
Everything not estimable is a reason under the same key. Tables returned (name -> frame):
``table_3a_mvi_baselines``, ``table_3b_survival_baselines``, ``subgroups``,
``calibration_brier``, ``combined_model`` and, with a cache, ``radiomics_features``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from hcc_exp import document as doc
from hcc_exp.evaluation.combined import clinical_design, fit_combined_model
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.concordance import bootstrap_indices, paired_bootstrap_difference
from hcc_exp.evaluation.prognostic import brier_scores, calibration_at_horizon, subgroup_c_index
from hcc_exp.evaluation.survival import BreslowBaseline, fit_breslow
from hcc_exp.vocabulary import (
    ENDPOINTS,
    INSTITUTION,
    MVI,
    MVI_LABEL,
    MVI_PROBABILITY,
    PATIENT_ID,
    SPLIT,
    SPLIT_TITLES,
    SPLITS,
    TASK_TITLES,
    event_column,
    metric_key,
    risk_column,
    time_column,
)

SUBGROUP_VARIABLES: tuple[tuple[str, str], ...] = ((INSTITUTION, "institution"), ("sex", "sex"), ("bclc", "bclc"))
"""(labels column, metric-name fragment) of the subgroup analyses."""
PREDICTOR_TITLES: dict[str, str] = {
    "model": "DL model",
    "radiomics": "Radiomics (IBSI features, penalised)",
    "clinical_cox": "Clinical Cox (BCLC + AFP)",
    "combined": "Combined Cox (DL risk + BCLC + AFP)",
}
RNG_STREAM = 16
"""First entry of this module's seed sequence, so its resamples never coincide with evaluate's."""


class _Collector:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    def put(self, split: str, task: str, metric: str, value: float, reason: str = "not finite") -> None:
        key = metric_key(split, task, metric)
        if value is not None and math.isfinite(float(value)):
            self.metrics[key] = float(value)
        else:
            self.reasons[key] = reason

    def miss(self, split: str, task: str, metric: str, reason: str) -> None:
        self.reasons[metric_key(split, task, metric)] = reason

    def cell(self, split: str, task: str, metric: str, digits: int = 3) -> str:
        key = metric_key(split, task, metric)
        if key not in self.metrics:
            return f"n/e ({self.reasons.get(key, 'not computed')})"
        low, high = self.metrics.get(f"{key}_ci_low"), self.metrics.get(f"{key}_ci_high")
        text = f"{self.metrics[key]:.{digits}f}"
        if low is not None and high is not None:
            sep = " to " if min(low, high) < 0 else "-"
            text += f" ({low:.{digits}f}{sep}{high:.{digits}f})"
        return text


def _rng(cfg, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(cfg.seed), RNG_STREAM, *stream])


# --------------------------------------------------------------------------- paired AUC bootstrap
def bootstrap_auc_values(labels: np.ndarray, scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(B,) ROC AUC of each resample (rows of ``indices``), NaN where a resample has one class.

    Rank form of the Mann-Whitney statistic with mid-ranks for ties, equal to
    ``sklearn.metrics.roc_auc_score`` per resample.
    """
    y = np.asarray(labels, dtype=float)[indices]
    s = np.asarray(scores, dtype=float)[indices]
    ranks = rankdata(s, axis=1)
    n1 = y.sum(axis=1)
    n0 = y.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def _score_mvi(out: _Collector, split: str, name: str, y, model_prob, other_prob, indices) -> None:
    full = np.arange(len(y))[None, :]
    est_model, est_other = bootstrap_auc_values(y, model_prob, full)[0], bootstrap_auc_values(y, other_prob, full)[0]
    res_model, res_other = bootstrap_auc_values(y, model_prob, indices), bootstrap_auc_values(y, other_prob, indices)
    diff = res_model - res_other
    for metric, estimate, resamples in ((f"{name}_auc", est_other, res_other), ("model_auc_paired", est_model, res_model)):
        out.put(split, MVI, metric, estimate, "one class only")
        low, high = _interval(resamples)
        out.put(split, MVI, f"{metric}_ci_low", low, "no valid resample")
        out.put(split, MVI, f"{metric}_ci_high", high, "no valid resample")
    out.put(split, MVI, f"{name}_diff", est_model - est_other, "one class only")
    low, high = _interval(diff)
    out.put(split, MVI, f"{name}_diff_ci_low", low, "no valid resample")
    out.put(split, MVI, f"{name}_diff_ci_high", high, "no valid resample")
    valid = diff[np.isfinite(diff)]
    p = min(1.0, 2 * min(np.mean(valid <= 0), np.mean(valid >= 0))) if valid.size else math.nan
    out.put(split, MVI, f"{name}_diff_p", p, "no valid resample")


def _score_survival(out: _Collector, split: str, endpoint: str, name: str, part: pd.DataFrame, other, cfg, stream) -> None:
    model = part[risk_column(endpoint)].to_numpy(float)
    other = np.asarray(other, dtype=float)
    known = np.isfinite(other)
    if not known.any():
        out.miss(split, endpoint, f"{name}_c_index", "no patient with this predictor")
        return
    rng = _rng(cfg, *stream)
    n = int(known.sum())
    result = paired_bootstrap_difference(
        part[time_column(endpoint)].to_numpy(float)[known],
        part[event_column(endpoint)].to_numpy(float)[known],
        model[known],
        other[known],
        indices=bootstrap_indices(n, cfg.bootstrap_resamples, rng),
    )
    if isinstance(result, NotEstimable):
        out.miss(split, endpoint, f"{name}_c_index", result.reason)
        return
    out.put(split, endpoint, f"{name}_n", n)
    for metric, value in (
        (f"{name}_c_index", result.baseline.estimate),
        (f"{name}_c_index_ci_low", result.baseline.ci_low),
        (f"{name}_c_index_ci_high", result.baseline.ci_high),
        (f"{name}_diff", result.estimate),
        (f"{name}_diff_ci_low", result.ci_low),
        (f"{name}_diff_ci_high", result.ci_high),
        (f"{name}_diff_p", result.p_value),
    ):
        out.put(split, endpoint, metric, value)


# --------------------------------------------------------------------------- statistics of the network
def _baseline(risk_model, endpoint: str, train: pd.DataFrame) -> BreslowBaseline | NotEstimable:
    if risk_model is not None:
        part = risk_model.endpoint(endpoint)
        return part.baseline if part.baseline is not None else NotEstimable(part.reason or "no baseline hazard")
    if train.empty:
        return NotEstimable("no training split")
    return fit_breslow(train[risk_column(endpoint)], train[time_column(endpoint)], train[event_column(endpoint)])


def _network_statistics(data: pd.DataFrame, risk_model, cfg, out: _Collector) -> tuple[list[dict], list[dict]]:
    horizons = [int(h) for h in cfg.horizons_days]
    train = data[data[SPLIT] == "train"]
    subgroup_rows, calibration_rows = [], []
    for e_index, endpoint in enumerate(ENDPOINTS):
        t_col, e_col, r_col = time_column(endpoint), event_column(endpoint), risk_column(endpoint)
        baseline = _baseline(risk_model, endpoint, train)
        for s_index, split in enumerate(SPLITS):
            part = data[data[SPLIT] == split]
            if part.empty:
                out.miss(split, endpoint, "integrated_brier", f"no {split} patients")
                continue
            for v_index, (column, fragment) in enumerate(SUBGROUP_VARIABLES):
                if column not in part.columns:
                    continue
                groups = subgroup_c_index(
                    part[t_col], part[e_col], part[r_col], part[column].to_numpy(object),
                    rng=_rng(cfg, 1, e_index, s_index, v_index), n_resamples=cfg.bootstrap_resamples,
                )  # fmt: skip
                for g in groups:
                    stem = f"subgroup_{fragment}_{g.level}"
                    out.put(split, endpoint, f"{stem}_n", g.n)
                    out.put(split, endpoint, f"{stem}_events", g.events)
                    row = {"split": split, "endpoint": endpoint, "variable": fragment, "level": g.level,
                           "n": g.n, "events": g.events}  # fmt: skip
                    if isinstance(g.result, NotEstimable):
                        out.miss(split, endpoint, f"{stem}_c_index", g.result.reason)
                        row["reason"] = g.result.reason
                    else:
                        for suffix, value in (("", g.result.estimate), ("_ci_low", g.result.ci_low), ("_ci_high", g.result.ci_high)):
                            out.put(split, endpoint, f"{stem}_c_index{suffix}", value)
                            row[f"c_index{suffix}"] = value
                    subgroup_rows.append(row)
            if isinstance(baseline, NotEstimable):
                for h in horizons:
                    for name in (f"calibration_slope_{h}d", f"calibration_intercept_{h}d", f"brier_{h}d"):
                        out.miss(split, endpoint, name, baseline.reason)
                out.miss(split, endpoint, "integrated_brier", baseline.reason)
                continue
            for h in horizons:
                fit = calibration_at_horizon(part[t_col], part[e_col], part[r_col], baseline, float(h))
                row = {"split": split, "endpoint": endpoint, "horizon_days": h}
                if isinstance(fit, NotEstimable):
                    for name in (f"calibration_slope_{h}d", f"calibration_intercept_{h}d"):
                        out.miss(split, endpoint, name, fit.reason)
                    row["reason"] = fit.reason
                else:
                    out.put(split, endpoint, f"calibration_slope_{h}d", fit.slope)
                    out.put(split, endpoint, f"calibration_slope_{h}d_se", fit.slope_se)
                    out.put(split, endpoint, f"calibration_intercept_{h}d", fit.intercept)
                    row.update(slope=fit.slope, slope_se=fit.slope_se, intercept=fit.intercept,
                               observed=fit.observed, expected=fit.expected)  # fmt: skip
                calibration_rows.append(row)
            brier = brier_scores(train[t_col], train[e_col], part[t_col], part[e_col], part[r_col], baseline, horizons)
            if isinstance(brier, NotEstimable):
                for h in horizons:
                    out.miss(split, endpoint, f"brier_{h}d", brier.reason)
                out.miss(split, endpoint, "integrated_brier", brier.reason)
            else:
                for h, value in zip(horizons, brier.brier, strict=True):
                    out.put(split, endpoint, f"brier_{h}d", value)
                    for row in calibration_rows:
                        if (row["split"], row["endpoint"], row["horizon_days"]) == (split, endpoint, h):
                            row["brier"] = value
                out.put(split, endpoint, "integrated_brier", brier.integrated)
                calibration_rows.append({"split": split, "endpoint": endpoint, "horizon_days": "integrated",
                                         "brier": brier.integrated})  # fmt: skip
    return subgroup_rows, calibration_rows


# --------------------------------------------------------------------------- baselines
def _combined(data: pd.DataFrame, cfg, out: _Collector) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """Scores of the clinical and combined Cox models per endpoint (patient order of ``data``)."""
    design = clinical_design(data)
    scores: dict[str, pd.DataFrame] = {}
    rows = []
    train = (data[SPLIT] == "train").to_numpy()
    for endpoint in ENDPOINTS:
        risk = data[risk_column(endpoint)].to_numpy(float)
        model = fit_combined_model(
            risk[train], data[time_column(endpoint)].to_numpy(float)[train],
            data[event_column(endpoint)].to_numpy(float)[train], design[train],
        )  # fmt: skip
        if isinstance(model, NotEstimable):
            for name in ("combined_lr_statistic", "combined_c_index", "clinical_cox_c_index"):
                out.miss("train", endpoint, name, model.reason)
            rows.append({"endpoint": endpoint, "term": "", "reason": model.reason})
            continue
        out.put("train", endpoint, "combined_lr_statistic", model.lr_statistic)
        out.put("train", endpoint, "combined_lr_p", model.lr_p)
        out.put("train", endpoint, "combined_n", model.n_train)
        full = design.assign(network_risk=risk)
        scores[endpoint] = pd.DataFrame(
            {"combined": model.linear_predictor(full), "clinical_cox": model.linear_predictor(full, clinical_only=True)},
            index=data.index,
        )
        for term, beta in model.coefficients.items():
            rows.append({"endpoint": endpoint, "model": "combined", "term": term, "log_hr": beta, "hr": math.exp(beta)})
        for term, beta in model.clinical_coefficients.items():
            rows.append({"endpoint": endpoint, "model": "clinical", "term": term, "log_hr": beta, "hr": math.exp(beta)})
        rows.append({"endpoint": endpoint, "model": "combined vs clinical", "term": "likelihood ratio",
                     "lr_statistic": model.lr_statistic, "df": model.lr_df, "p": model.lr_p,
                     "n_train": model.n_train, "events_train": model.events_train})  # fmt: skip
    return scores, rows


def _radiomics(data: pd.DataFrame, labels: pd.DataFrame, cohort, cfg, out: _Collector, step):
    from hcc_exp.evaluation.radiomics_baseline import extract_cohort_features, fit_radiomics_models

    step("radiomics features")
    features = extract_cohort_features(cohort, data[PATIENT_ID].astype(str).tolist())
    step("radiomics models")
    models = fit_radiomics_models(features, labels, seed=int(cfg.seed))
    for key, value in models.details.items():
        task = next((t for t in (*ENDPOINTS, MVI) if key.startswith(f"{t}_")), None)
        if task is not None:
            out.put("train", task, f"radiomics_{key[len(task) + 1:]}", value)
    for endpoint in ENDPOINTS:
        if isinstance(models.cox.get(endpoint), str):
            for split in SPLITS:
                out.miss(split, endpoint, "radiomics_c_index", models.cox[endpoint])
    if isinstance(models.mvi, str):
        for split in SPLITS:
            out.miss(split, MVI, "radiomics_auc", models.mvi)
    predictions = models.predict(features).set_index(PATIENT_ID).reindex(data[PATIENT_ID].astype(str))
    return predictions.set_index(data.index), features


def _missing_volumes(cohort, patient_ids: list[str]) -> str | None:
    """Why radiomics cannot run (no cache, or a patient's volumes absent from it), else None."""
    if cohort is None:
        return "no preprocessed cache given"
    absent = [p for p in patient_ids if not (cohort.image_path(p).is_file() and cohort.masks_path(p).is_file())]
    if absent:
        return f"the cache {cohort.root} holds no volumes for {len(absent)} patient(s), e.g. {absent[0]}"
    return None


def extended_metrics(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    cohort=None,
    risk_model=None,
    config=None,
    *,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], dict[str, str], dict[str, pd.DataFrame]]:
    """Subgroup, calibration, Brier, radiomics and combined-model statistics (module docstring).

    Args:
        predictions: ``patient_id, split, os_risk, rfs_risk, mvi_prob``.
        labels: cache ``labels.csv`` rows (outcomes, institution, sex, BCLC, AFP).
        cohort: the run's :class:`~hcc_exp.data.cache.PreprocessedCohort` (radiomics), or None.
        risk_model: the run's risk model (``.endpoint(name).baseline``), or None.
        config: :class:`~hcc_exp.config.EvaluationConfig` (horizons, resamples, seed).

    Returns:
        ``(metrics, reasons, tables)``: flat metric keys -> float, keys -> reason, name -> table.
    """
    from hcc_exp.config import EvaluationConfig

    cfg = config or EvaluationConfig()
    step = progress or (lambda _name: None)
    label_frame = labels.assign(**{PATIENT_ID: labels[PATIENT_ID].astype(str)})
    pred = predictions.assign(**{PATIENT_ID: predictions[PATIENT_ID].astype(str)})
    data = pred.merge(label_frame.drop(columns=[SPLIT], errors="ignore"), on=PATIENT_ID, how="inner")
    data = data.reset_index(drop=True)
    out = _Collector()
    tables: dict[str, pd.DataFrame] = {}

    step("subgroups, calibration slope, Brier")
    subgroup_rows, calibration_rows = _network_statistics(data, risk_model, cfg, out)
    tables["subgroups"] = pd.DataFrame(subgroup_rows)
    tables["calibration_brier"] = pd.DataFrame(calibration_rows)

    step("combined model")
    survival_scores, combined_rows = _combined(data, cfg, out)
    tables["combined_model"] = pd.DataFrame(combined_rows)

    radiomics: pd.DataFrame | None = None
    missing = _missing_volumes(cohort, data[PATIENT_ID].astype(str).tolist())
    if missing:
        for split in SPLITS:
            for task in ENDPOINTS:
                out.miss(split, task, "radiomics_c_index", missing)
            out.miss(split, MVI, "radiomics_auc", missing)
    else:
        radiomics, features = _radiomics(data, label_frame, cohort, cfg, out, step)
        tables["radiomics_features"] = features

    step("baseline comparisons")
    for s_index, split in enumerate(SPLITS):
        rows = (data[SPLIT] == split).to_numpy()
        if not rows.any():
            continue
        part = data[rows]
        for e_index, endpoint in enumerate(ENDPOINTS):
            others: dict[str, np.ndarray] = {}
            if endpoint in survival_scores:
                others.update({k: v.to_numpy(float)[rows] for k, v in survival_scores[endpoint].items()})
            if radiomics is not None:
                others["radiomics"] = radiomics[risk_column(endpoint)].to_numpy(float)[rows]
            for p_index, (name, values) in enumerate(others.items()):
                if np.isnan(values).all() and name == "radiomics":
                    continue  # the reason is already recorded
                _score_survival(out, split, endpoint, name, part, values, cfg, (2, s_index, e_index, p_index))
        if radiomics is not None and not np.isnan(radiomics[MVI_PROBABILITY].to_numpy(float)).all():
            y = part[MVI_LABEL].to_numpy(float)
            known = np.isfinite(y) & np.isfinite(radiomics[MVI_PROBABILITY].to_numpy(float)[rows])
            if known.sum() >= 2:
                indices = bootstrap_indices(int(known.sum()), cfg.bootstrap_resamples, _rng(cfg, 3, s_index))
                _score_mvi(out, split, "radiomics", y[known], part[MVI_PROBABILITY].to_numpy(float)[known],
                           radiomics[MVI_PROBABILITY].to_numpy(float)[rows][known], indices)  # fmt: skip
    tables["table_3b_survival_baselines"] = _survival_table(out, data)
    tables["table_3a_mvi_baselines"] = _mvi_table(out, data)
    return dict(sorted(out.metrics.items())), dict(sorted(out.reasons.items())), tables


def _splits(data: pd.DataFrame) -> list[str]:
    return [s for s in SPLITS if s != "train" and (data[SPLIT] == s).any()]


def _survival_table(out: _Collector, data: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name in ("radiomics", "clinical_cox", "combined"):
        row: dict[str, Any] = {"Predictor": PREDICTOR_TITLES[name]}
        for split in _splits(data):
            for endpoint in ENDPOINTS:
                column = f"{SPLIT_TITLES[split]} {endpoint.upper()}"
                row[f"{column} C-index (95% CI)"] = out.cell(split, endpoint, f"{name}_c_index")
                if metric_key(split, endpoint, f"{name}_diff") not in out.metrics:
                    row[f"{column} DL minus predictor (95% CI)"] = ""  # the reason stands in the C-index cell
                    continue
                diff = out.cell(split, endpoint, f"{name}_diff")
                p = out.metrics.get(metric_key(split, endpoint, f"{name}_diff_p"))
                row[f"{column} DL minus predictor (95% CI)"] = diff + (f", P {_p(p)}" if p is not None else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _mvi_table(out: _Collector, data: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, metric in (("model", "model_auc_paired"), ("radiomics", "radiomics_auc")):
        row: dict[str, Any] = {"Predictor": PREDICTOR_TITLES[name]}
        for split in _splits(data):
            row[f"{SPLIT_TITLES[split]} {TASK_TITLES[MVI]} AUC (95% CI)"] = out.cell(split, MVI, metric)
            if name != "model":
                p = out.metrics.get(metric_key(split, MVI, f"{name}_diff_p"))
                row[f"{SPLIT_TITLES[split]} DL minus predictor (95% CI)"] = out.cell(split, MVI, f"{name}_diff") + (
                    f", P {_p(p)}" if p is not None else ""
                )
        rows.append(row)
    return pd.DataFrame(rows)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


TABLE_TITLES: dict[str, str] = {
    "table_3a_mvi_baselines": "Supplementary Table 3A (baselines). MVI AUC of the DL model and the radiomics baseline",
    "table_3b_survival_baselines": "Supplementary Table 3B (baselines). C-index of radiomics, clinical and combined Cox models",
    "subgroups": "Subgroup C-index (95% bootstrap CI) by institution, sex and BCLC stage",
    "calibration_brier": "Calibration intercept / slope (Crowson) and Brier score per horizon",
    "combined_model": "Combined Cox model: coefficients and likelihood-ratio test (training split)",
}


def write_extended(
    out_dir: Path | str,
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    cohort=None,
    risk_model=None,
    config=None,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run :func:`extended_metrics` and merge its output into an evaluation folder.

    Adds the keys to ``OUT_DIR/metrics.json`` / ``reasons.json`` (written by evaluate) and writes
    ``OUT_DIR/tables/<name>.csv`` (+ ``.md`` for the titled tables).

    Returns:
        The new keys as :func:`~hcc_exp.evaluation.evaluate.evaluate_predictions` returns them:
        a float where computed, else ``"not estimable: <reason>"``.
    """
    out_dir = Path(out_dir)
    metrics, reasons, tables = extended_metrics(predictions, labels, cohort, risk_model, config, progress=progress)
    for name, extra in (("metrics.json", metrics), ("reasons.json", reasons)):
        path = out_dir / name
        current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        current.update(extra)
        path.write_text(json.dumps(dict(sorted(current.items())), indent=1), encoding="utf-8")
    tables_dir = out_dir / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(tables_dir / f"{name}.csv", index=False)
        if name in TABLE_TITLES:
            body = doc.table_from_frame(frame.map(_fmt)) if not frame.empty else doc.Paragraph("(no rows)")
            doc.write_markdown([doc.Heading(TABLE_TITLES[name], 2), body], tables_dir / f"{name}.md")
    return {**{k: f"not estimable: {v}" for k, v in reasons.items()}, **metrics}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)
