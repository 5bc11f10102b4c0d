"""Benchmark: the vectorised bootstrap (1,000 resamples x 400 patients) against a loop of sksurv calls."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored

from hcc_exp.evaluation.concordance import bootstrap_c_index


@pytest.mark.slow
def test_vectorised_bootstrap_1000_x_400_is_fast_and_equals_sksurv_loop():
    rng = np.random.default_rng(11)
    n = 400
    x = rng.normal(size=n)
    event_time = np.round(rng.exponential(365 * np.exp(-x)))
    censor_time = np.round(rng.uniform(30, 1500, n))
    time_days = np.minimum(event_time, censor_time)
    event = event_time <= censor_time
    risk = np.round(x, 1)  # tied risks

    start = time.perf_counter()
    result = bootstrap_c_index(time_days, event, risk, rng=np.random.default_rng(0), n_resamples=1000)
    vectorised_s = time.perf_counter() - start

    start = time.perf_counter()
    loop = np.array(
        [concordance_index_censored(event[i], time_days[i], risk[i])[0] for i in result.resample_indices]
    )
    loop_s = time.perf_counter() - start

    print(
        f"1000 x {n}: vectorised {vectorised_s:.3f} s, sksurv loop {loop_s:.2f} s ({loop_s / vectorised_s:.0f}x)"
    )
    np.testing.assert_allclose(result.resample_estimates, loop, atol=1e-9)
    assert vectorised_s < 1.0
