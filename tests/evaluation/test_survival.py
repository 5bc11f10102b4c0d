"""AUC(t), Breslow survival and calibration against scikit-survival, lifelines and sklearn on real data."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from sklearn.calibration import calibration_curve
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.util import Surv

from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.survival import (
    calibration_by_risk_group,
    fit_breslow,
    kaplan_meier_event_probability,
    mvi_reliability,
    time_dependent_auc,
    time_dependent_roc,
)


@pytest.fixture(scope="module")
def whas_split():
    """WHAS500 with a Cox linear predictor, split into 'training' (even rows) and 'test' (odd rows)."""
    X, y = load_whas500()
    Xn = X.select_dtypes("number").astype(float)
    time, event = y["lenfol"].astype(float), y["fstat"].astype(bool)
    model = CoxPHSurvivalAnalysis().fit(Xn, y)
    lp = Xn.to_numpy() @ model.coef_
    train = np.arange(time.size) % 2 == 0
    return time, event, lp, train, y


@pytest.mark.parametrize("horizon", [180.0, 365.0, 730.0, 1500.0])
def test_auc_equals_cumulative_dynamic_auc(whas_split, horizon):
    time, event, lp, train, y = whas_split
    test = ~train
    ours = time_dependent_auc(time[train], event[train], time[test], event[test], lp[test], horizon)
    reference, _ = cumulative_dynamic_auc(y[train], y[test], lp[test], [horizon])
    assert ours.auc == pytest.approx(reference[0], abs=1e-12)
    assert ours.n_cases == int(np.sum(event[test] & (time[test] <= horizon)))
    roc = time_dependent_roc(time[train], event[train], time[test], event[test], lp[test], horizon)
    assert roc.auc == pytest.approx(reference[0], abs=1e-9)
    assert roc.false_positive_rate[0] == 0 and roc.true_positive_rate[-1] == pytest.approx(1.0)


def test_auc_with_tied_risk_equals_sksurv():
    X, y = load_gbsg2()
    risk = np.round(X["tsize"].to_numpy(float), -1)
    time, event = y["time"].astype(float), y["cens"].astype(bool)
    train = np.arange(time.size) % 3 != 0
    ours = time_dependent_auc(time[train], event[train], time[~train], event[~train], risk[~train], 1000.0)
    reference, _ = cumulative_dynamic_auc(y[train], y[~train], risk[~train], [1000.0])
    assert ours.auc == pytest.approx(reference[0], abs=1e-12)


def test_auc_when_test_events_outlast_training_follow_up(whas_split):
    """Events after the horizon need no censoring weight; sksurv alone would refuse this split."""
    time, event, lp, train, _ = whas_split
    short = train & (time < 1000)
    test = ~train
    with pytest.raises(ValueError):
        cumulative_dynamic_auc(
            Surv.from_arrays(event[short], time[short]),
            Surv.from_arrays(event[test], time[test]),
            lp[test],
            [365.0],
        )
    ours = time_dependent_auc(time[short], event[short], time[test], event[test], lp[test], 365.0)
    # Same AUC as scikit-survival on the test split with post-horizon events censored.
    censored_late = event[test] & (time[test] <= 365.0)
    reference, _ = cumulative_dynamic_auc(
        Surv.from_arrays(event[short], time[short]),
        Surv.from_arrays(censored_late, time[test]),
        lp[test],
        [365.0],
    )
    assert ours.auc == pytest.approx(reference[0], abs=1e-12)


def test_unsupported_horizons_are_not_estimable(whas_split):
    time, event, lp, train, _ = whas_split
    test = ~train
    beyond = time_dependent_auc(time[train], event[train], time[test], event[test], lp[test], 10_000.0)
    assert isinstance(beyond, NotEstimable) and "follow-up" in beyond.reason
    before = time_dependent_auc(time[train], event[train], time[test], event[test], lp[test], 0.0)
    assert isinstance(before, NotEstimable)
    no_event = time_dependent_auc(
        time[train], event[train], time[test], np.zeros(test.sum(), bool), lp[test], 365.0
    )
    assert isinstance(no_event, NotEstimable) and "no event" in no_event.reason
    assert isinstance(
        time_dependent_roc(
            time[train], event[train], time[test], np.zeros(test.sum(), bool), lp[test], 365.0
        ),
        NotEstimable,
    )


@pytest.mark.parametrize("dataset", ["whas500", "gbsg2"])
def test_breslow_survival_equals_sksurv_coxph(dataset):
    loader = {"whas500": load_whas500, "gbsg2": load_gbsg2}[dataset]
    X, y = loader()
    Xn = X.select_dtypes("number").astype(float)
    event_field, time_field = y.dtype.names
    model = CoxPHSurvivalAnalysis().fit(Xn, y)
    lp = Xn.to_numpy() @ model.coef_
    baseline = fit_breslow(lp, y[time_field], y[event_field])
    times = np.quantile(y[time_field], [0.05, 0.25, 0.5, 0.75, 0.95])
    reference = np.array([fn(times) for fn in model.predict_survival_function(Xn)])
    np.testing.assert_allclose(baseline.survival(lp, times), reference, atol=1e-6)
    np.testing.assert_allclose(baseline.event_probability(lp[:5], times), 1 - reference[:5], atol=1e-6)
    # Breslow's baseline hazard is fitted for the linear predictor; other patients just plug in.
    shifted = lp[:3] + 0.7
    expected = reference[:3] ** np.exp(0.7)
    np.testing.assert_allclose(baseline.survival(shifted, times), expected, atol=1e-6)


def test_breslow_beyond_training_follow_up_is_nan_and_no_events_not_estimable():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    baseline = fit_breslow(np.zeros(4), time, np.array([1, 0, 1, 0]))
    assert np.isnan(baseline.survival(np.zeros(1), [5.0])).all()
    assert baseline.survival(np.zeros(1), [0.5])[0, 0] == 1.0
    assert isinstance(fit_breslow(np.zeros(4), time, np.zeros(4)), NotEstimable)


def test_calibration_groups_observed_equals_lifelines_kaplan_meier(whas_split):
    time, event, lp, train, _ = whas_split
    baseline = fit_breslow(lp[train], time[train], event[train])
    test = ~train
    predicted = baseline.event_probability(lp[test], [365.0])[:, 0]
    table = calibration_by_risk_group(predicted, time[test], event[test], 365.0, n_groups=4)
    assert list(table["group"]) == [1, 2, 3, 4] and table["n"].sum() == test.sum()
    order = np.argsort(predicted, kind="stable")
    for group, members in enumerate(np.array_split(order, 4)):
        km = KaplanMeierFitter().fit(time[test][members], event[test][members])
        observed = 1 - float(km.survival_function_at_times(365.0).iloc[0])
        row = table.iloc[group]
        assert row["observed"] == pytest.approx(observed, abs=1e-12)
        assert row["predicted"] == pytest.approx(predicted[members].mean(), abs=1e-12)
        assert row["observed_ci_low"] <= row["observed"] <= row["observed_ci_high"]
    # Higher predicted risk groups die more in this cohort.
    assert table["observed"].iloc[-1] > table["observed"].iloc[0]


def test_kaplan_meier_event_probability_needs_follow_up():
    result = kaplan_meier_event_probability([10.0, 20.0, 30.0], [1, 0, 0], 100.0)
    assert isinstance(result, NotEstimable)
    value, low, high = kaplan_meier_event_probability([10.0, 20.0, 30.0, 200.0], [1, 0, 0, 0], 100.0)
    assert value == pytest.approx(0.25) and low < value < high


def test_reliability_equals_sklearn_calibration_curve():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    X, y = load_breast_cancer(return_X_y=True)
    prob = LogisticRegression(max_iter=5000).fit(X[:, :5], y).predict_proba(X[:, :5])[:, 1]
    table = mvi_reliability(y, prob, n_bins=6)
    observed, predicted = calibration_curve(y, prob, n_bins=6, strategy="quantile")
    np.testing.assert_allclose(table["observed_fraction"], observed)
    np.testing.assert_allclose(table["mean_predicted"], predicted)
    assert isinstance(mvi_reliability(np.ones(5), np.linspace(0, 1, 5)), NotEstimable)
