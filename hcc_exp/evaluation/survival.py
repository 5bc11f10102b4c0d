"""Time-dependent AUC, Breslow survival predictions and calibration.

* Cumulative/dynamic AUC(t) comes from scikit-survival's ``cumulative_dynamic_auc``
  with the censoring distribution of the TRAINING split (IPCW), as recommended for
  a train/test design. A horizon a split cannot support returns :class:`NotEstimable`.
* A Cox head gives a linear predictor only; absolute survival needs a baseline
  hazard. :class:`BreslowBaseline` is fitted on the training split for the fixed
  linear predictor (no refit of coefficients) and predicts S(t | x) for any split.
* Calibration compares the mean predicted event probability by t with the
  Kaplan-Meier (lifelines) observed event probability, per risk-quantile group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc as trapezoid_auc
from sklearn.metrics import roc_curve
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.nonparametric import CensoringDistributionEstimator
from sksurv.util import Surv

from hcc_exp.evaluation.common import NotEstimable, as_binary_labels, as_scores, as_survival_arrays


def survival_array(time, event) -> np.ndarray:
    """scikit-survival's structured array (``event`` bool, ``time`` float) from two vectors."""
    time_arr, event_arr = as_survival_arrays(time, event)
    return Surv.from_arrays(event=event_arr, time=time_arr)


# --------------------------------------------------------------------------- AUC(t)
@dataclass(frozen=True)
class TimeDependentAUC:
    """Cumulative/dynamic AUC at one horizon.

    Attributes:
        horizon_days: t.
        auc: AUC(t): cases have an event by t, controls are still event-free after t.
        n_cases: patients with an event at or before t.
        n_controls: patients followed beyond t.
    """

    horizon_days: float
    auc: float
    n_cases: int
    n_controls: int


@dataclass(frozen=True)
class TimeDependentROC:
    """The IPCW-weighted cumulative/dynamic ROC curve at one horizon (for plotting).

    Attributes:
        horizon_days: t.
        false_positive_rate, true_positive_rate: (k,) curve points from (0, 0) to (1, 1).
        auc: area under the curve (equals :attr:`TimeDependentAUC.auc`).
    """

    horizon_days: float
    false_positive_rate: np.ndarray
    true_positive_rate: np.ndarray
    auc: float


def _auc_support(
    train_time: np.ndarray, train_event: np.ndarray, time: np.ndarray, event: np.ndarray, horizon: float
) -> NotEstimable | None:
    """Why AUC(horizon) cannot be estimated on this split, or None when it can."""
    if horizon < time.min() or horizon >= time.max():
        return NotEstimable(
            f"horizon {horizon:g} d outside the split's follow-up [{time.min():g}, {time.max():g}) d"
        )
    if not np.any(event & (time <= horizon)):
        return NotEstimable(f"no event by {horizon:g} d")
    if not np.any(time > horizon):
        return NotEstimable(f"nobody at risk after {horizon:g} d")
    if not np.any(train_time >= horizon):
        return NotEstimable(
            f"horizon {horizon:g} d beyond the training follow-up ({train_time.max():g} d): censoring weights undefined"
        )
    return None


def _events_up_to(time: np.ndarray, event: np.ndarray, horizon: float) -> np.ndarray:
    # Events after the horizon are neither cases nor weighted, so censoring them leaves
    # AUC(horizon) unchanged and keeps scikit-survival from asking for censoring weights
    # beyond the training follow-up.
    return event & (time <= horizon)


def time_dependent_auc(
    train_time, train_event, time, event, risk, horizon_days: float
) -> TimeDependentAUC | NotEstimable:
    """AUC(t) of ``risk`` on one split, IPCW from the training split's censoring.

    Args:
        train_time, train_event: (m,) training split outcomes (censoring distribution).
        time, event: (n,) outcomes of the split evaluated.
        risk: (n,) risk score, higher = earlier event expected.
        horizon_days: t, in the unit of ``time``.
    """
    train_time, train_event = as_survival_arrays(train_time, train_event, name="training outcome")
    time, event = as_survival_arrays(time, event)
    risk = as_scores(risk, time.size)
    problem = _auc_support(train_time, train_event, time, event, horizon_days)
    if problem is not None:
        return problem
    try:
        scores, _ = cumulative_dynamic_auc(
            survival_array(train_time, train_event),
            survival_array(time, _events_up_to(time, event, horizon_days)),
            risk,
            [horizon_days],
        )
    except ValueError as exc:  # scikit-survival's own support checks, in its words
        return NotEstimable(f"AUC at {horizon_days:g} d: {exc}")
    return TimeDependentAUC(
        horizon_days=float(horizon_days),
        auc=float(scores[0]),
        n_cases=int(np.sum(event & (time <= horizon_days))),
        n_controls=int(np.sum(time > horizon_days)),
    )


