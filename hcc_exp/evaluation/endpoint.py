"""Every survival statistic of one endpoint (OS or RFS), split by split, in named steps.

:func:`evaluate_endpoint` fits what is fitted on the training split (the median risk cut and
the Breslow baseline hazard) once, then runs on every split:

1. :func:`c_index_step`: Harrell's C with the vectorised patient bootstrap, and torchsurv's
   C-index with its Noether interval beside it;
2. :func:`td_auc_step`: time-dependent AUC and ROC at each horizon (IPCW from training);
3. :func:`calibration_step`: Breslow absolute risk -> calibration by risk group and decision curves;
4. :func:`risk_group_step`: high vs low risk at the training median (KM, log-rank, Cox HR);
5. :func:`baseline_step`: the clinical baselines, paired on the model's own resamples.

Each step puts its numbers (or reasons) into a :class:`MetricRecord` and returns the artefacts
the figures and long tables need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.config import EvaluationConfig
from hcc_exp.evaluation.baselines import (
    BASELINE_METRICS,
    baseline_metric_key,
    compare_with_baselines,
    encode_baselines,
)
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.concordance import bootstrap_c_index, bootstrap_indices, torchsurv_c_index
from hcc_exp.evaluation.decision_curves import survival_decision_curve
from hcc_exp.evaluation.plots import horizon_label
from hcc_exp.evaluation.record import MetricRecord
from hcc_exp.evaluation.risk_groups import RiskGroupComparison, compare_risk_groups
from hcc_exp.evaluation.risk_model import fit_endpoint_risk_model
from hcc_exp.evaluation.survival import (
    BreslowBaseline,
    calibration_by_risk_group,
    kaplan_meier_event_probability,
    time_dependent_auc,
    time_dependent_roc,
)
from hcc_exp.vocabulary import ENDPOINTS, SPLIT, SPLITS, event_column, metric_key, risk_column, time_column

TRAIN = SPLITS[0]


def horizon_metric(name: str, horizon_days: float) -> str:
    """A metric at a horizon: ``name`` then the horizon in days.

    >>> horizon_metric("auc", 365.0), horizon_metric("cal_observed", 1095.5)
    ('auc_365d', 'cal_observed_1095.5d')
    """
    return f"{name}_{horizon_days:g}d"


def seeded(cfg: EvaluationConfig, *stream: int) -> np.random.Generator:
    """Independent, order-free generator per (split, task): the same split gives the same resamples."""
    return np.random.default_rng([cfg.seed, *stream])


def n_groups(n: int) -> int:
    """Risk groups of a calibration / reliability plot: about 15 patients each, 2 to 5 groups.

    >>> n_groups(10), n_groups(45), n_groups(400)
    (2, 3, 5)
    """
    return int(np.clip(n // 15, 2, 5))


@dataclass(frozen=True)
class SplitData:
    """One split's outcomes and risk of the endpoint, and the training split's for IPCW."""

    split: str
    endpoint: str
    time: np.ndarray
    event: np.ndarray
    risk: np.ndarray
    rows: pd.DataFrame
    train_time: pd.Series | None
    train_event: pd.Series | None

    def key(self, metric: str) -> str:
        return metric_key(self.split, self.endpoint, metric)


@dataclass
class EndpointArtefacts:
    """Per split (and horizon) what the figures and long tables of one endpoint need."""

    roc: dict[str, dict[float, Any]] = field(default_factory=dict)
    calibration: dict[str, dict[float, Any]] = field(default_factory=dict)
    dca: dict[str, dict[str, Any]] = field(default_factory=dict)
    km: dict[str, RiskGroupComparison | NotEstimable] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------- steps
def c_index_step(part: SplitData, indices: np.ndarray, record: MetricRecord) -> None:
    """Harrell's C with its bootstrap CI (reported) and torchsurv's C with its Noether CI (beside it)."""
    no_pair = "no resample with a comparable pair"
    boot = bootstrap_c_index(part.time, part.event, part.risk, indices=indices)
    if record.put_fields(boot, {part.key("c_index"): "estimate"}):
        record.put_values({part.key("c_index_ci_low"): boot.ci_low, part.key("c_index_ci_high"): boot.ci_high}, no_pair)
        record.put(part.key("c_index_valid_resamples"), boot.n_valid)
    else:
        record.miss([part.key("c_index_ci_low"), part.key("c_index_ci_high")], boot.reason)
    ts = torchsurv_c_index(part.time, part.event, part.risk)
    fields = {part.key(f"c_index_torchsurv{s}"): a for s, a in (("", "estimate"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))}
    record.put_fields(ts, fields, getattr(ts, "reason", None) or "torchsurv returned a non-finite value")


def td_auc_step(part: SplitData, horizons: list[float], record: MetricRecord) -> dict[float, Any]:
    """Time-dependent AUC (recorded) and ROC points (returned) at each horizon."""
    roc: dict[float, Any] = {}
    for horizon in horizons:
        key = part.key(horizon_metric("auc", horizon))
        if part.train_time is None or part.train_event is None:
            record.miss(key, "no training split for the censoring weights")
            roc[horizon] = NotEstimable("no training split")
            continue
        auc = time_dependent_auc(part.train_time, part.train_event, part.time, part.event, part.risk, horizon)
        record.put_fields(auc, {key: "auc"})
        roc[horizon] = time_dependent_roc(part.train_time, part.train_event, part.time, part.event, part.risk, horizon)
    return roc


def calibration_step(
    part: SplitData,
    breslow: BreslowBaseline | NotEstimable,
    horizons: list[float],
    dca_thresholds: tuple[float, ...],
    record: MetricRecord,
) -> tuple[dict[float, Any], dict[str, Any]]:
    """Observed (KM) vs predicted (Breslow) event probability per horizon; calibration groups and decision curves."""
    calibration: dict[float, Any] = {}
    dca: dict[str, Any] = {}
    for horizon in horizons:
        label = horizon_label(horizon)
        pred_key = part.key(horizon_metric("cal_predicted", horizon))
        obs_key = part.key(horizon_metric("cal_observed", horizon))
        observed = kaplan_meier_event_probability(part.time, part.event, horizon)
        if isinstance(observed, NotEstimable):
            record.miss(obs_key, observed.reason)
        else:
            record.put(obs_key, observed[0])
        predicted = predicted_event_probability(breslow, part.risk, horizon)
        if isinstance(predicted, NotEstimable):
            record.miss(pred_key, predicted.reason)
            calibration[horizon] = dca[label] = predicted
            continue
        record.put(pred_key, float(np.mean(predicted)))
        calibration[horizon] = calibration_by_risk_group(predicted, part.time, part.event, horizon, n_groups(len(part.time)))
        dca[label] = survival_decision_curve(part.time, part.event, predicted, horizon, dca_thresholds)
    return calibration, dca


def predicted_event_probability(
    breslow: BreslowBaseline | NotEstimable, risk: np.ndarray, horizon: float
) -> np.ndarray | NotEstimable:
    """(n,) P(event by ``horizon``) from the training Breslow baseline; not beyond its follow-up."""
    if isinstance(breslow, NotEstimable):
        return breslow
    if horizon > breslow.max_time:
        return NotEstimable(f"horizon beyond the training follow-up ({breslow.max_time:g} d)")
    return breslow.event_probability(risk, [horizon])[:, 0]


RISK_GROUP_FIELDS: dict[str, str] = {"hr": "hr", "hr_ci_low": "hr_ci_low", "hr_ci_high": "hr_ci_high", "hr_p": "hr_p"}


def risk_group_step(
    part: SplitData, cut: float | NotEstimable, cfg: EvaluationConfig, record: MetricRecord
) -> RiskGroupComparison | NotEstimable:
    """High vs low risk at the training median cut within the KM window: HR (Cox), log-rank p, group sizes."""
    groups = cut if isinstance(cut, NotEstimable) else compare_risk_groups(
        part.time, part.event, part.risk, cut, cfg.km_truncate_days
    )
    hr_fields = {part.key(k): a for k, a in RISK_GROUP_FIELDS.items()}
    if not record.put_fields(groups, hr_fields, getattr(groups, "reasons", {}).get("hr", "")):
        record.miss(part.key("logrank_p"), groups.reason)
        return groups
    record.put(part.key("logrank_p"), groups.logrank_p)
    record.put(part.key("n_high_risk"), groups.n_high)
    record.put(part.key("n_low_risk"), groups.n_low)
    return groups


def baseline_step(
    part: SplitData, indices: np.ndarray, rng: np.random.Generator, record: MetricRecord
) -> dict[str, Any]:
    """Each clinical baseline's C-index and model - baseline, paired on the model's resamples."""
    comparisons = compare_with_baselines(part.time, part.event, part.risk, encode_baselines(part.rows), indices, rng)
    for baseline, comparison in comparisons.items():
        def key(metric: str, baseline: str = baseline) -> str:
            return baseline_metric_key(part.split, part.endpoint, baseline, metric)

        if isinstance(comparison, NotEstimable):
            record.miss([key(m) for m in BASELINE_METRICS], comparison.reason)
            continue
        record.put_values({key(m): v for m, v in comparison.values().items()}, "no resample with a comparable pair")
        record.put(key("n"), comparison.n)
    return comparisons


# --------------------------------------------------------------------------- orchestration
def fit_on_training(train: pd.DataFrame, endpoint: str) -> tuple[BreslowBaseline | NotEstimable, float | NotEstimable]:
    """The Breslow baseline hazard and the median risk cut, fitted on the training split by the
    run's own risk model (:func:`~hcc_exp.evaluation.risk_model.fit_endpoint_risk_model`)."""
    if train.empty:
        return NotEstimable("no training split"), NotEstimable("no training split: no median risk cut")
    r_col, t_col, e_col = risk_column(endpoint), time_column(endpoint), event_column(endpoint)
    fitted = fit_endpoint_risk_model(train[r_col], train[t_col], train[e_col])  # the run's risk model
    return fitted.breslow, fitted.cutoff


