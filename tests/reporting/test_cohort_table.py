"""Table 1 against scipy on the same groups and the reverse-KM median against lifelines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from scipy import stats

from hcc_exp.data.contract import COHORT_CSV
from hcc_exp.reporting.cohort_table import (
    TABLE1_COLUMNS,
    build_table1,
    reverse_km_median_follow_up,
    write_cohort_table,
)
from tests.evaluation.synthetic import synthetic_predictions_and_labels


@pytest.fixture(scope="module")
def cohort_table() -> pd.DataFrame:
    _, labels, _ = synthetic_predictions_and_labels(n_per_split=40, seed=3)
    labels = labels.copy()
    rng = np.random.default_rng(1)
    # Age normal in every cohort; AFP log-normal (never normal); a rare sex level in one cohort
    # forces Fisher's test there.
    labels["age"] = np.round(rng.normal(60, 9, len(labels)), 1)
    labels.loc[labels["split"] == "external", "age"] += 6.0
    labels["tumour_size_mm"] = labels["tumour_size_mm"].clip(lower=5.0)
    return labels


def _row(frame: pd.DataFrame, variable: str, level: str | None = None) -> pd.Series:
    rows = frame[frame["variable"] == variable]
    if level is not None:
        rows = rows[rows["level"] == level]
    return rows.iloc[0]


def test_columns_and_variables(cohort_table):
    frame = build_table1(cohort_table)
    assert tuple(frame.columns) == TABLE1_COLUMNS
    assert _row(frame, "n")[["train", "internal", "external"]].tolist() == ["40", "40", "40"]
    for name in ("Age (years)", "Sex", "AFP (ng/mL)", "Tumour size (mm)", "BCLC stage", "TNM stage", "MVI",
                 "Institution", "Death (OS event)", "Recurrence or death (RFS event)"):
        assert name in set(frame["variable"]), name
    assert frame["variable"].iloc[-1].startswith("Median follow-up")


def test_continuous_p_values_match_scipy(cohort_table):
    frame = build_table1(cohort_table)
    groups = {s: cohort_table.loc[cohort_table["split"] == s, "age"].to_numpy(float) for s in ("train", "internal", "external")}
    assert all(stats.shapiro(g).pvalue >= 0.05 for g in groups.values())  # the fixture's premise
    age = _row(frame, "Age (years)")
    assert age["level"] == "mean (SD)" and age["test"] == "ttest"
    assert age["p_train_vs_internal"] == pytest.approx(stats.ttest_ind(groups["train"], groups["internal"], equal_var=False).pvalue, rel=1e-12)
    assert age["p_train_vs_external"] == pytest.approx(stats.ttest_ind(groups["train"], groups["external"], equal_var=False).pvalue, rel=1e-12)
    assert age["p_overall"] == pytest.approx(stats.f_oneway(*groups.values()).pvalue, rel=1e-12)
    assert age["train"] == f"{groups['train'].mean():.1f} ({groups['train'].std(ddof=1):.1f})"

    afp = {s: cohort_table.loc[cohort_table["split"] == s, "afp_ng_ml"].to_numpy(float) for s in groups}
    assert any(stats.shapiro(g).pvalue < 0.05 for g in afp.values())
    row = _row(frame, "AFP (ng/mL)")
    assert row["level"] == "median [IQR]" and row["test"] == "mannwhitney"
    assert row["p_train_vs_external"] == pytest.approx(stats.mannwhitneyu(afp["train"], afp["external"]).pvalue, rel=1e-12)
    assert row["p_overall"] == pytest.approx(stats.kruskal(*afp.values()).pvalue, rel=1e-12)


def _counts(table: pd.DataFrame, column: str, splits: tuple[str, ...]) -> np.ndarray:
    cross = pd.crosstab(table[column].astype(str), table["split"])[list(splits)]
    return cross.to_numpy()


def test_categorical_p_values_match_scipy(cohort_table):
    frame = build_table1(cohort_table)
    # MVI: 2 x 2 tables with large counts -> Pearson chi-square without correction.
    for other, column in (("internal", "p_train_vs_internal"), ("external", "p_train_vs_external")):
        counts = _counts(cohort_table, "mvi", ("train", other))
        chi2, p, _, expected = stats.chi2_contingency(counts, correction=False)
        assert (expected >= 5).all()
        assert _row(frame, "MVI")[column] == pytest.approx(p, rel=1e-12)
    assert _row(frame, "MVI")["test"] == "chi2"
    # BCLC: five levels, some rare -> Fisher's exact test on the r x c table.
    counts = _counts(cohort_table, "bclc", ("train", "internal"))
    counts = counts[counts.sum(axis=1) > 0]
    assert (stats.chi2_contingency(counts, correction=False)[3] < 5).any()
    bclc = _row(frame, "BCLC stage")
    assert "fisher" in bclc["test"]
    method = stats.MonteCarloMethod(n_resamples=20_000, rng=np.random.default_rng(0))
    assert bclc["p_train_vs_internal"] == pytest.approx(stats.fisher_exact(counts, method=method).pvalue, rel=1e-12)
    # and within Monte Carlo error of scipy's own default (unseeded) r x c p-value
    assert bclc["p_train_vs_internal"] == pytest.approx(stats.fisher_exact(counts).pvalue, abs=0.02)
    n_a = int(((cohort_table["split"] == "train") & (cohort_table["bclc"] == "A")).sum())
    assert _row(frame, "BCLC stage", "A")["train"] == f"{n_a} ({100 * n_a / 40:.1f}%)"


def test_fisher_on_a_small_2x2(cohort_table):
    small = cohort_table.copy()
    small["sex"] = "M"
    small.loc[small.index[:2], "sex"] = "F"  # two women, both in train
    row = _row(build_table1(small), "Sex")
    counts = np.array([[38, 40], [2, 0]])
    assert row["test"] == "fisher"
    assert row["p_train_vs_internal"] == pytest.approx(stats.fisher_exact(counts).pvalue, rel=1e-12)


def test_reverse_km_median_matches_lifelines(cohort_table):
    for split in ("train", "internal", "external"):
        rows = cohort_table[cohort_table["split"] == split]
        km = KaplanMeierFitter().fit(rows["os_time_days"], 1 - rows["os_event"])  # censoring as the event
        expected = km.median_survival_time_
        ours = reverse_km_median_follow_up(rows["os_time_days"], rows["os_event"])
        assert ours == pytest.approx(expected) or (math.isinf(ours) and math.isinf(expected))
        cell = _row(build_table1(cohort_table), "Median follow-up (days, reverse Kaplan-Meier)")[split]
        assert cell == ("not reached" if math.isinf(expected) else f"{expected:.0f}")


def test_write_cohort_table(tmp_path, cohort_table):
    cohort_table.to_csv(tmp_path / COHORT_CSV, index=False)
    paths = write_cohort_table(tmp_path, tmp_path / "out")
    written = pd.read_csv(paths["csv"], keep_default_na=False, dtype=str)
    assert tuple(written.columns) == TABLE1_COLUMNS
    assert "Table 1" in paths["md"].read_text()


def test_bad_cohort_writes_nothing(tmp_path, cohort_table):
    from hcc_exp.errors import CohortValidationError

    broken = cohort_table.copy()
    broken.loc[0, "os_time_days"] = -5
    broken.to_csv(tmp_path / COHORT_CSV, index=False)
    with pytest.raises(CohortValidationError):
        write_cohort_table(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "table1.csv").exists()


def test_institution_is_described_not_tested(cohort_table):
    rows = build_table1(cohort_table)
    inst = rows[rows["variable"] == "Institution"]
    assert inst["p_overall"].isna().all() and (inst["test"] == "").all()


def test_cli_on_a_synthetic_cohort(tmp_path):
    from typer.testing import CliRunner

    from hcc_exp.cli import app
    from hcc_exp.data.synthetic import write_synthetic_cohort

    write_synthetic_cohort(tmp_path / "raw", patients=12, seed=7, progress=False)
    result = CliRunner().invoke(app, ["cohort-table", str(tmp_path / "raw"), "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "t" / "table1.csv", keep_default_na=False)
    assert frame.loc[frame["variable"] == "n", ["train", "internal", "external"]].astype(int).sum(axis=1).item() == 12