def time_dependent_roc(
    train_time, train_event, time, event, risk, horizon_days: float
) -> TimeDependentROC | NotEstimable:
    """The ROC curve behind :func:`time_dependent_auc`: cases weighted by 1 / G(T_i), controls by 1.

    Built with ``sklearn.metrics.roc_curve(sample_weight=...)``; its area equals
    scikit-survival's AUC(t).
    """
    train_time, train_event = as_survival_arrays(train_time, train_event, name="training outcome")
    time, event = as_survival_arrays(time, event)
    risk = as_scores(risk, time.size)
    problem = _auc_support(train_time, train_event, time, event, horizon_days)
    if problem is not None:
        return problem
    is_case = event & (time <= horizon_days)
    is_control = time > horizon_days
    censoring = CensoringDistributionEstimator().fit(survival_array(train_time, train_event))
    try:
        case_weights = censoring.predict_ipcw(survival_array(time[is_case], np.ones(is_case.sum(), bool)))
    except ValueError as exc:
        return NotEstimable(f"ROC at {horizon_days:g} d: {exc}")
    keep = is_case | is_control
    weights = np.where(is_case, 0.0, 1.0)
    weights[is_case] = case_weights
    fpr, tpr, _ = roc_curve(is_case[keep].astype(int), risk[keep], sample_weight=weights[keep])
    return TimeDependentROC(float(horizon_days), fpr, tpr, float(trapezoid_auc(fpr, tpr)))


# --------------------------------------------------------------------------- Breslow
@dataclass(frozen=True)
class BreslowBaseline:
    """Breslow cumulative baseline hazard for a fixed Cox linear predictor.

    ``H0(t) = sum_{u <= t} d(u) / sum_{j: T_j >= u} exp(lp_j - offset)``, a right-continuous
    step function over the training split's unique times, so
    ``S(t | lp) = exp(-H0(t) exp(lp - offset))``. The offset (mean training linear
    predictor) only keeps ``exp`` in range; predictions do not depend on it.

    Attributes:
        times: (k,) unique training times (days), ascending.
        cumulative_hazard: (k,) H0 at each of ``times`` (relative to ``offset``).
        offset: the centring constant of the linear predictor.
        max_time: the training split's last observed time; predictions beyond it are NaN.
    """

    times: np.ndarray
    cumulative_hazard: np.ndarray
    offset: float
    max_time: float

    def baseline_cumulative_hazard(self, horizons_days) -> np.ndarray:
        """(h,) H0 at each horizon (NaN beyond :attr:`max_time`)."""
        horizons = np.atleast_1d(np.asarray(horizons_days, dtype=float))
        idx = np.searchsorted(self.times, horizons, side="right") - 1
        values = np.where(idx >= 0, self.cumulative_hazard[np.clip(idx, 0, None)], 0.0)
        return np.where(horizons > self.max_time, np.nan, values)

    def survival(self, linear_predictor, horizons_days) -> np.ndarray:
        """(n, h) S(t | lp) for each patient and horizon (NaN beyond :attr:`max_time`)."""
        lp = np.asarray(linear_predictor, dtype=float).reshape(-1)
        hazard = self.baseline_cumulative_hazard(horizons_days)
        return np.exp(-np.exp(lp - self.offset)[:, None] * hazard[None, :])

    def event_probability(self, linear_predictor, horizons_days) -> np.ndarray:
        """(n, h) predicted probability of the event by each horizon, 1 - S(t | lp)."""
        return 1.0 - self.survival(linear_predictor, horizons_days)