def evaluate_endpoint(
    data: pd.DataFrame,
    endpoint: str,
    cfg: EvaluationConfig,
    record: MetricRecord,
    dca_thresholds: tuple[float, ...],
) -> EndpointArtefacts:
    """All survival statistics of one endpoint; fills ``record`` and returns the artefacts for figures/tables."""
    horizons = [float(h) for h in cfg.horizons_days]
    t_col, e_col, r_col = time_column(endpoint), event_column(endpoint), risk_column(endpoint)
    train = data[data[SPLIT] == TRAIN]
    artefacts = EndpointArtefacts()
    breslow, cut = fit_on_training(train, endpoint)
    if not isinstance(cut, NotEstimable):
        record.put(metric_key(TRAIN, endpoint, "risk_cut"), cut)

    for s_index, split in enumerate(SPLITS):
        rows = data[data[SPLIT] == split]
        if rows.empty:
            record.miss(metric_key(split, endpoint, "c_index"), f"no {split} patients")
            continue
        part = SplitData(
            split=split,
            endpoint=endpoint,
            time=rows[t_col].to_numpy(float),
            event=rows[e_col].to_numpy(float),
            risk=rows[r_col].to_numpy(float),
            rows=rows,
            train_time=None if train.empty else train[t_col],
            train_event=None if train.empty else train[e_col],
        )
        record.put(part.key("n"), len(rows))
        record.put(part.key("events"), part.event.sum())
        e_index = ENDPOINTS.index(endpoint)
        indices = bootstrap_indices(len(rows), cfg.bootstrap_resamples, seeded(cfg, s_index, e_index))

        c_index_step(part, indices, record)
        artefacts.roc[split] = td_auc_step(part, horizons, record)
        artefacts.calibration[split], artefacts.dca[split] = calibration_step(
            part, breslow, horizons, dca_thresholds, record
        )
        artefacts.km[split] = risk_group_step(part, cut, cfg, record)
        artefacts.baselines[split] = baseline_step(part, indices, seeded(cfg, s_index, e_index, 1), record)
    return artefacts
