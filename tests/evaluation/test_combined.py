"""Combined Cox model: coefficients and the likelihood-ratio test against statsmodels PHReg."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.duration.hazard_regression import PHReg

from hcc_exp.evaluation.combined import clinical_design, fit_combined_model
from tests.evaluation.synthetic import synthetic_predictions_and_labels


@pytest.fixture(scope="module")
def train_rows():
    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=80, seed=11)
    keep = labels["split"] == "train"
    return predictions[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)


def test_lr_test_matches_statsmodels(train_rows):
    predictions, labels = train_rows
    design = clinical_design(labels)
    model = fit_combined_model(predictions["os_risk"], labels["os_time_days"], labels["os_event"], design)
    x_clin = design[["bclc", "log10_afp"]].to_numpy(float)
    x_full = np.column_stack([x_clin, predictions["os_risk"].to_numpy(float)])
    time, event = labels["os_time_days"].to_numpy(float), labels["os_event"].to_numpy(float)
    full = PHReg(time, x_full, status=event, ties="efron").fit()
    clin = PHReg(time, x_clin, status=event, ties="efron").fit()
    np.testing.assert_allclose(list(model.coefficients.values()), full.params, atol=1e-6)
    np.testing.assert_allclose(list(model.clinical_coefficients.values()), clin.params, atol=1e-6)
    assert model.log_likelihood == pytest.approx(full.llf, abs=1e-6)
    lr = 2 * (full.llf - clin.llf)
    assert model.lr_statistic == pytest.approx(lr, abs=1e-6)
    assert model.lr_p == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-6)
    assert model.lr_p < 0.01  # the network's risk carries the latent signal
    lp = model.linear_predictor(design.assign(network_risk=predictions["os_risk"]))
    np.testing.assert_allclose(lp, x_full @ full.params, atol=1e-5)


def test_missing_values_are_complete_case(train_rows):
    predictions, labels = train_rows
    labels = labels.copy()
    labels.loc[:9, "afp_ng_ml"] = np.nan
    model = fit_combined_model(predictions["os_risk"], labels["os_time_days"], labels["os_event"], clinical_design(labels))
    assert model.n_train == len(labels) - 10


def test_constant_stage_is_not_estimable(train_rows):
    predictions, labels = train_rows
    labels = labels.assign(bclc="A")
    result = fit_combined_model(predictions["os_risk"], labels["os_time_days"], labels["os_event"], clinical_design(labels))
    assert not result and "bclc" in result.reason
