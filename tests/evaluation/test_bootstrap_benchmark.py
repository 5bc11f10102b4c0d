"""The vectorised bootstrap (1,000 resamples x 400 patients) against a loop of sksurv calls on the same resamples.

Timings belong to ``benchmarks/bench_bootstrap.py`` (which writes the side-by-side ratio to JSON);
this test checks only that the numbers are the reference library's.
"""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored

from hcc_exp.evaluation.concordance import bootstrap_c_index


@pytest.mark.slow
def test_vectorised_bootstrap_1000_x_400_equals_sksurv_loop_and_its_interval():
    rng = np.random.default_rng(11)
    n = 400
    x = rng.normal(size=n)
    event_time = np.round(rng.exponential(365 * np.exp(-x)))
    censor_time = np.round(rng.uniform(30, 1500, n))
    time_days = np.minimum(event_time, censor_time)
    event = event_time <= censor_time
    risk = np.round(x, 1)  # tied risks

    result = bootstrap_c_index(time_days, event, risk, rng=np.random.default_rng(0), n_resamples=1000)
    loop = np.array(
        [concordance_index_censored(event[i], time_days[i], risk[i])[0] for i in result.resample_indices]
    )
    np.testing.assert_allclose(result.resample_estimates, loop, atol=1e-9)
    # The reported interval is the 2.5 / 97.5 percentile of the reference's own resample C-indices.
    low, high = np.percentile(loop, [2.5, 97.5])
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-9)
    assert result.estimate == pytest.approx(concordance_index_censored(event, time_days, risk)[0], abs=1e-12)
    assert result.n_valid == 1000
