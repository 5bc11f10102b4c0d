"""Decision curve analysis (Figure 4 G-L) with ``dcurves.dca``.

Net benefit of treating patients whose predicted risk is at or above a threshold
probability, against treat-all and treat-none:

* OS / RFS at a horizon t: survival DCA (``time`` = t, ``time_to_outcome_col``);
  the outcome is "event by t", estimated by dcurves with Kaplan-Meier, and the
  model's risk is the predicted P(event by t) (Breslow, see ``survival.py``).
* MVI: binary DCA on the MVI probability.

Each function returns dcurves' own table (columns ``model, threshold, net_benefit,
...``; models ``"model"``, ``"all"``, ``"none"``), or :class:`NotEstimable`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from dcurves import dca

from hcc_exp.evaluation.common import NotEstimable, as_binary_labels, as_scores, as_survival_arrays

BINARY_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.0, 1.0, 0.01), 2))
"""dcurves' default grid of threshold probabilities, 0 to 0.99 (binary DCA is cheap)."""

SURVIVAL_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.0, 1.0, 0.05), 2))
"""0 to 0.95 by 0.05: survival DCA in dcurves fits two lifelines Kaplan-Meier estimators per
threshold for the model and again for treat-all (10-50 ms each), so the 0.01 grid would cost
minutes per evaluation."""

MODEL = "model"
TIME_COL = "time_days"
EVENT_COL = "event"


def survival_decision_curve(
    time,
    event,
    predicted_event_probability,
    horizon_days: float,
    thresholds: tuple[float, ...] = SURVIVAL_THRESHOLDS,
) -> pd.DataFrame | NotEstimable:
    """Survival DCA at ``horizon_days``.

    Args:
        time, event: (n,) outcomes (days).
        predicted_event_probability: (n,) predicted P(event by horizon) in [0, 1].
        horizon_days: t, in days like ``time``.
        thresholds: threshold probabilities.
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    risk = as_scores(predicted_event_probability, time_arr.size, name="predicted probability")
    if time_arr.size == 0:
        return NotEstimable("no patients")
    if not np.any(event_arr & (time_arr <= horizon_days)):
        return NotEstimable(f"no event by {horizon_days:g} d")
    if time_arr.max() < horizon_days:
        return NotEstimable(f"follow-up ends at {time_arr.max():g} d, before {horizon_days:g} d")
    data = pd.DataFrame(
        {TIME_COL: time_arr, EVENT_COL: event_arr.astype(int), MODEL: np.clip(risk, 0.0, 1.0)}
    )
    with warnings.catch_warnings():
        # threshold 0 divides by zero in dcurves' "interventions avoided" column only
        warnings.simplefilter("ignore", RuntimeWarning)
        return dca(
            data=data,
            outcome=EVENT_COL,
            modelnames=[MODEL],
            thresholds=list(thresholds),
            time=float(horizon_days),
            time_to_outcome_col=TIME_COL,
        )


def binary_decision_curve(
    y_true, probability, thresholds: tuple[float, ...] = BINARY_THRESHOLDS
) -> pd.DataFrame | NotEstimable:
    """Binary DCA of the MVI probability."""
    y = as_binary_labels(y_true, name="mvi")
    prob = as_scores(probability, y.size, name="mvi probability")
    if y.size == 0 or y.min() == y.max():
        return NotEstimable("only one MVI class present")
    data = pd.DataFrame({EVENT_COL: y, MODEL: np.clip(prob, 0.0, 1.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return dca(data=data, outcome=EVENT_COL, modelnames=[MODEL], thresholds=list(thresholds))
