"""Clinical baselines: ordinal encoding, univariate C-index against sksurv, paired comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from hcc_exp.errors import InvalidValueError
from hcc_exp.evaluation.baselines import BaselineComparison, compare_with_baselines, encode_baselines
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.concordance import bootstrap_indices


def _labels(**overrides) -> pd.DataFrame:
    base = {
        "patient_id": ["a", "b", "c", "d", "e"],
        "bclc": ["0", "A", "B", "C", "D"],
        "tnm": ["I", "II", "III", "IV", "ii"],
        "afp_ng_ml": [1.0, 20.0, np.nan, 400.0, 5.0],
        "tumour_size_mm": [10.0, 20.0, 30.0, 40.0, 50.0],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_stages_are_ordinal_and_missing_values_nan():
    enc = encode_baselines(_labels())
    assert enc["bclc"].tolist() == [0, 1, 2, 3, 4]
    assert enc["tnm"].tolist() == [1, 2, 3, 4, 2]
    assert np.isnan(enc["afp"].iloc[2])
    # A BCLC column holding only stage 0 is read by pandas as numbers.
    only_zero = encode_baselines(_labels(bclc=[0, 0.0, "0", None, "A"]))
    assert only_zero["bclc"].iloc[:3].tolist() == [0, 0, 0] and np.isnan(only_zero["bclc"].iloc[3])


def test_unknown_stage_names_patient_and_column():
    with pytest.raises(InvalidValueError) as info:
        encode_baselines(_labels(tnm=["I", "II", "V", "IV", "I"]))
    assert info.value.patient_id == "c" and info.value.column == "tnm"


def test_baseline_c_index_and_difference_match_sksurv(whas500):
    time, event, model_risk = whas500
    rng = np.random.default_rng(0)
    stage = np.clip(np.round(model_risk / 20 + rng.normal(size=time.size)), 0, 4).astype(int)
    afp = np.exp(rng.normal(size=time.size))
    afp[:40] = np.nan
    labels = pd.DataFrame(
        {
            "patient_id": [str(i) for i in range(time.size)],
            "bclc": np.array(list("0ABCD"))[stage],
            "tnm": np.array(["I", "II", "III", "IV", "IV"])[stage],
            "afp_ng_ml": afp,
            "tumour_size_mm": rng.uniform(10, 80, time.size),
        }
    )
    baselines = encode_baselines(labels)
    indices = bootstrap_indices(time.size, 30, np.random.default_rng(1))
    out = compare_with_baselines(time, event, model_risk, baselines, indices, np.random.default_rng(2))
    for key in ("bclc", "tnm", "tumour_size"):
        res = out[key]
        assert isinstance(res, BaselineComparison) and res.n == time.size
        assert res.result.resample_indices is indices
        score = baselines[key].to_numpy()
        c_base = concordance_index_censored(event, time, score)[0]
        c_model = concordance_index_censored(event, time, model_risk)[0]
        assert res.result.baseline.estimate == pytest.approx(c_base, abs=1e-12)
        assert res.result.estimate == pytest.approx(c_model - c_base, abs=1e-12)
    afp_res = out["afp"]
    known = np.isfinite(afp)
    assert afp_res.n == known.sum()
    assert afp_res.result.model.estimate == pytest.approx(
        concordance_index_censored(event[known], time[known], model_risk[known])[0], abs=1e-12
    )


def test_baseline_missing_everywhere_is_not_estimable():
    labels = _labels(afp_ng_ml=[np.nan] * 5)
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([1, 1, 0, 1, 0])
    out = compare_with_baselines(
        time,
        event,
        np.arange(5.0),
        encode_baselines(labels),
        bootstrap_indices(5, 10, np.random.default_rng(0)),
        np.random.default_rng(1),
    )
    assert isinstance(out["afp"], NotEstimable)
    assert isinstance(out["bclc"], BaselineComparison)
