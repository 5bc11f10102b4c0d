"""Ablation statistics against scipy, statsmodels and scikit-survival."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sksurv.datasets import load_gbsg2, load_veterans_lung_cancer
from sksurv.metrics import concordance_index_censored
from statsmodels.stats.multitest import multipletests

from hcc_exp.evaluation.concordance import bootstrap_indices, paired_bootstrap_difference
from hcc_exp.reporting.stats import (
    bootstrap_auc,
    holm_adjust,
    mean_t_interval,
    paired_seed_comparison,
    pooled_paired_auc_difference,
    pooled_paired_c_index_difference,
)

SEED_VALUES = [0.712, 0.745, 0.690, 0.771, 0.733]


# --------------------------------------------------------------------------- t-interval
def test_t_interval_equals_scipy_and_hand_formula():
    result = mean_t_interval(SEED_VALUES)
    x = np.array(SEED_VALUES)
    low, high = stats.t.interval(0.95, df=4, loc=x.mean(), scale=stats.sem(x))
    assert result.estimable and result.n == 5
    assert result.mean == pytest.approx(x.mean(), abs=1e-15)
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-12)
    # by hand: mean +- t_{0.975, 4} * sd / sqrt(n), t_{0.975, 4} = 2.776445...
    half = 2.7764451051977987 * x.std(ddof=1) / math.sqrt(5)
    assert (result.low, result.high) == pytest.approx((x.mean() - half, x.mean() + half), abs=1e-12)


def test_t_interval_other_confidence_and_nan_ignored():
    result = mean_t_interval([*SEED_VALUES, math.nan], confidence=0.9)
    x = np.array(SEED_VALUES)
    assert result.n == 5
    assert (result.low, result.high) == pytest.approx(stats.t.interval(0.9, 4, loc=x.mean(), scale=stats.sem(x)))


def test_t_interval_one_seed_is_not_estimable_with_reason():
    result = mean_t_interval([0.73])
    assert result.mean == 0.73 and result.n == 1
    assert math.isnan(result.low) and math.isnan(result.high)
    assert not result.estimable and "1 seed" in result.reason
    empty = mean_t_interval([])
    assert empty.n == 0 and math.isnan(empty.mean) and "no values" in empty.reason


def test_t_interval_constant_values_collapse_to_mean():
    result = mean_t_interval([0.8, 0.8, 0.8])
    assert result.estimable and result.low == result.mean == result.high == pytest.approx(0.8)


# --------------------------------------------------------------------------- paired tests
ARM = [0.70, 0.68, 0.74, 0.66, 0.71, 0.69]
FULL = [0.75, 0.74, 0.73, 0.72, 0.78, 0.76]


def test_paired_tests_equal_scipy():
    result = paired_seed_comparison(ARM, FULL)
    t = stats.ttest_rel(ARM, FULL)
    w = stats.wilcoxon(ARM, FULL)
    assert result.reason is None and result.n_pairs == 6
    assert result.t_statistic == pytest.approx(t.statistic, abs=1e-12)
    assert result.t_p == pytest.approx(t.pvalue, abs=1e-12)
    assert result.wilcoxon_statistic == pytest.approx(w.statistic)
    assert result.wilcoxon_p == pytest.approx(w.pvalue, abs=1e-12)
    d = np.subtract(ARM, FULL)
    assert result.diff.mean == pytest.approx(d.mean())
    assert (result.diff.low, result.diff.high) == pytest.approx(
        stats.t.interval(0.95, 5, loc=d.mean(), scale=stats.sem(d))
    )


def test_wilcoxon_exact_p_by_hand():
    # Five positive differences: the exact two-sided p is 2 * (1/2)^5 = 0.0625.
    result = paired_seed_comparison([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.5, 1.0, 1.2, 1.4])
    assert result.wilcoxon_p == pytest.approx(0.0625)
    assert result.wilcoxon_statistic == 0.0


def test_paired_tests_drop_nan_pairs():
    arm = [*ARM, math.nan]
    full = [*FULL, 0.9]
    result = paired_seed_comparison(arm, full)
    assert result.n_pairs == 6
    assert result.t_p == pytest.approx(stats.ttest_rel(ARM, FULL).pvalue)


def test_paired_tests_not_estimable_cases():
    one = paired_seed_comparison([0.7], [0.8])
    assert one.n_pairs == 1 and math.isnan(one.t_p) and math.isnan(one.wilcoxon_p)
    assert "1 paired seed" in one.reason
    assert one.diff.mean == pytest.approx(-0.1) and "1 seed" in one.diff.reason
    zero = paired_seed_comparison([0.7, 0.8, 0.75], [0.7, 0.8, 0.75])
    assert math.isnan(zero.t_p) and "zero" in zero.reason
    assert zero.diff.mean == 0.0 and (zero.diff.low, zero.diff.high) == (0.0, 0.0)
    constant = paired_seed_comparison([0.7, 0.8, 0.75], [0.6, 0.7, 0.65])
    assert math.isnan(constant.t_p) and "do not vary" in constant.reason
    assert constant.wilcoxon_p == pytest.approx(stats.wilcoxon([0.7, 0.8, 0.75], [0.6, 0.7, 0.65]).pvalue)
    with pytest.raises(ValueError, match="length"):
        paired_seed_comparison([0.7, 0.8], [0.7])


# --------------------------------------------------------------------------- Holm
def test_holm_equals_statsmodels_and_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005]
    adjusted = holm_adjust(p)
    assert adjusted == pytest.approx(multipletests(p, method="holm")[1])
    # by hand: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_equals_statsmodels_on_random_families_with_ties():
    rng = np.random.default_rng(11)
    for m in (1, 2, 5, 17):
        p = np.round(rng.uniform(0, 0.2, size=m), 2)  # rounding creates ties
        assert holm_adjust(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-15)


def test_holm_leaves_nan_out_of_the_family():
    adjusted = holm_adjust([0.02, math.nan, 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2]] == pytest.approx([0.04, 0.04])  # m = 2, not 3
    assert np.isnan(holm_adjust([math.nan, math.nan])).all()
    assert holm_adjust([0.6, 0.7]) == pytest.approx([1.0, 1.0])


# --------------------------------------------------------------------------- paired patient bootstrap
@pytest.fixture(scope="module")
def gbsg2():
    """150 patients of the German Breast Cancer Study (real data shipped with scikit-survival)."""
    features, outcome = load_gbsg2()
    keep = slice(0, 150)
    time = outcome["time"][keep].astype(float)
    event = outcome["cens"][keep].astype(bool)
    nodes = features["pnodes"].to_numpy(float)[keep]
    size = features["tsize"].to_numpy(float)[keep]
    grade = features["tgrade"].cat.codes.to_numpy(float)[keep]
    return time, event, nodes, size, grade


def _sksurv_c(event, time, risk):
    return concordance_index_censored(event, time, risk)[0]


def test_pooled_bootstrap_matches_sksurv_on_explicit_resamples(gbsg2):
    time, event, nodes, size, grade = gbsg2
    arm = np.stack([size, grade + 0.01 * size])  # two "seeds" of the arm
    full = np.stack([nodes, nodes + 0.1 * grade])  # two seeds of the reference, paired by row
    indices = bootstrap_indices(time.size, 60, np.random.default_rng(7))
    result = pooled_paired_c_index_difference(time, event, arm, full, indices)

    per_seed = [_sksurv_c(event, time, a) - _sksurv_c(event, time, f) for a, f in zip(arm, full, strict=True)]
    assert result.estimate == pytest.approx(np.mean(per_seed), abs=1e-12)
    resampled = []
    for row in indices:
        t, e = time[row], event[row]
        resampled.append(np.mean([_sksurv_c(e, t, a[row]) - _sksurv_c(e, t, f[row]) for a, f in zip(arm, full, strict=True)]))
    low, high = np.quantile(resampled, [0.025, 0.975])
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-12)
    assert result.n_seeds == 2 and result.n_resamples == 60 and result.n_patients == 150 and result.estimable


def test_pooled_bootstrap_one_seed_equals_paired_bootstrap(gbsg2):
    time, event, nodes, size, _ = gbsg2
    indices = bootstrap_indices(time.size, 300, np.random.default_rng(1))
    pooled = pooled_paired_c_index_difference(time, event, size[None], nodes[None], indices)
    single = paired_bootstrap_difference(time, event, size, nodes, indices=indices)
    assert (pooled.estimate, pooled.low, pooled.high) == pytest.approx((single.estimate, single.ci_low, single.ci_high))


def test_pooled_bootstrap_of_identical_arms_is_zero_and_worse_arm_excludes_zero():
    _, outcome = load_veterans_lung_cancer()
    time = outcome["Survival_in_days"].astype(float)
    event = outcome["Status"].astype(bool)
    rng = np.random.default_rng(3)
    good = -np.log(time) + 0.3 * rng.normal(size=time.size)  # close to the truth
    noise = rng.normal(size=time.size)  # uninformative
    indices = bootstrap_indices(time.size, 500, np.random.default_rng(0))
    same = pooled_paired_c_index_difference(time, event, good[None], good[None], indices)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    worse = pooled_paired_c_index_difference(time, event, noise[None], good[None], indices)
    assert worse.high < 0 < worse.high - worse.estimate


def test_pooled_bootstrap_not_estimable_without_events_or_seed_pairs():
    time = np.array([10.0, 20.0, 30.0, 40.0])
    risk = np.array([[0.4, 0.3, 0.2, 0.1]])
    indices = bootstrap_indices(4, 50, np.random.default_rng(0))
    no_events = pooled_paired_c_index_difference(time, np.zeros(4, bool), risk, risk, indices)
    assert not no_events.estimable and "no events" in no_events.reason and math.isnan(no_events.estimate)
    unpaired = pooled_paired_c_index_difference(time, np.ones(4, bool), np.stack([risk[0], risk[0]]), risk, indices)
    assert not unpaired.estimable and "pair" in unpaired.reason


# --------------------------------------------------------------------------- AUC bootstrap
@pytest.fixture(scope="module")
def breast_cancer():
    """Wisconsin diagnostic breast cancer (569 patients, shipped with scikit-learn): two
    real predictors of malignancy, one strong (worst concave points), one weak (texture SE)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = list(data.feature_names)
    malignant = (data.target == 0).astype(int)
    return malignant, data.data[:, names.index("worst concave points")], data.data[:, names.index("texture error")]


