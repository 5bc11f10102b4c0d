"""Ablation table on a fake sweep folder: 3 arms x 3 seeds, 60 patients, planted arm quality."""

from __future__ import annotations

import json
import math
import shutil

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import stats
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored
from statsmodels.stats.multitest import multipletests

from hcc_exp.errors import SweepError
from hcc_exp.reporting.ablation import ROW_COLUMNS, build_ablation_table
from hcc_exp.reporting.sweep_folder import read_sweep
from hcc_exp.reporting.tables import metric_label, render_table, write_ablation_table
from tests.reporting.fake_sweep import write_fake_sweep

ARMS = ("full", "no_jitter", "no_venous")  # planted order, best first
SEEDS = (0, 1, 2)
N_BOOTSTRAP = 500


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_fake_sweep(tmp_path_factory.mktemp("sweeps") / "ablation-demo")


@pytest.fixture(scope="module")
def table(sweep):
    return build_ablation_table(sweep.root, n_bootstrap=N_BOOTSTRAP, seed=0)


def test_table_shape_and_columns(table):
    assert tuple(table.rows.columns) == ROW_COLUMNS
    assert table.arms == ARMS
    assert table.splits == ("train", "internal", "external")
    assert table.metrics == ("os/c_index", "rfs/c_index", "mvi/f1", "mvi/auc")
    assert len(table.rows) == 3 * 4 * 3
    assert any("mvi/accuracy" in note for note in table.notes)  # asked for, reported by no run


@pytest.mark.parametrize("split", ["internal", "external"])
@pytest.mark.parametrize("metric", ["os/c_index", "rfs/c_index", "mvi/f1", "mvi/auc"])
def test_table_ranks_arms_as_planted(table, split, metric):
    ranks = [table.row(split, metric, arm)["rank"] for arm in ARMS]
    assert ranks == [1.0, 2.0, 3.0]


