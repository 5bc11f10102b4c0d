"""Real survival data sets shipped with scikit-survival and lifelines (offline), as plain arrays."""

from __future__ import annotations

import numpy as np
import pytest


def _sksurv_arrays(loader, event_field: str, time_field: str, risk_column: str, decimals: int):
    X, y = loader()
    time = np.ascontiguousarray(y[time_field], dtype=float)
    event = np.ascontiguousarray(y[event_field], dtype=bool)
    # A coarsely rounded covariate as the risk score, so ties in risk are frequent.
    risk = np.round(X[risk_column].to_numpy(dtype=float), decimals)
    return time, event, risk


@pytest.fixture(scope="session")
def gbsg2():
    from sksurv.datasets import load_gbsg2

    return _sksurv_arrays(load_gbsg2, "cens", "time", "tsize", -1)


@pytest.fixture(scope="session")
def whas500():
    from sksurv.datasets import load_whas500

    return _sksurv_arrays(load_whas500, "fstat", "lenfol", "age", -1)


@pytest.fixture(scope="session")
def veterans():
    from sksurv.datasets import load_veterans_lung_cancer

    time, event, _ = _sksurv_arrays(
        load_veterans_lung_cancer, "Status", "Survival_in_days", "Age_in_years", 0
    )
    X, _ = load_veterans_lung_cancer()
    # Karnofsky score: high = fit, so its negative is a risk; steps of 10 give many ties.
    return time, event, -X["Karnofsky_score"].to_numpy(dtype=float)


@pytest.fixture(scope="session", params=["gbsg2", "whas500", "veterans"])
def real_survival(request):
    """(time, event, tied risk) of GBSG2, WHAS500 or the veterans' lung cancer trial."""
    return request.param, request.getfixturevalue(request.param)
