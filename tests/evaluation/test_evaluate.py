"""The orchestrator on a synthetic run folder: every table, figure and metric key, and no crash on a dead split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from hcc_exp.config import EvaluationConfig
from hcc_exp.errors import RunFolderError
from hcc_exp.evaluation.evaluate import _run_config, evaluate_predictions, evaluate_run, merge_predictions
from tests.evaluation.synthetic import synthetic_predictions_and_labels

FAST_DCA = (0.1, 0.5)
TABLES = ("table_a_mvi", "table_b_survival", "table_4_baselines")
FIGURES = (
    "km_os",
    "km_rfs",
    "roc_os",
    "roc_rfs",
    "roc_mvi",
    "calibration_os",
    "calibration_rfs",
    "reliability_mvi",
    "dca_os",
    "dca_rfs",
    "dca_mvi",
)


def write_run_folder(
    root: Path, predictions: pd.DataFrame, labels: pd.DataFrame, oracle: pd.DataFrame
) -> Path:
    """A finished run as ``train`` leaves it: meta.json naming a cache (manifest + labels) and a cohort with oracle.csv."""
    cache = root / "data" / "preprocessed" / "k1"
    cache.mkdir(parents=True)
    (cache / "manifest.json").write_text(
        json.dumps({"cache_key": "k1", "phases": ["arterial", "portal", "delayed"]})
    )
    labels.to_csv(cache / "labels.csv", index=False)
    cohort = root / "data" / "raw"
    cohort.mkdir(parents=True)
    oracle.to_csv(cohort / "oracle.csv", index=False)
    run = root / "runs" / "r1"
    run.mkdir(parents=True)
    # Relative paths, as train records them from the project root (not the test's working directory).
    meta = {"run_id": "r1", "cache_dir": "data/preprocessed/k1", "cohort_dir": "data/raw"}
    (run / "meta.json").write_text(json.dumps(meta))
    predictions.to_csv(run / "predictions.csv", index=False)
    return run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    predictions, labels, oracle = synthetic_predictions_and_labels(n_per_split=30, seed=0)
    run = write_run_folder(tmp_path_factory.mktemp("eval"), predictions, labels, oracle)
    cfg = EvaluationConfig(bootstrap_resamples=200, seed=5)
    result = evaluate_run(run, cfg, dca_thresholds=FAST_DCA, show_progress=False)
    return run, result, predictions, labels, oracle


def test_every_table_and_figure_is_written(evaluated):
    run, *_ = evaluated
    out = run / "evaluation"
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
        assert (out / "tables" / f"{name}.md").read_text().startswith("## Table")
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert len(pd.read_csv(out / "tables" / "table_a_mvi.csv")) == 3
    assert len(pd.read_csv(out / "tables" / "table_b_survival.csv")) == 6
    assert set(pd.read_csv(out / "tables" / "table_4_baselines.csv")["predictor"]) == {
        "model",
        "bclc",
        "tnm",
        "afp",
        "tumour_size",
    }


def test_metric_keys_and_values(evaluated):
    run, result, predictions, labels, _ = evaluated
    written = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert written == {k: v for k, v in result.items() if isinstance(v, float)}
    for split in ("train", "internal", "external"):
        for endpoint in ("os", "rfs"):
            p = f"{split}/{endpoint}"
            for metric in (
                "c_index",
                "c_index_ci_low",
                "c_index_ci_high",
                "c_index_torchsurv",
                "auc_365d",
                "hr",
                "hr_ci_low",
                "hr_ci_high",
                "logrank_p",
                "oracle_c_index",
                "oracle_share",
                "baseline/bclc/c_index",
                "baseline/tnm/c_index",
                "baseline/afp/diff",
                "baseline/tumour_size/diff_ci_low",
            ):
                assert isinstance(result[f"{p}/{metric}"], float), (
                    f"{p}/{metric}: {result.get(f'{p}/{metric}')}"
                )
        for metric in ("f1", "auc", "accuracy", "sensitivity", "specificity", "brier", "oracle_share"):
            assert isinstance(result[f"{split}/mvi/{metric}"], float)
    ext = labels[labels["split"] == "external"].merge(predictions, on=["patient_id", "split"])
    reference = concordance_index_censored(ext["os_event"].astype(bool), ext["os_time_days"], ext["os_risk"])[
        0
    ]
    assert result["external/os/c_index"] == pytest.approx(reference, abs=1e-12)
    assert result["external/os/c_index_torchsurv"] == pytest.approx(reference, abs=1e-9)
    assert result["external/os/c_index_ci_low"] < reference < result["external/os/c_index_ci_high"]
    share = (result["external/os/c_index"] - 0.5) / (result["external/os/oracle_c_index"] - 0.5)
    assert result["external/os/oracle_share"] == pytest.approx(share)
    # The simulated signal is strong: the model beats chance and the high-risk group does worse.
    assert result["train/os/c_index"] > 0.6 and result["train/os/hr"] > 1


def test_dead_split_is_reasoned_not_raised(tmp_path):
    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=24, seed=3)
    internal = labels["split"] == "internal"
    labels.loc[internal, ["os_event", "rfs_event"]] = 0
    labels.loc[internal, "mvi"] = 0
    cfg = EvaluationConfig(horizons_days=(365,), bootstrap_resamples=50)
    # Figures with not-estimable panels are covered in test_plots.py; here the numbers and tables.
    result = evaluate_predictions(predictions, labels, cfg, tmp_path, dca_thresholds=(0.3,), figures=False)
    reasons = json.loads((tmp_path / "reasons.json").read_text())
    assert "censored" in reasons["internal/os/c_index"]
    assert "internal/os/auc_365d" in reasons and "internal/os/hr" in reasons
    assert "internal/mvi/auc" in reasons and "internal/mvi/sensitivity" in reasons
    assert result["internal/os/c_index"].startswith("not estimable")
    assert isinstance(result["external/os/c_index"], float)
    table = pd.read_csv(tmp_path / "tables" / "table_b_survival.csv")
    cell = table.loc[
        (table["Cohort"] == "Internal validation") & (table["Endpoint"] == "OS"),
        "C-index (95% CI, bootstrap)",
    ]
    assert cell.iloc[0].startswith("n/e (no events")
    assert not (tmp_path / "figures").exists()


def test_bad_predictions_name_the_problem():
    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=4)
    with pytest.raises(RunFolderError, match="mvi_prob"):
        merge_predictions(predictions.drop(columns=["mvi_prob"]), labels)
    unknown = predictions.copy()
    unknown.loc[0, "patient_id"] = "NOPE"
    with pytest.raises(RunFolderError, match="NOPE"):
        merge_predictions(unknown, labels)
    broken = predictions.copy()
    broken.loc[3, "os_risk"] = np.nan
    with pytest.raises(RunFolderError, match="P003"):
        merge_predictions(broken, labels)
    moved = predictions.copy()
    moved.loc[0, "split"] = "external"
    with pytest.raises(RunFolderError, match="different split"):
        merge_predictions(moved, labels)


def test_run_folder_without_meta_is_refused(tmp_path):
    with pytest.raises(RunFolderError, match="meta.json"):
        evaluate_run(tmp_path)


def test_run_config_supplies_evaluation_settings(tmp_path):
    assert _run_config(tmp_path) == EvaluationConfig()
    (tmp_path / "config.yaml").write_text("evaluation:\n  horizons_days: [400]\n  seed: 9\n")
    cfg = _run_config(tmp_path)
    assert cfg.horizons_days == (400,) and cfg.seed == 9
    (tmp_path / "config.yaml").write_text("evaluation:\n  horizon_days: [400]\n")
    with pytest.raises(RunFolderError, match="horizon_days"):
        _run_config(tmp_path)


def _perfectly_ordered_external(n_per_split: int = 12) -> tuple[pd.DataFrame, pd.DataFrame]:
    """External OS risk = -time on distinct times: every comparable pair is concordant, C = 1 exactly."""
    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=n_per_split, seed=4)
    external = (labels["split"] == "external").to_numpy()
    labels.loc[external, "os_time_days"] = 100.0 + 50.0 * np.arange(external.sum())
    labels.loc[external, "os_event"] = [1, 0] * (external.sum() // 2)
    predictions.loc[external, "os_risk"] = -labels.loc[external, "os_time_days"].to_numpy()
    return predictions, labels


def test_c_index_of_exactly_one_is_not_estimable_for_torchsurv_not_a_crash(tmp_path):
    # issue 13 item 4: torchsurv raises "standard error ... must be a positive value" at C = 1.
    predictions, labels = _perfectly_ordered_external()
    part = labels[labels["split"] == "external"]
    event, time = part["os_event"].astype(bool).to_numpy(), part["os_time_days"].to_numpy(float)
    risk = predictions.loc[part.index, "os_risk"].to_numpy(float)
    assert concordance_index_censored(event, time, risk)[0] == 1.0  # the reference says C = 1
    cfg = EvaluationConfig(horizons_days=(365,), bootstrap_resamples=50)
    result = evaluate_predictions(predictions, labels, cfg, tmp_path / "evaluation", dca_thresholds=(0.3,), figures=False)
    assert result["external/os/c_index"] == 1.0
    assert result["external/os/c_index_torchsurv"] == 1.0
    reasons = json.loads((tmp_path / "evaluation" / "reasons.json").read_text())
    for bound in ("low", "high"):
        assert "interval undefined at C = 1" in reasons[f"external/os/c_index_torchsurv_ci_{bound}"]
    table = pd.read_csv(tmp_path / "evaluation" / "tables" / "table_b_survival.csv")
    row = table[(table["Cohort"] == "External test") & (table["Endpoint"] == "OS")].iloc[0]
    assert row.filter(like="Noether").iloc[0] == "1.000"  # the estimate, no interval


def test_evaluation_folder_is_replaced_atomically(tmp_path, monkeypatch):
    import hcc_exp.evaluation.evaluate as evaluate_module

    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=12, seed=1)
    cfg = EvaluationConfig(horizons_days=(365,), bootstrap_resamples=20)
    out = tmp_path / "evaluation"

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while writing the tables")

    monkeypatch.setattr(evaluate_module, "write_tables", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate_predictions(predictions, labels, cfg, out, dca_thresholds=(0.3,), figures=False)
    assert list(tmp_path.iterdir()) == []  # no evaluation/, no staging folder left behind
    monkeypatch.undo()

    evaluate_predictions(predictions, labels, cfg, out, dca_thresholds=(0.3,), figures=False)
    before = (out / "metrics.json").read_bytes()
    (out / "stale.txt").write_text("from an older evaluation")
    monkeypatch.setattr(evaluate_module, "write_tables", broken)
    with pytest.raises(RuntimeError):
        evaluate_predictions(predictions, labels, cfg, out, dca_thresholds=(0.3,), figures=False)
    assert (out / "metrics.json").read_bytes() == before and (out / "stale.txt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation"]
    monkeypatch.undo()
    evaluate_predictions(predictions, labels, cfg, out, dca_thresholds=(0.3,), figures=False)
    assert not (out / "stale.txt").exists()  # a successful evaluation replaces the whole folder
