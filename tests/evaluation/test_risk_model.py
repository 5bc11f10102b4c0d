"""The risk model of ``hcc-exp predict``: median cut-offs and Breslow survival, checked against lifelines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi

from hcc_exp.errors import RunFolderError
from hcc_exp.evaluation.risk_model import RiskModel, fit_risk_model


@pytest.fixture(scope="module")
def rossi_run():
    """Rossi recidivism data (lifelines, real): a Cox model's linear predictor as both heads' risk."""
    rossi = load_rossi()
    cph = CoxPHFitter().fit(rossi, duration_col="week", event_col="arrest")
    log_risk = np.log(cph.predict_partial_hazard(rossi).to_numpy())
    n = len(rossi)
    ids = [f"R{i:03d}" for i in range(n)]
    # Every 4th patient goes to the internal split and must not influence the fit.
    split = np.where(np.arange(n) % 4 == 3, "internal", "train")
    predictions = pd.DataFrame({"patient_id": ids, "split": split, "os_risk": log_risk, "rfs_risk": 0.5 * log_risk})
    labels = pd.DataFrame(
        {
            "patient_id": ids,
            "os_time_days": rossi["week"].to_numpy(float),
            "os_event": rossi["arrest"].to_numpy(int),
            "rfs_time_days": rossi["week"].to_numpy(float),
            "rfs_event": rossi["arrest"].to_numpy(int),
        }
    )
    return rossi, predictions, labels


def test_cutoffs_are_the_training_medians(rossi_run):
    _, predictions, labels = rossi_run
    model = fit_risk_model(predictions, labels, horizons_days=(20, 40))
    train = predictions[predictions["split"] == "train"]
    assert model.os.cutoff == pytest.approx(np.median(train["os_risk"]))
    assert model.rfs.cutoff == pytest.approx(np.median(train["rfs_risk"]))
    assert model.n_train == len(train)
    groups = model.os.risk_group(train["os_risk"].to_numpy())
    assert set(groups) == {"high", "low"}
    assert (groups == "high").sum() <= len(train) / 2  # high risk = strictly above the median


def test_survival_matches_lifelines_on_the_training_patients(rossi_run):
    rossi, predictions, labels = rossi_run
    train_mask = (predictions["split"] == "train").to_numpy()
    train = rossi[train_mask]
    # lifelines fitted on the training rows: its linear predictor and its (Breslow) baseline.
    ref = CoxPHFitter().fit(train, duration_col="week", event_col="arrest")
    lp = np.log(ref.predict_partial_hazard(train).to_numpy())
    run = predictions.copy()
    run.loc[train_mask, "os_risk"] = lp
    model = fit_risk_model(run, labels, horizons_days=(20, 40))
    expected = ref.predict_survival_function(train, times=[20, 40]).to_numpy().T
    np.testing.assert_allclose(model.os.survival(lp, (20, 40)), expected, rtol=1e-6)
    # Survival falls with risk and with time.
    surv = model.os.survival([-1.0, 0.0, 1.0], (20, 40))
    assert np.all(np.diff(surv, axis=0) < 0) and np.all(np.diff(surv, axis=1) < 0)


def test_risk_model_round_trips_through_json(rossi_run, tmp_path):
    _, predictions, labels = rossi_run
    model = fit_risk_model(predictions, labels, horizons_days=(20, 40))
    path = model.save(tmp_path / "checkpoints" / "risk_model.json")
    json.loads(path.read_text())  # strict JSON (no NaN)
    loaded = RiskModel.load(path)
    risks = np.array([-1.0, 0.0, 0.7])
    for name in ("os", "rfs"):
        np.testing.assert_allclose(loaded.endpoint(name).survival(risks, (20, 40)), model.endpoint(name).survival(risks, (20, 40)))
        assert loaded.endpoint(name).cutoff == model.endpoint(name).cutoff
    assert loaded.horizons_days == (20, 40)
    # Beyond the training follow-up (52 weeks) survival is not estimable.
    assert np.isnan(loaded.os.survival([0.0], (60,))).all()


def test_no_training_events_leaves_survival_undefined(rossi_run):
    _, predictions, labels = rossi_run
    censored = labels.assign(rfs_event=0)
    model = fit_risk_model(predictions, censored, horizons_days=(20,))
    assert model.rfs.baseline is None and "no events" in model.rfs.reason
    assert np.isnan(model.rfs.survival([0.0], (20,))).all()
    assert np.isfinite(model.os.survival([0.0], (20,))).all()


def test_missing_training_rows_or_labels_are_named(rossi_run):
    _, predictions, labels = rossi_run
    with pytest.raises(RunFolderError, match="'train'"):
        fit_risk_model(predictions.assign(split="internal"), labels, (20,))
    with pytest.raises(RunFolderError, match="without labels"):
        fit_risk_model(predictions, labels.iloc[5:], (20,))


def test_doctests():
    import doctest

    from hcc_exp.evaluation import risk_model

    result = doctest.testmod(risk_model)
    assert result.failed == 0 and result.attempted >= 1


def test_fit_endpoint_risk_model_by_hand():
    """Three patients, risks 0, 1, 2, all with events at days 5, 3, 1 (highest risk first).

    Risk sets: at t=1 everyone (e^0 + e^1 + e^2), at t=3 patients 0 and 1 (e^0 + e^1), at t=5
    patient 0 (e^0). H0(t) = sum of 1 / risk-set sums, S(t | r) = exp(-H0(t) e^r).
    """
    from hcc_exp.evaluation.risk_model import fit_endpoint_risk_model

    model = fit_endpoint_risk_model([0.0, 1.0, 2.0], [5.0, 3.0, 1.0], [1, 1, 1])
    e = np.e
    h0 = {1.0: 1 / (1 + e + e**2), 3.0: 1 / (1 + e + e**2) + 1 / (1 + e), 5.0: 1 / (1 + e + e**2) + 1 / (1 + e) + 1.0}
    for t, hazard in h0.items():
        np.testing.assert_allclose(model.survival([0.0, 1.0], [t])[:, 0], np.exp(-hazard * np.exp([0.0, 1.0])), rtol=1e-12)
    assert model.cutoff == 1.0 and model.risk_group([1.0, 1.0001]).tolist() == ["low", "high"]
    assert np.isnan(model.survival([0.0], [6.0])).all()  # beyond the last training time
    none = fit_endpoint_risk_model([0.0, 1.0], [5.0, 3.0], [0, 0])
    assert none.baseline is None and "no events" in none.reason and "no events" in none.breslow.reason