def test_seed_statistics_equal_scipy_on_the_run_metrics(table, sweep):
    key = "external/os/c_index"
    values = {arm: np.array([sweep.metrics[(arm, s)][key] for s in SEEDS]) for arm in ARMS}
    for arm in ARMS:
        row = table.row("external", "os/c_index", arm)
        x = values[arm]
        assert row["mean"] == pytest.approx(x.mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(stats.t.interval(0.95, 2, loc=x.mean(), scale=stats.sem(x)))
        assert row["n_seeds"] == 3
    raw_t = [stats.ttest_rel(values[arm], values["full"]).pvalue for arm in ARMS[1:]]
    raw_w = [stats.wilcoxon(values[arm], values["full"]).pvalue for arm in ARMS[1:]]
    for arm, p_t, p_w, holm_t, holm_w in zip(
        ARMS[1:], raw_t, raw_w, multipletests(raw_t, method="holm")[1], multipletests(raw_w, method="holm")[1], strict=True
    ):
        row = table.row("external", "os/c_index", arm)
        assert row["t_p"] == pytest.approx(p_t)
        assert row["wilcoxon_p"] == pytest.approx(p_w)
        assert row["t_p_holm"] == pytest.approx(holm_t)
        assert row["wilcoxon_p_holm"] == pytest.approx(holm_w)
        assert row["diff_mean"] == pytest.approx((values[arm] - values["full"]).mean())


def test_full_arm_difference_row_is_zero(table):
    for split in table.splits:
        for metric in table.metrics:
            row = table.row(split, metric, "full")
            assert row["is_reference"]
            assert row["diff_mean"] == 0.0 and row["diff_ci_low"] == 0.0 and row["diff_ci_high"] == 0.0
            assert row["test_note"] == "reference arm"
            assert math.isnan(row["t_p"]) and math.isnan(row["t_p_holm"])
            if metric.endswith("c_index"):
                assert (row["boot_diff"], row["boot_ci_low"], row["boot_ci_high"]) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_of_the_worse_arm_excludes_zero(table, sweep):
    for split in ("internal", "external"):
        row = table.row(split, "os/c_index", "no_venous")
        assert row["boot_ci_low"] < row["boot_diff"] < row["boot_ci_high"] < 0
        assert row["boot_n_patients"] == 20 and row["boot_n_seeds"] == 3
        assert 0.95 * N_BOOTSTRAP <= row["boot_n_resamples"] <= N_BOOTSTRAP
    # The bootstrap's point estimate is the mean per-seed Harrell C difference (scikit-survival).
    labels = sweep.labels[sweep.labels["split"] == "external"]
    diffs = []
    for seed in SEEDS:
        c = {}
        for arm in ("no_venous", "full"):
            pred = sweep.predictions[(arm, seed)].set_index("patient_id").loc[labels["patient_id"]]
            c[arm] = concordance_index_censored(
                labels["os_event"].astype(bool).to_numpy(), labels["os_time_days"].to_numpy(float), pred["os_risk"].to_numpy()
            )[0]
        diffs.append(c["no_venous"] - c["full"])
    assert table.row("external", "os/c_index", "no_venous")["boot_diff"] == pytest.approx(np.mean(diffs))
    assert isinstance(table.row("external", "mvi/f1", "no_venous")["boot_note"], str)


def test_paired_auc_bootstrap_of_the_worse_arm(table, sweep):
    row = table.row("internal", "mvi/auc", "no_venous")
    assert row["boot_ci_low"] < row["boot_diff"] < row["boot_ci_high"] < 0
    assert row["boot_n_seeds"] == 3
    # The point estimate is the mean per-seed ROC AUC difference (scikit-learn).
    labels = sweep.labels[sweep.labels["split"] == "internal"]
    diffs = []
    for seed in SEEDS:
        auc = {}
        for arm in ("no_venous", "full"):
            pred = sweep.predictions[(arm, seed)].set_index("patient_id").loc[labels["patient_id"]]
            auc[arm] = roc_auc_score(labels["mvi"].to_numpy(int), pred["mvi_prob"].to_numpy())
        diffs.append(auc["no_venous"] - auc["full"])
    assert row["boot_diff"] == pytest.approx(np.mean(diffs), abs=1e-12)
    assert table.row("internal", "mvi/auc", "full")["boot_diff"] == 0.0


def test_failed_and_pruned_trials_are_counted(table):
    counts = table.trial_counts.set_index("arm")
    assert counts.loc["no_jitter", "fail"] == 1 and counts.loc["no_jitter", "total"] == 4
    assert counts.loc["no_venous", "pruned"] == 1
    assert counts.loc["full", "fail"] == 0
    assert list(counts["seeds_used"]) == [3, 3, 3]
    assert table.row("internal", "os/c_index", "no_jitter")["n_failed"] == 1
    assert table.row("internal", "os/c_index", "no_venous")["n_pruned"] == 1


def test_oracle_share_and_training_metrics_win(table):
    # evaluation/metrics.json sets internal/os/c_index = -1, which must not replace the training value
    assert table.row("internal", "os/c_index", "full")["mean"] > 0.5
    assert table.row("external", "os/c_index", "full")["oracle_share"] == pytest.approx(0.91)  # 0.9 + 0.01 * mean seed
    assert table.row("external", "os/c_index", "no_venous")["oracle_share"] == pytest.approx(0.41)
    assert math.isnan(table.row("external", "mvi/f1", "full")["oracle_share"])


def test_best_run_follows_the_sweep_objective(table, sweep):
    best = table.sweep.best_runs()
    for arm in ARMS:
        expected = max(SEEDS, key=lambda s: sweep.metrics[(arm, s)]["internal/os/c_index"])
        assert best[arm].seed == expected


def test_write_ablation_table(table, tmp_path):
    class Tracker:
        def __init__(self):
            self.logged = []

        def log_table(self, name, frame):
            self.logged.append((name, frame))

    tracker = Tracker()
    files = write_ablation_table(table, tmp_path / "out", tracker=tracker)
    assert set(files) == {"markdown", "csv", "forest_plot"}
    frame = pd.read_csv(files["csv"])
    assert len(frame) == len(table.rows)
    assert frame.loc[(frame["arm"] == "no_venous") & (frame["split"] == "external") & (frame["metric"] == "os/c_index"), "rank"].item() == 3
    text = files["markdown"].read_text()
    for needle in ("no_venous", "OS C-index", "MVI F1", "Holm", "![", "ablation_forest.png", "OS oracle share"):
        assert needle in text
    image = matplotlib.image.imread(files["forest_plot"])
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    assert tracker.logged and tracker.logged[0][0] == "ablation" and len(tracker.logged[0][1]) == len(table.rows)


def test_render_table_prints_main_numbers(table):
    console = Console(record=True, width=220)
    render_table(table, console)
    text = console.export_text()
    for arm in ARMS:
        assert arm in text
    assert "internal" in text and "external" in text and "Δ" in text and "OS C-index" in text
    assert "MVI AUC" not in text  # main table: OS/RFS C-index and MVI F1 only
    mean = table.row("external", "os/c_index", "no_venous")["mean"]
    assert f"{mean:.3f}" in text


def test_single_seed_arm_is_not_estimable_not_an_error(tmp_path):
    sweep = write_fake_sweep(
        tmp_path / "single",
        {"full": (0, 1), "no_venous": (0,), "broken": ()},
        failed={"broken": 2},
        pruned={},
        evaluated_arms=(),
    )
    table = build_ablation_table(sweep.root, n_bootstrap=100, metrics=("os/c_index", "mvi/f1"))
    broken = table.row("external", "os/c_index", "broken")  # only failed trials: a row of nothing, no error
    assert broken["n_seeds"] == 0 and broken["n_failed"] == 2 and math.isnan(broken["mean"]) and math.isnan(broken["rank"])
    assert "no values" in broken["ci_note"] and "not estimable" in broken["boot_note"]
    row = table.row("external", "os/c_index", "no_venous")
    assert row["n_seeds"] == 1 and not math.isnan(row["mean"])
    assert math.isnan(row["ci_low"]) and "1 seed" in row["ci_note"]
    assert math.isnan(row["t_p"]) and "1 paired seed" in row["test_note"]
    assert row["boot_n_seeds"] == 1 and row["boot_ci_high"] < 0  # one shared seed still bootstraps patients
    assert math.isnan(table.row("external", "os/c_index", "full")["oracle_share"])
    files = write_ablation_table(table, tmp_path / "out")
    assert "not estimable" in files["markdown"].read_text()


def test_missing_labels_make_the_bootstrap_not_estimable(tmp_path):
    sweep = write_fake_sweep(tmp_path / "nolabels", {"full": (0, 1), "no_jitter": (0, 1)}, failed={}, pruned={})
    shutil.rmtree(sweep.cache_dir)
    table = build_ablation_table(sweep.root, n_bootstrap=50, metrics=("os/c_index",), splits=("external",))
    row = table.row("external", "os/c_index", "no_jitter")
    assert math.isnan(row["boot_ci_low"]) and "not estimable" in row["boot_note"] and "manifest.json" in row["boot_note"]
    assert not math.isnan(row["t_p"])  # seed-level statistics do not need labels


def test_sweep_without_completed_runs_raises(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    pd.DataFrame([{"number": 0, "arm": "full", "seed": 0, "state": "FAIL", "value": None, "run_dir": ""}]).to_csv(
        root / "trials.csv", index=False
    )
    with pytest.raises(SweepError, match="no completed trial"):
        build_ablation_table(root)
    with pytest.raises(SweepError, match="does not exist"):
        build_ablation_table(tmp_path / "missing")


def test_read_sweep_skips_unreadable_run_and_falls_back_to_meta(tmp_path):
    sweep = write_fake_sweep(tmp_path / "partial", {"full": (0, 1), "no_jitter": (0, 1)}, failed={}, pruned={})
    (sweep.root / "runs" / "3" / "metrics.json").unlink()
    folder = read_sweep(sweep.root)
    assert len(folder.runs) == 3 and any("trial 3" in note for note in folder.notes)
    (sweep.root / "trials.csv").unlink()
    folder = read_sweep(sweep.root)
    assert {(r.arm, r.seed) for r in folder.runs} == {("full", 0), ("full", 1), ("no_jitter", 0)}
    assert json.loads((sweep.root / "runs" / "0" / "meta.json").read_text())["arm"] == "full"


def test_metric_labels():
    assert metric_label("os/c_index") == "OS C-index"
    assert metric_label("mvi/f1") == "MVI F1"
    assert metric_label("os/auc_365d") == "OS AUC 365d"


def test_unevaluated_trials_get_their_oracle_share_from_the_cohort(tmp_path):
    # Sweep trials are not evaluated: the table reads the cohort's oracle.csv itself.
    sweep = write_fake_sweep(tmp_path / "planted", {"full": (0, 1), "no_venous": (0, 1)}, failed={}, pruned={},
                             evaluated_arms=())  # fmt: skip
    labels = sweep.labels
    rng = np.random.default_rng(5)
    oracle = pd.DataFrame(
        {
            "patient_id": labels["patient_id"],
            "os_linear_predictor": -np.log(labels["os_time_days"].to_numpy(float)) + rng.normal(0, 0.3, len(labels)),
            "rfs_linear_predictor": rng.normal(size=len(labels)),
            "mvi_probability": np.clip(labels["mvi"] * 0.6 + rng.uniform(0, 0.4, len(labels)), 0, 1),
        }
    )
    (tmp_path / "cohort").mkdir()
    oracle.to_csv(tmp_path / "cohort" / "oracle.csv", index=False)
    table = build_ablation_table(sweep.root, n_bootstrap=50, seed=0)
    external = labels[labels["split"] == "external"]
    merged = external.merge(oracle, on="patient_id")
    oracle_c = concordance_index_censored(
        merged["os_event"].astype(bool).to_numpy(), merged["os_time_days"].to_numpy(float), merged["os_linear_predictor"]
    )[0]
    expected = np.mean([(sweep.metrics[("full", s)]["external/os/c_index"] - 0.5) / (oracle_c - 0.5) for s in (0, 1)])
    assert oracle_c > 0.6
    assert table.row("external", "os/c_index", "full")["oracle_share"] == pytest.approx(expected, abs=1e-12)
    oracle_auc = roc_auc_score(merged["mvi"], merged["mvi_probability"])
    expected_mvi = np.mean([(sweep.metrics[("no_venous", s)]["external/mvi/auc"] - 0.5) / (oracle_auc - 0.5) for s in (0, 1)])
    assert table.row("external", "mvi/auc", "no_venous")["oracle_share"] == pytest.approx(expected_mvi, abs=1e-12)


def test_oracle_shares_skip_unknown_and_uninformative_oracles():
    from hcc_exp.evaluation.common import NotEstimable
    from hcc_exp.evaluation.oracle import oracle_shares

    metrics = {"internal/os/c_index": 0.7, "internal/rfs/c_index": 0.65, "external/mvi/auc": math.nan}
    oracle = {"internal/os/oracle_c_index": 0.8, "internal/rfs/oracle_c_index": 0.5, "external/mvi/oracle_auc": 0.9}
    assert oracle_shares(metrics, oracle) == {
        "internal/os/oracle_share": pytest.approx((0.7 - 0.5) / (0.8 - 0.5)),
        "internal/rfs/oracle_share": NotEstimable("oracle c_index <= 0.5"),
        "external/mvi/oracle_share": NotEstimable("model auc not estimable"),
    }
