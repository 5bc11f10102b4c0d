"""Risk groups: Kaplan-Meier, log-rank and HR against lifelines called directly on rossi and waltons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi, load_waltons
from lifelines.statistics import logrank_test

from hcc_exp.evaluation.common import NotEstimable, truncate_follow_up
from hcc_exp.evaluation.risk_groups import compare_risk_groups, high_risk_indicator, median_cut


def _reference(time, event, high):
    km_high = KaplanMeierFitter().fit(time[high], event[high])
    km_low = KaplanMeierFitter().fit(time[~high], event[~high])
    test = logrank_test(time[high], time[~high], event[high], event[~high])
    frame = pd.DataFrame({"T": time, "E": event.astype(int), "g": high.astype(int)})
    cph = CoxPHFitter().fit(frame, "T", "E")
    return km_high, km_low, test, cph.summary.loc["g"]


def _assert_matches(result, time, event, high):
    km_high, km_low, test, row = _reference(time, event, high)
    for ours, ref in ((result.km_high, km_high), (result.km_low, km_low)):
        np.testing.assert_array_equal(ours.timeline, ref.timeline)
        np.testing.assert_array_equal(ours.survival_function_.to_numpy(), ref.survival_function_.to_numpy())
        np.testing.assert_array_equal(ours.event_table.to_numpy(), ref.event_table.to_numpy())
    assert result.logrank_p == pytest.approx(test.p_value, rel=1e-12)
    assert result.logrank_statistic == pytest.approx(test.test_statistic, rel=1e-12)
    assert result.hr == pytest.approx(row["exp(coef)"], rel=1e-9)
    assert result.hr_ci_low == pytest.approx(row["exp(coef) lower 95%"], rel=1e-9)
    assert result.hr_ci_high == pytest.approx(row["exp(coef) upper 95%"], rel=1e-9)
    assert result.hr_p == pytest.approx(row["p"], rel=1e-9)


def test_waltons_groups_match_lifelines():
    df = load_waltons()
    time, event = df["T"].to_numpy(float), df["E"].to_numpy(bool)
    risk = (df["group"] == "miR-137").to_numpy(float)  # the short-lived group as "high risk"
    result = compare_risk_groups(time, event, risk, cut=0.5)
    _assert_matches(result, time, event, risk > 0.5)
    assert result.hr > 1 and result.logrank_p < 1e-6
    assert (result.n_high, result.n_low) == (int(risk.sum()), int((1 - risk).sum()))


def test_rossi_median_cut_from_training_applied_to_test_and_truncated():
    df = load_rossi()
    time, event = df["week"].to_numpy(float), df["arrest"].to_numpy(bool)
    risk = df["prio"].to_numpy(float) - 0.1 * df["age"].to_numpy(float)
    train = np.arange(len(df)) % 2 == 0
    cut = median_cut(risk[train])
    assert cut == np.median(risk[train])
    test = ~train
    result = compare_risk_groups(time[test], event[test], risk[test], cut, truncate_days=30)
    t_time, t_event = truncate_follow_up(time[test], event[test], 30)
    _assert_matches(result, t_time, t_event, high_risk_indicator(risk[test], cut))
    assert result.km_high.timeline.max() <= 30
    # Truncation does not change the curve inside the window.
    full = KaplanMeierFitter().fit(time[test][risk[test] > cut], event[test][risk[test] > cut])
    inside = [5.0, 12.0, 29.0]
    np.testing.assert_allclose(
        result.km_high.survival_function_at_times(inside).to_numpy(),
        full.survival_function_at_times(inside).to_numpy(),
    )


def test_truncation_censors_later_times():
    time, event = truncate_follow_up([10.0, 50.0, 60.0], [1, 1, 0], 40)
    np.testing.assert_array_equal(time, [10.0, 40.0, 40.0])
    np.testing.assert_array_equal(event, [True, False, False])


def test_degenerate_groups_are_reasoned():
    time = np.array([5.0, 8.0, 12.0, 20.0])
    risk = np.array([0.1, 0.2, 0.3, 0.4])
    empty = compare_risk_groups(time, np.array([1, 0, 1, 0]), risk, cut=1.0)
    assert isinstance(empty, NotEstimable) and "high-risk group is empty" in empty.reason
    censored = compare_risk_groups(time, np.zeros(4), risk, cut=0.25)
    assert isinstance(censored, NotEstimable) and "censored" in censored.reason
    one_sided = compare_risk_groups(time, np.array([0, 0, 1, 1]), risk, cut=0.25)
    assert np.isnan(one_sided.hr) and "low-risk" in one_sided.reasons["hr"]
    assert 0 <= one_sided.logrank_p <= 1


def test_whas500_hazard_ratio_agrees_with_sksurv_and_statsmodels_to_1e6():
    # issue 16: at lifelines' default convergence the HR was 4.83090 against 4.83108 (sksurv, PHReg).
    from sksurv.datasets import load_whas500
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    X, y = load_whas500()
    age = X["age"].to_numpy(float)
    time, event = y["lenfol"].astype(float), y["fstat"].astype(bool)
    cut = float(np.median(age))
    high = high_risk_indicator(age, cut).astype(float)[:, None]
    result = compare_risk_groups(time, event, age, cut, None)
    sksurv_hr = np.exp(CoxPHSurvivalAnalysis(ties="efron", tol=1e-12, n_iter=1000).fit(high, y).coef_[0])
    assert result.hr == pytest.approx(sksurv_hr, rel=1e-6)
    assert result.hr == pytest.approx(4.83108, abs=1e-5)  # the published-by-issue value
    statsmodels = pytest.importorskip("statsmodels.api")
    phreg = statsmodels.PHReg(time, high, status=event.astype(int), ties="efron").fit()
    assert result.hr == pytest.approx(np.exp(phreg.params[0]), rel=1e-6)
    low, upper = np.exp(phreg.conf_int()[0])
    assert (result.hr_ci_low, result.hr_ci_high) == pytest.approx((low, upper), rel=1e-5)
