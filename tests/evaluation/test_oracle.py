"""The one oracle: metrics of the true scores (hand-counted and against sksurv / sklearn) and the share rule."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hcc_exp.errors import MissingFileError, RunFolderError
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.oracle import cohort_oracle_metrics, oracle_metrics, oracle_share, oracle_shares


def _small_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four internal patients whose pairs are counted by hand.

    OS: events at t = 1 (A), 3 (C); censored at 2 (B), 4 (D). Comparable pairs (event first):
    A<B, A<C, A<D, C<D = 4. With true scores A 2.0, B 0.0, C 1.0, D 1.0: A>B, A>C, A>D concordant,
    C = D tied (1/2), so C-index = 3.5 / 4 = 0.875.
    RFS: all four events at 1, 2, 3, 4; scores A 1, B 2, C 3, D 4 rank every one of the 6 pairs
    the wrong way: C-index = 0.
    MVI: positives A (0.9), C (0.4), negatives B (0.5), D (0.1): of the 4 positive-negative
    pairs A>B, A>D, C>D win and C<B loses: AUC = 3 / 4.
    """
    labels = pd.DataFrame(
        {
            "patient_id": ["A", "B", "C", "D"],
            "split": ["internal"] * 4,
            "os_time_days": [1.0, 2.0, 3.0, 4.0],
            "os_event": [1, 0, 1, 0],
            "rfs_time_days": [1.0, 2.0, 3.0, 4.0],
            "rfs_event": [1, 1, 1, 1],
            "mvi": [1, 0, 1, 0],
        }
    )
    oracle = pd.DataFrame(
        {
            "patient_id": ["A", "B", "C", "D"],
            "split": ["train"] * 4,  # ignored: the labels' split counts
            "os_linear_predictor": [2.0, 0.0, 1.0, 1.0],
            "rfs_linear_predictor": [1.0, 2.0, 3.0, 4.0],
            "mvi_probability": [0.9, 0.5, 0.4, 0.1],
        }
    )
    return oracle, labels


def test_oracle_metrics_hand_counted():
    oracle, labels = _small_case()
    assert oracle_metrics(oracle, labels) == {
        "internal/os/oracle_c_index": 0.875,
        "internal/rfs/oracle_c_index": 0.0,
        "internal/mvi/oracle_auc": 0.75,
    }


def test_cohort_oracle_metrics_reads_the_two_tables(tmp_path):
    oracle, labels = _small_case()
    with pytest.raises(MissingFileError, match="cohort.csv"):
        cohort_oracle_metrics(tmp_path)
    labels.to_csv(tmp_path / "cohort.csv", index=False)
    oracle.to_csv(tmp_path / "oracle.csv", index=False)
    assert cohort_oracle_metrics(tmp_path)["internal/os/oracle_c_index"] == 0.875
    with pytest.raises(RunFolderError, match="mvi_probability"):
        oracle_metrics(oracle.drop(columns="mvi_probability"), labels)


def test_share_rule_oracle_at_or_below_chance_is_not_estimable():
    # One rule everywhere (evaluate, sweep reading, ablation table, bench_oracle).
    assert oracle_share(0.8, 0.9) == pytest.approx(0.3 / 0.4)
    assert oracle_share(0.4, 0.9) == pytest.approx(-0.1 / 0.4)  # a model worse than chance: negative share
    assert oracle_share(0.7, 0.5) == NotEstimable("oracle c_index <= 0.5")
    assert oracle_share(0.7, 0.3, "auc") == NotEstimable("oracle auc <= 0.5")  # no sign flip
    assert oracle_share(math.nan, 0.9) == NotEstimable("model c_index not estimable")
    oracle, labels = _small_case()
    shares = oracle_shares({"internal/os/c_index": 0.75, "internal/mvi/auc": 0.6}, oracle_metrics(oracle, labels))
    assert shares == {
        "internal/os/oracle_share": pytest.approx(0.25 / 0.375),
        "internal/rfs/oracle_share": NotEstimable("model c_index not estimable"),
        "internal/mvi/oracle_share": pytest.approx(0.1 / 0.25),
    }
