"""Decision curves against dcurves called directly, and the not-estimable cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dcurves import dca
from lifelines.datasets import load_rossi

from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.decision_curves import binary_decision_curve, survival_decision_curve
from hcc_exp.evaluation.survival import fit_breslow

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)


def _columns(table: pd.DataFrame) -> pd.DataFrame:
    return table[["model", "threshold", "prevalence", "tp_rate", "fp_rate", "net_benefit"]].reset_index(
        drop=True
    )


def test_survival_dca_equals_dcurves_on_rossi():
    df = load_rossi()
    time, event = df["week"].to_numpy(float), df["arrest"].to_numpy(int)
    lp = 0.09 * df["prio"].to_numpy(float) - 0.06 * df["age"].to_numpy(float)
    risk = fit_breslow(lp, time, event).event_probability(lp, [26.0])[:, 0]
    ours = survival_decision_curve(time, event, risk, 26.0, THRESHOLDS)
    direct = dca(
        data=pd.DataFrame({"week": time, "arrest": event, "model": risk}),
        outcome="arrest",
        modelnames=["model"],
        thresholds=list(THRESHOLDS),
        time=26.0,
        time_to_outcome_col="week",
    )
    pd.testing.assert_frame_equal(_columns(ours), _columns(direct))
    assert set(ours["model"]) == {"model", "all", "none"}
    assert (ours.loc[ours["model"] == "none", "net_benefit"] == 0).all()


def test_binary_dca_equals_dcurves_and_net_benefit_formula():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    X, y = load_breast_cancer(return_X_y=True)
    prob = LogisticRegression(max_iter=5000).fit(X[:, :3], y).predict_proba(X[:, :3])[:, 1]
    ours = binary_decision_curve(y, prob, THRESHOLDS)
    direct = dca(
        data=pd.DataFrame({"y": y, "model": prob}),
        outcome="y",
        modelnames=["model"],
        thresholds=list(THRESHOLDS),
    )
    pd.testing.assert_frame_equal(_columns(ours), _columns(direct))
    model = ours[ours["model"] == "model"].set_index("threshold")
    for pt in THRESHOLDS:
        positive = prob >= pt
        tp, fp = np.sum(positive & (y == 1)), np.sum(positive & (y == 0))
        expected = tp / y.size - fp / y.size * pt / (1 - pt)
        assert model.loc[pt, "net_benefit"] == pytest.approx(expected, abs=1e-12)


def test_all_censored_or_short_follow_up_is_not_estimable():
    time = np.array([10.0, 20.0, 30.0, 40.0])
    risk = np.array([0.1, 0.2, 0.3, 0.4])
    censored = survival_decision_curve(time, np.zeros(4), risk, 25.0, THRESHOLDS)
    assert isinstance(censored, NotEstimable) and "no event" in censored.reason
    short = survival_decision_curve(time, np.array([1, 0, 1, 0]), risk, 100.0, THRESHOLDS)
    assert isinstance(short, NotEstimable) and "follow-up" in short.reason
    one_class = binary_decision_curve(np.zeros(4), risk, THRESHOLDS)
    assert isinstance(one_class, NotEstimable)
