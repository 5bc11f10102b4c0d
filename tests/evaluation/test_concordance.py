"""C-index and its bootstrap against scikit-survival and torchsurv on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored
from torchsurv.metrics.cindex import ConcordanceIndex

from hcc_exp.evaluation.common import EvaluationInputError, NotEstimable
from hcc_exp.evaluation.concordance import (
    CIndexBootstrap,
    bootstrap_c_index,
    bootstrap_indices,
    comparable_pairs,
    harrell_c_index,
    paired_bootstrap_difference,
    resample_counts,
    torchsurv_c_index,
)


def test_c_index_equals_sksurv_and_torchsurv_with_ties(real_survival):
    name, (time, event, risk) = real_survival
    assert np.unique(risk).size < risk.size / 3, "fixture should have many tied risks"
    ours = harrell_c_index(time, event, risk)
    reference = concordance_index_censored(event, time, risk)[0]
    torch_ref = float(
        ConcordanceIndex()(torch.from_numpy(risk), torch.from_numpy(event), torch.from_numpy(time))
    )
    assert ours == pytest.approx(reference, abs=1e-9), name
    assert ours == pytest.approx(torch_ref, abs=1e-9), name


def test_c_index_counts_tied_times_like_sksurv():
    # Two events at t=2 are not comparable with each other; an event and a censoring at t=2 are.
    time = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 3.0])
    event = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    risk = np.array([5.0, 4.0, 4.0, 1.0, 4.0, 0.0])
    assert harrell_c_index(time, event, risk) == pytest.approx(
        concordance_index_censored(event, time, risk)[0], abs=1e-12
    )
    comparable = comparable_pairs(time, event)
    assert not comparable[1, 2] and not comparable[2, 1]
    assert comparable[1, 3] and not comparable[3, 1]


def test_vectorised_bootstrap_equals_loop_of_sksurv_on_same_resamples(real_survival):
    name, (time, event, risk) = real_survival
    result = bootstrap_c_index(time, event, risk, rng=np.random.default_rng(3), n_resamples=50)
    assert isinstance(result, CIndexBootstrap)
    assert result.resample_indices.shape == (50, time.size)
    loop = np.array(
        [concordance_index_censored(event[i], time[i], risk[i])[0] for i in result.resample_indices]
    )
    np.testing.assert_allclose(result.resample_estimates, loop, rtol=0, atol=1e-9, err_msg=name)
    low, high = np.quantile(loop, [0.025, 0.975])
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-9)
    assert result.ci_low < result.estimate < result.ci_high


def test_paired_difference_equals_loop_of_sksurv(whas500):
    time, event, risk = whas500
    other = np.round(-time / 100 + np.random.default_rng(0).normal(scale=5, size=time.size))
    diff = paired_bootstrap_difference(time, event, risk, other, rng=np.random.default_rng(1), n_resamples=40)
    loop = np.array(
        [
            concordance_index_censored(event[i], time[i], risk[i])[0]
            - concordance_index_censored(event[i], time[i], other[i])[0]
            for i in diff.resample_indices
        ]
    )
    np.testing.assert_allclose(diff.resample_differences, loop, atol=1e-9)
    assert diff.estimate == pytest.approx(
        concordance_index_censored(event, time, risk)[0] - concordance_index_censored(event, time, other)[0],
        abs=1e-12,
    )
    assert diff.model.resample_indices is diff.baseline.resample_indices
    assert 0.0 <= diff.p_value <= 1.0


def test_same_seed_same_resamples_and_explicit_indices_reused(gbsg2):
    time, event, risk = gbsg2
    a = bootstrap_c_index(time, event, risk, rng=np.random.default_rng(7), n_resamples=30)
    b = bootstrap_c_index(time, event, risk, rng=np.random.default_rng(7), n_resamples=30)
    c = bootstrap_c_index(time, event, risk, indices=a.resample_indices)
    np.testing.assert_array_equal(a.resample_indices, b.resample_indices)
    np.testing.assert_array_equal(a.resample_estimates, c.resample_estimates)


def test_resample_counts_are_multiplicities():
    idx = bootstrap_indices(5, 3, np.random.default_rng(0))
    counts = resample_counts(idx, 5)
    for row, cnt in zip(idx, counts, strict=True):
        np.testing.assert_array_equal(np.bincount(row, minlength=5), cnt)


def test_all_censored_is_not_estimable_not_an_error():
    time = np.array([1.0, 2.0, 3.0])
    event = np.zeros(3, dtype=bool)
    risk = np.array([0.1, 0.2, 0.3])
    assert isinstance(harrell_c_index(time, event, risk), NotEstimable)
    result = bootstrap_c_index(time, event, risk, rng=np.random.default_rng(0), n_resamples=10)
    assert isinstance(result, NotEstimable) and "censored" in result.reason
    assert isinstance(torchsurv_c_index(time, event, risk), NotEstimable)


def test_resamples_without_comparable_pairs_are_skipped():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 0, 0, 0], dtype=bool)
    risk = np.array([4.0, 3.0, 2.0, 1.0])
    result = bootstrap_c_index(time, event, risk, rng=np.random.default_rng(0), n_resamples=200)
    assert result.estimate == 1.0
    n_nan = int(np.isnan(result.resample_estimates).sum())
    assert n_nan > 0 and result.n_valid == 200 - n_nan
    assert result.ci_low == result.ci_high == 1.0


def test_torchsurv_interval_is_reported(whas500):
    time, event, risk = whas500
    result = torchsurv_c_index(time, event, risk)
    assert result.estimate == pytest.approx(concordance_index_censored(event, time, risk)[0], abs=1e-9)
    assert result.ci_low < result.estimate < result.ci_high


@pytest.mark.parametrize("sign, expected", [(-1.0, 1.0), (1.0, 0.0)])
def test_torchsurv_interval_at_c_exactly_0_or_1_is_not_estimable(sign, expected):
    # Hand count: 4 patients, events at t = 1, 2, 3 and a censoring at 4 give 3 + 2 + 1 = 6
    # comparable pairs; risk = -time orders all 6 concordantly (C = 1), risk = +time none (C = 0).
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 1, 0], dtype=bool)
    result = torchsurv_c_index(time, event, sign * time)
    assert result.estimate == expected == harrell_c_index(time, event, sign * time)
    assert np.isnan(result.ci_low) and np.isnan(result.ci_high)
    assert f"C = {expected:g}" in result.reason


def test_bad_input_is_named():
    with pytest.raises(EvaluationInputError, match="risk"):
        harrell_c_index([1, 2, 3], [1, 0, 1], [0.1, np.nan, 0.3])
    with pytest.raises(EvaluationInputError, match="event"):
        harrell_c_index([1, 2, 3], [1, 0], [0.1, 0.2, 0.3])


@pytest.mark.slow
def test_bootstrap_interval_covers_known_c_index_about_95_percent():
    """Exponential times with hazard exp(x); the population C-index (same censoring) is found
    by Monte Carlo over 4 million independent pairs; 95% intervals from 400 cohorts of 150."""
    beta, n, reps = 1.0, 150, 400

    def cohort(rng, size):
        x = rng.normal(size=size)
        t = rng.exponential(np.exp(-beta * x))
        c = rng.uniform(0, 3.0, size)
        return np.minimum(t, c), t <= c, x

    rng = np.random.default_rng(2024)
    t1, e1, x1 = cohort(rng, 4_000_000)
    t2, e2, x2 = cohort(rng, 4_000_000)
    # A pair is comparable when the earlier time is an event (continuous times: no ties).
    first_is_1 = t1 < t2
    comparable = np.where(first_is_1, e1, e2)
    concordant = np.where(first_is_1, x1 > x2, x2 > x1)
    truth = concordant[comparable].mean()

    covered = 0
    for _ in range(reps):
        time, event, risk = cohort(rng, n)
        result = bootstrap_c_index(time, event, risk, rng=rng, n_resamples=500)
        covered += result.ci_low <= truth <= result.ci_high
    coverage = covered / reps
    print(f"coverage {coverage:.3f}, true C-index {truth:.4f}")
    assert 0.91 <= coverage <= 0.985, f"coverage {coverage:.3f} (truth {truth:.4f})"
