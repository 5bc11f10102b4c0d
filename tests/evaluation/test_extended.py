"""The extended evaluation step: keys, values against references, tables, reasons."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import brier_score, concordance_index_censored
from statsmodels.duration.hazard_regression import PHReg

from hcc_exp.config import EvaluationConfig
from hcc_exp.evaluation.combined import clinical_design
from hcc_exp.evaluation.extended import bootstrap_auc_values, extended_metrics
from hcc_exp.evaluation.survival import fit_breslow, survival_array
from hcc_exp.vocabulary import parse_metric_key
from tests.evaluation.synthetic import synthetic_predictions_and_labels

CFG = EvaluationConfig(bootstrap_resamples=200, seed=3)


@pytest.fixture(scope="module")
def result():
    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=60, seed=2)
    labels = labels.copy()
    labels["institution"] = np.where(labels["split"] == "internal", np.where(np.arange(len(labels)) % 2, "II", "III"), labels["institution"])
    return predictions, labels, extended_metrics(predictions, labels, None, None, CFG)


def test_keys_follow_the_vocabulary(result):
    _, _, (metrics, reasons, _) = result
    for key in [*metrics, *reasons]:
        parse_metric_key(key)
    assert "external/os/integrated_brier" in metrics
    assert "internal/rfs/calibration_slope_730d" in metrics
    assert reasons["external/os/radiomics_c_index"] == "no preprocessed cache given"


def test_subgroup_values_match_sksurv(result):
    predictions, labels, (metrics, _, tables) = result
    data = predictions.merge(labels.drop(columns="split"), on="patient_id")
    part = data[(data["split"] == "internal") & (data["institution"] == "III")]
    expected = concordance_index_censored(part["os_event"].astype(bool), part["os_time_days"], part["os_risk"])[0]
    assert metrics["internal/os/subgroup_institution_III_c_index"] == pytest.approx(expected, abs=1e-12)
    assert metrics["internal/os/subgroup_institution_III_n"] == len(part)
    sex = data[(data["split"] == "external") & (data["sex"] == "F")]
    expected = concordance_index_censored(sex["rfs_event"].astype(bool), sex["rfs_time_days"], sex["rfs_risk"])[0]
    assert metrics["external/rfs/subgroup_sex_F_c_index"] == pytest.approx(expected, abs=1e-12)
    assert {"split", "endpoint", "variable", "level", "n", "events"} <= set(tables["subgroups"].columns)


def test_brier_matches_sksurv_with_the_training_breslow(result):
    predictions, labels, (metrics, _, _) = result
    data = predictions.merge(labels.drop(columns="split"), on="patient_id")
    train, test = data[data["split"] == "train"], data[data["split"] == "external"]
    baseline = fit_breslow(train["os_risk"], train["os_time_days"], train["os_event"])
    _, scores = brier_score(
        survival_array(train["os_time_days"], train["os_event"]),
        survival_array(test["os_time_days"], test["os_event"]),
        baseline.survival(test["os_risk"], [365, 730]),
        [365, 730],
    )
    assert metrics["external/os/brier_365d"] == pytest.approx(scores[0], rel=1e-12)
    assert metrics["external/os/brier_730d"] == pytest.approx(scores[1], rel=1e-12)


def test_combined_lr_matches_statsmodels(result):
    predictions, labels, (metrics, _, tables) = result
    data = predictions.merge(labels.drop(columns="split"), on="patient_id")
    train = data[data["split"] == "train"].reset_index(drop=True)
    x_clin = clinical_design(train).to_numpy(float)
    x_full = np.column_stack([x_clin, train["os_risk"]])
    t, e = train["os_time_days"].to_numpy(float), train["os_event"].to_numpy(float)
    lr = 2 * (PHReg(t, x_full, status=e, ties="efron").fit().llf - PHReg(t, x_clin, status=e, ties="efron").fit().llf)
    assert metrics["train/os/combined_lr_statistic"] == pytest.approx(lr, abs=1e-6)
    assert 0 < metrics["external/os/combined_c_index"] < 1
    table = tables["table_3b_survival_baselines"]
    assert table["Predictor"].tolist()[1:] == ["Clinical Cox (BCLC + AFP)", "Combined Cox (DL risk + BCLC + AFP)"]
    assert "n/e (no preprocessed cache given)" in table.iloc[0, 1]


def test_bootstrap_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.normal(size=40) + y, 1)  # ties
    indices = rng.integers(0, 40, size=(50, 40))
    ours = bootstrap_auc_values(y, s, indices)
    expected = [roc_auc_score(y[i], s[i]) if len(set(y[i])) == 2 else np.nan for i in indices]
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_with_a_cache_and_risk_model(trained_run):
    """The tiny run: radiomics not estimable (too few training events) with a reason, no crash."""
    import pandas as pd

    from hcc_exp.evaluation.risk_model import RiskModel
    from hcc_exp.run_folder import RunFolder

    run = RunFolder(trained_run.run_dir)
    cache = run.open_cache()
    predictions = pd.read_csv(run.predictions_csv, dtype={"patient_id": str})
    risk_model = RiskModel.load(run.risk_model_json)
    metrics, reasons, tables = extended_metrics(predictions, cache.labels, cache, risk_model, CFG)
    assert "radiomics_features" in tables and len(tables["radiomics_features"]) == len(predictions)
    assert any(k.endswith("radiomics_c_index") for k in reasons)
    assert any("subgroup" in k for k in [*metrics, *reasons])


def test_evaluate_run_merges_the_extended_statistics(tmp_path):
    import json

    from hcc_exp.evaluation.evaluate import evaluate_run
    from tests.evaluation.test_evaluate import write_run_folder

    predictions, labels, oracle = synthetic_predictions_and_labels(n_per_split=30, seed=0)
    run = write_run_folder(tmp_path, predictions, labels, oracle)
    result = evaluate_run(run, CFG, dca_thresholds=(0.1, 0.5), show_progress=False)
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    reasons = json.loads((run / "evaluation" / "reasons.json").read_text())
    assert "external/os/c_index" in metrics and "external/os/integrated_brier" in metrics
    assert "internal/rfs/calibration_slope_365d" in metrics
    assert "holds no volumes" in reasons["external/os/radiomics_c_index"]
    assert result["external/os/integrated_brier"] == metrics["external/os/integrated_brier"]
    for name in ("table_3a_mvi_baselines", "table_3b_survival_baselines", "subgroups", "calibration_brier", "combined_model"):
        assert (run / "evaluation" / "tables" / f"{name}.csv").is_file()