def test_bootstrap_auc_equals_sklearn_on_every_resample(breast_cancer):
    from sklearn.metrics import roc_auc_score

    y, strong, _ = breast_cancer
    # Rounded scores create ties, which the average ranks must handle like the ROC area.
    scores = np.round(strong, 2)
    indices = bootstrap_indices(y.size, 40, np.random.default_rng(0))
    expected = [roc_auc_score(y[idx], scores[idx]) for idx in indices]
    assert bootstrap_auc(y, scores, indices) == pytest.approx(expected, abs=1e-12)
    assert bootstrap_auc(y, scores, np.arange(y.size)[None, :])[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_bootstrap_auc_of_a_one_class_resample_is_nan():
    y = np.array([0, 1, 0, 1])
    auc = bootstrap_auc(y, np.array([0.1, 0.9, 0.2, 0.8]), np.array([[0, 2, 0, 2], [0, 1, 2, 3]]))
    assert math.isnan(auc[0]) and auc[1] == 1.0


def test_pooled_auc_bootstrap_estimate_and_interval(breast_cancer):
    from sklearn.metrics import roc_auc_score

    y, strong, weak = breast_cancer
    rng = np.random.default_rng(1)
    # Two "seeds" of each arm: the real predictors plus a little seed noise.
    arm = np.stack([weak + rng.normal(0, 0.05, y.size) for _ in range(2)])
    ref = np.stack([strong + rng.normal(0, 0.005, y.size) for _ in range(2)])
    indices = bootstrap_indices(y.size, 500, np.random.default_rng(2))
    result = pooled_paired_auc_difference(y, arm, ref, indices)
    expected = np.mean([roc_auc_score(y, a) - roc_auc_score(y, r) for a, r in zip(arm, ref, strict=True)])
    assert result.estimable and result.n_seeds == 2 and result.n_patients == y.size and result.n_resamples == 500
    assert result.estimate == pytest.approx(expected, abs=1e-12)
    # The weak feature (AUC ~0.6) is far worse than the strong one (~0.96).
    assert result.low < result.estimate < result.high < -0.2
    # By hand: percentiles of the seed-averaged per-resample differences.
    diffs = np.mean(
        [[roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], r[i]) for i in indices] for a, r in zip(arm, ref, strict=True)],
        axis=0,
    )
    assert (result.low, result.high) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)


def test_pooled_auc_bootstrap_identical_arms_and_not_estimable_cases(breast_cancer):
    y, strong, _ = breast_cancer
    indices = bootstrap_indices(y.size, 50, np.random.default_rng(3))
    same = pooled_paired_auc_difference(y, strong[None, :], strong[None, :], indices)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    one_class = pooled_paired_auc_difference(np.zeros(y.size), strong[None, :], strong[None, :], indices)
    assert not one_class.estimable and "one class" in one_class.reason
    unpaired = pooled_paired_auc_difference(y, np.stack([strong, strong]), strong[None, :], indices)
    assert not unpaired.estimable and "seed" in unpaired.reason
