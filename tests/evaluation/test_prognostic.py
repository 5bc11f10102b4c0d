"""Subgroup C-index, calibration slope / intercept and Brier scores against references."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from lifelines import KaplanMeierFitter
from sksurv.metrics import concordance_index_censored

from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.prognostic import (
    brier_scores,
    calibration_at_horizon,
    expected_events,
    subgroup_c_index,
)
from hcc_exp.evaluation.survival import fit_breslow


def _cox_sample(n, rng, beta=1.0, scale=800.0, censor_high=2500.0):
    lp = rng.normal(size=n)
    event_time = rng.exponential(scale * np.exp(-beta * lp))
    censor = rng.uniform(100.0, censor_high, n)
    return lp, np.minimum(event_time, censor), (event_time <= censor).astype(int)


def test_subgroup_c_index_matches_sksurv(whas500):
    time, event, risk = whas500
    rng = np.random.default_rng(0)
    groups = np.where(np.arange(time.size) % 3 == 0, "F", "M").astype(object)
    groups[:3] = "X"  # a level too small to estimate
    groups[3] = None  # missing: left out
    result = {r.level: r for r in subgroup_c_index(time, event, risk, groups, rng=rng, n_resamples=200)}
    assert sorted(result) == ["F", "M", "X"]
    assert isinstance(result["X"].result, NotEstimable) and "3 patient" in result["X"].result.reason
    for level in ("F", "M"):
        keep = groups == level
        expected = concordance_index_censored(event[keep].astype(bool), time[keep], risk[keep])[0]
        r = result[level]
        assert r.n == keep.sum() and r.events == event[keep].sum()
        assert r.result.estimate == pytest.approx(expected, abs=1e-12)
        assert r.result.ci_low < r.result.estimate < r.result.ci_high


def test_subgroup_without_events():
    time = np.arange(1, 13, dtype=float)
    event = np.r_[np.ones(6), np.zeros(6)]
    groups = np.repeat(["a", "b"], 6)
    result = subgroup_c_index(time, event, -time, groups, rng=np.random.default_rng(0), n_resamples=50)
    assert isinstance(result[1].result, NotEstimable) and "no events" in result[1].result.reason


def test_calibration_intercept_is_log_observed_over_expected_and_matches_offset_glm():
    rng = np.random.default_rng(1)
    lp_tr, t_tr, e_tr = _cox_sample(400, rng)
    lp_te, t_te, e_te = _cox_sample(300, rng)
    baseline = fit_breslow(lp_tr, t_tr, e_tr)
    fit = calibration_at_horizon(t_te, e_te, lp_te, baseline, 365.0)
    expected = expected_events(baseline, lp_te, t_te, 365.0)
    observed = ((t_te <= 365.0) & (e_te == 1)).astype(float)
    keep = expected > 0
    assert fit.observed == observed.sum()
    assert fit.intercept == pytest.approx(np.log(observed.sum() / expected.sum()), abs=1e-12)
    glm = sm.GLM(observed[keep], np.ones((keep.sum(), 1)), family=sm.families.Poisson(), offset=np.log(expected[keep])).fit()
    assert fit.intercept == pytest.approx(glm.params[0], abs=1e-8)
    # the slope by a hand-written Newton-Raphson on the Poisson log-likelihood
    x = np.column_stack([np.ones(keep.sum()), lp_te[keep]])
    offset = np.log(expected[keep]) - lp_te[keep]
    beta = np.zeros(2)
    for _ in range(50):
        mu = np.exp(x @ beta + offset)
        beta += np.linalg.solve(x.T @ (mu[:, None] * x), x.T @ (observed[keep] - mu))
    assert fit.slope == pytest.approx(beta[1], abs=1e-8)
    # the expected count by hand for one patient: the Breslow sum up to min(T, t)
    i = int(np.argmax(t_te > 365.0))
    at_risk = lambda u: np.exp(lp_tr[t_tr >= u] - baseline.offset).sum()  # noqa: E731
    h0 = sum(1.0 / at_risk(u) for u in np.unique(t_tr[(e_tr == 1) & (t_tr <= 365.0)]))
    assert expected[i] == pytest.approx(h0 * np.exp(lp_te[i] - baseline.offset), rel=1e-10)


def test_calibration_slope_recovers_the_truth():
    rng = np.random.default_rng(2)
    lp_tr, t_tr, e_tr = _cox_sample(3000, rng)
    baseline = fit_breslow(lp_tr, t_tr, e_tr)
    lp_te, t_te, e_te = _cox_sample(3000, rng)
    good = calibration_at_horizon(t_te, e_te, lp_te, baseline, 730.0)
    assert abs(good.slope - 1.0) < 3 * good.slope_se
    assert abs(good.intercept) < 0.1
    # predictions twice as extreme as the truth: slope about 1/2
    lp_half, t_half, e_half = _cox_sample(3000, rng, beta=0.5)
    over = calibration_at_horizon(t_half, e_half, lp_half, baseline, 730.0)
    assert abs(over.slope - 0.5) < 3 * over.slope_se


def test_calibration_beyond_follow_up_is_not_estimable():
    rng = np.random.default_rng(3)
    lp, t, e = _cox_sample(50, rng, censor_high=300.0)
    baseline = fit_breslow(lp, t, e)
    result = calibration_at_horizon(t, e, lp, baseline, 730.0)
    assert isinstance(result, NotEstimable) and "beyond" in result.reason


def _hand_brier(t_tr, e_tr, t_te, e_te, surv, horizon):
    """Graf et al. (1999) IPCW Brier score with a lifelines Kaplan-Meier of the training censoring."""
    g = KaplanMeierFitter().fit(t_tr, 1 - e_tr)
    g_at = lambda u: g.survival_function_at_times(u).to_numpy()  # noqa: E731
    case = (t_te <= horizon) & (e_te == 1)
    control = t_te > horizon
    terms = np.where(case, surv**2 / g_at(t_te), 0.0) + np.where(control, (1 - surv) ** 2 / g_at(horizon)[0], 0.0)
    return terms.mean()


def test_brier_scores_match_graf_formula():
    rng = np.random.default_rng(4)
    lp_tr, t_tr, e_tr = _cox_sample(300, rng)
    lp_te, t_te, e_te = _cox_sample(200, rng)
    baseline = fit_breslow(lp_tr, t_tr, e_tr)
    result = brier_scores(t_tr, e_tr, t_te, e_te, lp_te, baseline, [365, 730])
    for horizon, score in zip((365, 730), result.brier, strict=True):
        surv = baseline.survival(lp_te, [horizon])[:, 0]
        assert score == pytest.approx(_hand_brier(t_tr, e_tr, t_te, e_te, surv, horizon), rel=1e-9)
    grid = result.grid_days
    curve = [_hand_brier(t_tr, e_tr, t_te, e_te, baseline.survival(lp_te, [u])[:, 0], u) for u in grid]
    assert result.integrated == pytest.approx(np.trapezoid(curve, grid) / (grid[-1] - grid[0]), rel=1e-9)
    # an informative model beats the null model's Brier score (S(t) the same for everyone)
    null = brier_scores(t_tr, e_tr, t_te, e_te, np.zeros_like(lp_te), fit_breslow(np.zeros_like(lp_tr), t_tr, e_tr), [365, 730])
    assert result.integrated < null.integrated


def test_brier_horizon_outside_follow_up():
    rng = np.random.default_rng(5)
    lp, t, e = _cox_sample(60, rng, censor_high=500.0)
    baseline = fit_breslow(lp, t, e)
    assert isinstance(brier_scores(t, e, t, e, lp, baseline, [730]), NotEstimable)
