"""Table 1 (the paper's Supplementary Table 1): baseline characteristics per cohort.

``hcc-exp cohort-table COHORT`` reads ``cohort.csv`` through
:func:`hcc_exp.data.validate.load_cohort_table` and writes ``table1.csv`` and
``table1.md`` with one row per variable and level:

* categorical variables (sex, BCLC, TNM, MVI, institution, OS / RFS events): ``n (%)`` per
  cohort; Pearson's chi-square test (no continuity correction) of the levels x cohorts table,
  or Fisher's exact test when an expected count is below 5 (scipy's ``fisher_exact``, which
  handles r x c tables);
* continuous variables (age, AFP, tumour size): ``mean (SD)`` when Shapiro-Wilk does not
  reject normality (p >= 0.05) in any cohort, else ``median [IQR]``; Welch's t-test or the
  Mann-Whitney U test for the pairs, one-way ANOVA or Kruskal-Wallis for the overall test;
* median follow-up per cohort by the reverse Kaplan-Meier method (censoring is the event,
  deaths are censored) with scikit-survival's estimator.

The pairwise tests compare train with internal and train with external; ``test`` names the
pairwise test (``chi2``, ``fisher``, ``ttest``, ``mannwhitney``); p-values stand on a
variable's first row. tableone was evaluated: it tests across all groups at once and
chooses Fisher only for 2 x 2 tables, so the pairwise rule of the paper is computed with
scipy directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hcc_exp.data.io import atomic_path
from hcc_exp.vocabulary import INSTITUTION, MVI_LABEL, SPLIT, SPLIT_TITLES, SPLITS, event_column, time_column

TABLE1_COLUMNS: tuple[str, ...] = (
    "variable",
    "level",
    "train",
    "internal",
    "external",
    "p_train_vs_internal",
    "p_train_vs_external",
    "p_overall",
    "test",
)
NORMALITY_ALPHA = 0.05
MIN_EXPECTED_COUNT = 5.0
FISHER_RESAMPLES = 20_000
"""Monte Carlo tables for Fisher's test beyond 2 x 2 (scipy's r x c method), seeded below."""
FISHER_SEED = 0


@dataclass(frozen=True)
class Variable:
    """One row group of Table 1: cohort.csv column, display name, kind and level names."""

    column: str
    name: str
    kind: str  # "categorical" | "continuous"
    levels: dict[str, str] | None = None  # value -> display level (categorical), in display order
    tested: bool = True  # False where the cohorts are defined by the variable (institution)


VARIABLES: tuple[Variable, ...] = (
    Variable("age", "Age (years)", "continuous"),
    Variable("sex", "Sex", "categorical", {"M": "male", "F": "female"}),
    Variable("afp_ng_ml", "AFP (ng/mL)", "continuous"),
    Variable("tumour_size_mm", "Tumour size (mm)", "continuous"),
    Variable("bclc", "BCLC stage", "categorical", {s: s for s in ("0", "A", "B", "C", "D")}),
    Variable("tnm", "TNM stage", "categorical", {s: s for s in ("I", "II", "III", "IV")}),
    Variable(MVI_LABEL, "MVI", "categorical", {"1": "present", "0": "absent"}),
    Variable(INSTITUTION, "Institution", "categorical", tested=False),  # the splits are institutions
    Variable(event_column("os"), "Death (OS event)", "categorical", {"1": "yes", "0": "no"}),
    Variable(event_column("rfs"), "Recurrence or death (RFS event)", "categorical", {"1": "yes", "0": "no"}),
)


# --------------------------------------------------------------------------- tests
def _text(values: pd.Series) -> pd.Series:
    """Category values as stripped strings ("1.0" -> "1"), missing as NaN."""
    out = values.astype(object).where(values.notna())
    return out.map(lambda v: v if not isinstance(v, str | int | float) or pd.isna(v) else _strip(v))


def _strip(value) -> str:
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") else text


def contingency(groups: Sequence[pd.Series], levels: Sequence[str]) -> np.ndarray:
    """(levels, groups) counts; levels absent from every group are dropped."""
    table = np.array([[int((g == level).sum()) for g in groups] for level in levels], dtype=np.int64)
    return table[table.sum(axis=1) > 0]


def categorical_test(table: np.ndarray) -> tuple[float, str]:
    """(p, "chi2" | "fisher") for a (levels, groups) table; NaN when there is nothing to test."""
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return math.nan, ""
    chi2, p, _dof, expected = stats.chi2_contingency(table, correction=False)
    if (expected < MIN_EXPECTED_COUNT).any():
        return fisher_p(table), "fisher"
    return float(p), "chi2"


def fisher_p(table: np.ndarray) -> float:
    """Fisher's exact test: exact for 2 x 2, a seeded Monte Carlo over tables with the same
    margins (``scipy.stats.random_table``) beyond, so a table always gives the same p."""
    if table.shape == (2, 2):
        return float(stats.fisher_exact(table).pvalue)
    method = stats.MonteCarloMethod(n_resamples=FISHER_RESAMPLES, rng=np.random.default_rng(FISHER_SEED))
    try:
        return float(stats.fisher_exact(table, method=method).pvalue)
    except (TypeError, ValueError):  # scipy's random_table fails on some degenerate margins
        return math.nan


def is_normal(groups: Sequence[np.ndarray], alpha: float = NORMALITY_ALPHA) -> bool:
    """Shapiro-Wilk does not reject normality in any group with >= 3 distinct values."""
    for values in groups:
        if values.size >= 3 and np.unique(values).size >= 3 and stats.shapiro(values).pvalue < alpha:
            return False
    return True


def continuous_test(groups: Sequence[np.ndarray], normal: bool) -> tuple[float, str]:
    """Pairwise (2 groups): Welch t / Mann-Whitney U; overall (3): ANOVA / Kruskal-Wallis."""
    groups = [g for g in groups if g.size > 0]
    if len(groups) < 2 or any(g.size < 2 for g in groups):
        return math.nan, ""
    if len(groups) == 2:
        if normal:
            return float(stats.ttest_ind(*groups, equal_var=False).pvalue), "ttest"
        return float(stats.mannwhitneyu(*groups, alternative="two-sided").pvalue), "mannwhitney"
    if normal:
        return float(stats.f_oneway(*groups).pvalue), "anova"
    return float(stats.kruskal(*groups).pvalue), "kruskal"


def reverse_km_median_follow_up(time_days, event) -> float:
    """Median follow-up (days) by reverse Kaplan-Meier; inf when the curve never reaches 0.5.

    >>> reverse_km_median_follow_up([100, 200, 300, 400], [0, 1, 0, 0])
    300.0
    """
    from sksurv.nonparametric import kaplan_meier_estimator

    time_arr = np.asarray(time_days, dtype=float)
    if time_arr.size == 0:
        return math.nan
    times, censoring_free = kaplan_meier_estimator(np.asarray(event).astype(bool), time_arr, reverse=True)
    reached = times[censoring_free <= 0.5]
    return float(reached[0]) if reached.size else math.inf


# --------------------------------------------------------------------------- summaries
def _percent(count: int, n: int) -> str:
    return f"{count} ({100.0 * count / n:.1f}%)" if n else "0 (-)"


def _continuous_cell(values: np.ndarray, normal: bool) -> str:
    if values.size == 0:
        return "-"
    if normal:
        sd = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
        return f"{values.mean():.1f} ({sd:.1f})"
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{q2:.1f} [{q1:.1f}, {q3:.1f}]"


def _row(variable: str, level: str, cells: dict[str, str], p: dict[str, float], test: str) -> dict:
    return {
        "variable": variable,
        "level": level,
        **{split: cells.get(split, "") for split in SPLITS},
        "p_train_vs_internal": p.get("internal", math.nan),
        "p_train_vs_external": p.get("external", math.nan),
        "p_overall": p.get("overall", math.nan),
        "test": test,
    }


def _categorical_rows(table: pd.DataFrame, var: Variable) -> list[dict]:
    by_split = {s: _text(table.loc[table[SPLIT] == s, var.column]) for s in SPLITS}
    present = sorted({v for g in by_split.values() for v in g.dropna()})
    levels = list(var.levels) if var.levels else present
    levels += [v for v in present if v not in levels]
    p: dict[str, float] = {}
    tests = []
    if var.tested:
        for other in ("internal", "external"):
            p[other], name = categorical_test(contingency([by_split["train"], by_split[other]], levels))
            tests.append(name)
        p["overall"], _ = categorical_test(contingency(list(by_split.values()), levels))
    test = "/".join(dict.fromkeys(t for t in tests if t))
    rows = []
    for i, level in enumerate(levels):
        n = {s: int(g.notna().sum()) for s, g in by_split.items()}
        cells = {s: _percent(int((g == level).sum()), n[s]) for s, g in by_split.items()}
        label = var.levels.get(level, level) if var.levels else level
        rows.append(_row(var.name, label, cells, p if i == 0 else {}, test))
    missing = {s: int(g.isna().sum()) for s, g in by_split.items()}
    if any(missing.values()):
        rows.append(_row(var.name, "missing", {s: str(m) for s, m in missing.items()}, {}, ""))
    return rows


def _continuous_rows(table: pd.DataFrame, var: Variable) -> list[dict]:
    values = {
        s: pd.to_numeric(table.loc[table[SPLIT] == s, var.column], errors="coerce").dropna().to_numpy(float)
        for s in SPLITS
    }
    normal = is_normal(list(values.values()))
    p: dict[str, float] = {}
    test = ""
    for other in ("internal", "external"):
        p[other], name = continuous_test([values["train"], values[other]], normal)
        test = test or name
    p["overall"], _ = continuous_test(list(values.values()), normal)
    level = "mean (SD)" if normal else "median [IQR]"
    return [_row(var.name, level, {s: _continuous_cell(v, normal) for s, v in values.items()}, p, test)]


def _follow_up_row(table: pd.DataFrame) -> dict:
    cells = {}
    for s in SPLITS:
        rows = table[table[SPLIT] == s]
        median = reverse_km_median_follow_up(rows[time_column("os")], rows[event_column("os")])
        cells[s] = "not reached" if math.isinf(median) else ("-" if math.isnan(median) else f"{median:.0f}")
    return _row("Median follow-up (days, reverse Kaplan-Meier)", "", cells, {}, "")


def build_table1(table: pd.DataFrame, variables: Sequence[Variable] = VARIABLES) -> pd.DataFrame:
    """Table 1 as a DataFrame with :data:`TABLE1_COLUMNS` (see the module docstring).

    Args:
        table: cohort.csv rows (``split`` and the variables' columns; absent columns are skipped).
    """
    rows = [_row("n", "", {s: str(int((table[SPLIT] == s).sum())) for s in SPLITS}, {}, "")]
    for var in variables:
        if var.column not in table.columns:
            continue
        rows += _categorical_rows(table, var) if var.kind == "categorical" else _continuous_rows(table, var)
    rows.append(_follow_up_row(table))
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


def format_p(value: float) -> str:
    if value is None or not np.isfinite(value):
        return ""
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def table1_markdown(frame: pd.DataFrame) -> str:
    """The table as Markdown with the cohorts' titles and formatted p-values."""
    titles = {s: f"{SPLIT_TITLES[s]} ({s})" for s in SPLITS}
    header = ["Variable", "Level", *titles.values(), "P train vs internal", "P train vs external", "P overall", "Test"]
    lines = [
        "## Table 1. Baseline characteristics",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for _, row in frame.iterrows():
        cells = [row["variable"], row["level"], *(row[s] for s in SPLITS)]
        cells += [format_p(row[c]) for c in ("p_train_vs_internal", "p_train_vs_external", "p_overall")]
        cells.append(row["test"])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "n (%) for categories; mean (SD) or median [IQR] by Shapiro-Wilk (alpha 0.05 in every cohort). "
        "P: Pearson chi-square, or Fisher's exact test when an expected count is below 5; "
        "Welch's t-test or Mann-Whitney U (pairs), ANOVA or Kruskal-Wallis (overall). "
        "Follow-up: reverse Kaplan-Meier median of OS follow-up.",
        "",
    ]
    return "\n".join(lines)


def write_cohort_table(cohort_dir: Path | str, out_dir: Path | str | None = None) -> dict[str, Path]:
    """Read a cohort and write ``table1.csv`` and ``table1.md`` into ``out_dir`` (default: the cohort).

    Raises:
        CohortValidationError: cohort.csv breaks a table rule (nothing is written).
    """
    from hcc_exp.data.validate import load_cohort_table

    cohort_dir = Path(cohort_dir)
    out = Path(out_dir) if out_dir is not None else cohort_dir
    frame = build_table1(load_cohort_table(cohort_dir))
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "table1.csv", "md": out / "table1.md"}
    with atomic_path(paths["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(table1_markdown(frame), encoding="utf-8")
    return paths