def fit_breslow(linear_predictor, time, event) -> BreslowBaseline | NotEstimable:
    """Fit the Breslow baseline hazard on the training split for a fixed linear predictor.

    Args:
        linear_predictor: (n,) Cox log relative hazard of each training patient.
        time, event: (n,) training outcomes (days).
    """
    time_arr, event_arr = as_survival_arrays(time, event, name="training outcome")
    lp = as_scores(linear_predictor, time_arr.size, name="linear predictor")
    if not event_arr.any():
        return NotEstimable("no events in the training split: baseline hazard undefined")
    offset = float(lp.mean())
    relative_hazard = np.exp(lp - offset)
    unique_times, inverse = np.unique(time_arr, return_inverse=True)
    events_at = np.bincount(inverse, weights=event_arr.astype(float), minlength=unique_times.size)
    hazard_leaving = np.bincount(inverse, weights=relative_hazard, minlength=unique_times.size)
    # Risk set at u: everyone with T >= u, i.e. the reverse cumulative sum over unique times.
    at_risk = np.cumsum(hazard_leaving[::-1])[::-1]
    cumulative = np.cumsum(events_at / at_risk)
    return BreslowBaseline(unique_times, cumulative, offset, float(time_arr.max()))


# --------------------------------------------------------------------------- calibration
def kaplan_meier_event_probability(
    time, event, horizon_days: float
) -> tuple[float, float, float] | NotEstimable:
    """Observed 1 - S_KM(t) with lifelines' 95% interval, or NotEstimable if follow-up ends before t."""
    time_arr, event_arr = as_survival_arrays(time, event)
    if time_arr.size == 0:
        return NotEstimable("no patients")
    if time_arr.max() < horizon_days:
        return NotEstimable(f"follow-up ends at {time_arr.max():g} d, before {horizon_days:g} d")
    km = KaplanMeierFitter().fit(time_arr, event_arr)
    surv = float(km.survival_function_at_times(horizon_days).iloc[0])
    ci = km.confidence_interval_survival_function_
    row = ci[ci.index <= horizon_days].iloc[-1]
    return 1.0 - surv, 1.0 - float(row.iloc[1]), 1.0 - float(row.iloc[0])


def calibration_by_risk_group(
    predicted_event_probability, time, event, horizon_days: float, n_groups: int = 5
) -> pd.DataFrame | NotEstimable:
    """Predicted vs Kaplan-Meier observed event probability by t, per risk-quantile group.

    Args:
        predicted_event_probability: (n,) predicted P(event by t) of each patient.
        time, event: (n,) outcomes of the split.
        horizon_days: t.
        n_groups: quantile groups of the prediction (equal sizes, at least 2 patients each).

    Returns:
        One row per group: ``group, n, events_by_horizon, predicted, observed,
        observed_ci_low, observed_ci_high, reason`` (observed NaN with a reason where the
        group's follow-up ends before t), or NotEstimable for the whole split.
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    pred = as_scores(predicted_event_probability, time_arr.size, name="predicted probability")
    if time_arr.size < 2 * n_groups:
        n_groups = max(1, time_arr.size // 2)
    if time_arr.max() < horizon_days:
        return NotEstimable(f"follow-up ends at {time_arr.max():g} d, before {horizon_days:g} d")
    # Equal-sized groups of the sorted prediction (ties broken by position), lowest risk first.
    order = np.argsort(pred, kind="stable")
    rows = []
    for group, positions in enumerate(np.array_split(order, n_groups)):
        members = np.zeros(time_arr.size, dtype=bool)
        members[positions] = True
        observed = kaplan_meier_event_probability(time_arr[members], event_arr[members], horizon_days)
        row = {
            "group": group + 1,
            "n": int(members.sum()),
            "events_by_horizon": int(np.sum(event_arr[members] & (time_arr[members] <= horizon_days))),
            "predicted": float(pred[members].mean()),
            "observed": np.nan,
            "observed_ci_low": np.nan,
            "observed_ci_high": np.nan,
            "reason": "",
        }
        if isinstance(observed, NotEstimable):
            row["reason"] = observed.reason
        else:
            row["observed"], row["observed_ci_low"], row["observed_ci_high"] = observed
        rows.append(row)
    return pd.DataFrame(rows)


def mvi_reliability(y_true, probability, n_bins: int = 5) -> pd.DataFrame | NotEstimable:
    """Reliability curve of the MVI probability (``sklearn.calibration.calibration_curve``, quantile bins).

    Returns:
        ``mean_predicted, observed_fraction`` per non-empty bin, or NotEstimable with one class only.
    """
    y = as_binary_labels(y_true, name="mvi")
    prob = as_scores(probability, y.size, name="mvi probability")
    if y.size == 0 or y.min() == y.max():
        return NotEstimable("only one MVI class present")
    observed, predicted = calibration_curve(y, prob, n_bins=min(n_bins, y.size), strategy="quantile")
    return pd.DataFrame({"mean_predicted": predicted, "observed_fraction": observed})
