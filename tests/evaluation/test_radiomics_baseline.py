"""The radiomics baseline: features from a real cache, penalised models fitted on train only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from hcc_exp.evaluation.radiomics_baseline import extract_cohort_features, fit_radiomics_models
from hcc_exp.evaluation.survival import survival_array
from tests.evaluation.synthetic import synthetic_predictions_and_labels


@pytest.fixture(scope="module")
def features_and_labels():
    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=60, seed=5)
    rng = np.random.default_rng(0)
    n = len(labels)
    # the model's noisy view of the latent risk as one informative feature, 20 noise features,
    # one constant (dropped) and one with missing values (imputed)
    informative = predictions["os_risk"].to_numpy() / 1.2
    features = pd.DataFrame({"patient_id": labels["patient_id"], "portal_tumour_signal": informative})
    for k in range(20):
        features[f"noise_{k}"] = rng.normal(size=n)
    features["constant"] = 1.0
    features["gappy"] = np.where(rng.uniform(size=n) < 0.2, np.nan, rng.normal(size=n))
    return features, labels


def test_models_find_the_signal(features_and_labels):
    features, labels = features_and_labels
    models = fit_radiomics_models(features, labels, seed=0)
    assert "constant" not in models.standardiser.columns and "gappy" in models.standardiser.columns
    scores = models.predict(features).merge(labels, on="patient_id")
    external = scores[scores["split"] == "external"]
    c = concordance_index_censored(external["os_event"].astype(bool), external["os_time_days"], external["os_risk"])[0]
    assert c > 0.65
    assert roc_auc_score(external["mvi"], external["mvi_prob"]) > 0.65
    cox = models.cox["os"]
    top = models.standardiser.columns[int(np.argmax(np.abs(cox.coef_)))]
    assert top == "portal_tumour_signal"
    assert models.details["os_n_nonzero"] < len(models.standardiser.columns)


def test_fitted_on_train_only(features_and_labels):
    features, labels = features_and_labels
    models = fit_radiomics_models(features, labels, seed=0)
    # the same Coxnet at the chosen alpha, fitted by hand on the training rows' z-scores
    train_ids = set(labels.loc[labels["split"] == "train", "patient_id"])
    train = features[features["patient_id"].isin(train_ids)].merge(labels, on="patient_id")
    x = train[models.standardiser.columns].to_numpy(float)
    median = np.nanmedian(x, axis=0)
    x = np.where(np.isfinite(x), x, median)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    ref = CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=[models.details["os_alpha"]], max_iter=100_000).fit(
        z, survival_array(train["os_time_days"], train["os_event"])
    )
    np.testing.assert_allclose(models.cox["os"].coef_.ravel(), ref.coef_.ravel(), atol=1e-8)
    # changing the internal / external patients' features changes nothing fitted
    shuffled = features.copy()
    others = ~shuffled["patient_id"].isin(train_ids)
    shuffled.loc[others, "noise_0"] = 100.0
    again = fit_radiomics_models(shuffled, labels, seed=0)
    np.testing.assert_allclose(again.cox["os"].coef_, models.cox["os"].coef_)


def test_too_few_events_carry_a_reason(features_and_labels):
    features, labels = features_and_labels
    labels = labels.copy()
    labels.loc[labels["split"] == "train", "rfs_event"] = 0
    labels.loc[labels["split"] == "train", "os_event"] = 0
    models = fit_radiomics_models(features, labels, seed=0)
    assert isinstance(models.cox["os"], str) and "training events" in models.cox["os"]
    assert models.predict(features)["os_risk"].isna().all()


def test_features_from_a_preprocessed_cache(trained_run):
    from hcc_exp.run_folder import RunFolder

    cache = RunFolder(trained_run.run_dir).open_cache()
    ids = cache.patient_ids()[:2]
    frame = extract_cohort_features(cache, ids)
    assert frame["patient_id"].tolist() == ids
    assert {"arterial_tumour_first_mean", "delayed_margin_glcm_contrast", "portal_tumour_hist_entropy"} <= set(frame.columns)
    image, masks = cache.load(ids[0])
    tumour = masks[1, 2] > 0  # portal phase, tumour region
    assert frame.loc[0, "portal_tumour_first_mean"] == pytest.approx(float(np.asarray(image[1], dtype=np.float32)[tumour].mean()), rel=1e-6)
