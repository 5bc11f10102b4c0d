"""The oracle of a synthetic cohort: the true scores' own metrics and the model's share of them.

A synthetic cohort's ``oracle.csv`` (written by :mod:`hcc_exp.data.synthetic`) holds the true
OS / RFS linear predictors and the true MVI probability of every patient. Scored against the
observed outcomes they give the best C-index / AUC any model can expect on that cohort, and

    oracle_share = (model - 0.5) / (oracle - 0.5)

says how much of the oracle's margin over chance a model recovers (1 = all of it). The share is
not estimable when the model's statistic is, or when the oracle is no better than chance
(oracle <= 0.5: the ratio would be unbounded or change sign).

Keys follow the metric vocabulary, ``"<split>/<task>/oracle_<metric>"`` and
``"<split>/<task>/oracle_share"``:

>>> round(oracle_share(0.7, 0.8), 4)  # 0.2 / 0.3
0.6667
>>> oracle_share(0.7, 0.5)
NotEstimable(reason='oracle c_index <= 0.5')
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hcc_exp.data.contract import COHORT_CSV, ORACLE_CSV
from hcc_exp.errors import CohortError, MissingColumnError, MissingFileError, RunFolderError
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.vocabulary import (
    ENDPOINTS,
    MVI,
    MVI_LABEL,
    PATIENT_ID,
    SPLIT,
    SPLITS,
    event_column,
    metric_key,
    parse_metric_key,
    time_column,
)

ORACLE_SCORE_COLUMNS: dict[str, str] = {
    "os": "os_linear_predictor",
    "rfs": "rfs_linear_predictor",
    MVI: "mvi_probability",
}
"""Task -> the column of ``oracle.csv`` holding its true score."""
SHARE_METRICS: dict[str, str] = {"os": "c_index", "rfs": "c_index", MVI: "auc"}
"""Task -> the model metric that has an oracle counterpart ``<split>/<task>/oracle_<metric>``."""
SHARE = "oracle_share"


def oracle_metric(metric: str) -> str:
    """The oracle's name of a model metric.

    >>> oracle_metric("c_index")
    'oracle_c_index'
    """
    return f"oracle_{metric}"


def oracle_metrics(oracle: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """The true scores' C-index (OS, RFS; Harrell) and MVI AUC (scikit-learn) per split.

    Args:
        oracle: ``oracle.csv`` rows (``patient_id`` and :data:`ORACLE_SCORE_COLUMNS`; a ``split``
            column is ignored, the labels' split is used).
        labels: the cohort's outcomes (``cohort.csv`` or the cache's ``labels.csv``).

    Returns:
        ``"<split>/os/oracle_c_index"``, ``"<split>/rfs/oracle_c_index"``, ``"<split>/mvi/oracle_auc"``
        for every split where the statistic is defined (left out otherwise).

    Raises:
        RunFolderError: ``oracle`` lacks a score column.
    """
    from sklearn.metrics import roc_auc_score

    # Imported here: concordance pulls in torch (torchsurv), and the share rule above must stay
    # importable without it (benchmarks set thread counts before torch is loaded).
    from hcc_exp.evaluation.concordance import harrell_c_index

    needed = [PATIENT_ID, *ORACLE_SCORE_COLUMNS.values()]
    missing = [c for c in needed if c not in oracle.columns]
    if missing:
        raise RunFolderError(f"{ORACLE_CSV}: missing column(s) {missing}")
    frame = oracle[needed].assign(**{PATIENT_ID: oracle[PATIENT_ID].astype(str)})
    outcomes = labels.drop(columns=[c for c in ORACLE_SCORE_COLUMNS.values() if c in labels.columns])
    frame = frame.merge(outcomes.assign(**{PATIENT_ID: outcomes[PATIENT_ID].astype(str)}), on=PATIENT_ID, how="inner")
    out: dict[str, float] = {}
    for split in SPLITS:
        part = frame[frame[SPLIT] == split]
        if part.empty:
            continue
        for endpoint in ENDPOINTS:
            c = harrell_c_index(
                part[time_column(endpoint)], part[event_column(endpoint)], part[ORACLE_SCORE_COLUMNS[endpoint]]
            )
            if not isinstance(c, NotEstimable):
                out[metric_key(split, endpoint, oracle_metric("c_index"))] = c
        mvi = part[MVI_LABEL].to_numpy(dtype=float)
        if np.unique(mvi).size == 2:
            auc = roc_auc_score(mvi, part[ORACLE_SCORE_COLUMNS[MVI]].to_numpy(dtype=float))
            out[metric_key(split, MVI, oracle_metric("auc"))] = float(auc)
    return out


def cohort_oracle_metrics(cohort_dir: Path) -> dict[str, float]:
    """:func:`oracle_metrics` of a synthetic cohort folder (its ``cohort.csv`` and ``oracle.csv``).

    Raises:
        MissingFileError: either table is missing (a real cohort has no oracle).
        MissingColumnError: an outcome or score column is missing.
        CohortError: the two tables do not list the same patients.
    """
    cohort_dir = Path(cohort_dir)
    tables: dict[str, pd.DataFrame] = {}
    for name in (COHORT_CSV, ORACLE_CSV):
        path = cohort_dir / name
        if not path.is_file():
            raise MissingFileError(f"{name} does not exist (only synthetic cohorts have an oracle)", path=path)
        tables[name] = pd.read_csv(path, dtype={PATIENT_ID: str}, keep_default_na=False, na_values=[""])
    outcome_columns = [PATIENT_ID, SPLIT, *(c for e in ENDPOINTS for c in (time_column(e), event_column(e))), MVI_LABEL]
    needed = {COHORT_CSV: outcome_columns, ORACLE_CSV: [PATIENT_ID, *ORACLE_SCORE_COLUMNS.values()]}
    for name, columns in needed.items():
        for column in columns:
            if column not in tables[name].columns:
                raise MissingColumnError("required column is missing", column=column, path=cohort_dir / name)
    cohort, oracle = tables[COHORT_CSV], tables[ORACLE_CSV]
    if set(cohort[PATIENT_ID]) != set(oracle[PATIENT_ID]):
        differing = sorted(set(cohort[PATIENT_ID]) ^ set(oracle[PATIENT_ID]))
        raise CohortError(
            f"{COHORT_CSV} and {ORACLE_CSV} list different patients: {', '.join(differing[:5])}", path=cohort_dir
        )
    return oracle_metrics(oracle, cohort[outcome_columns])


def oracle_share(model: float | None, oracle: float, metric: str = "c_index") -> float | NotEstimable:
    """``(model - 0.5) / (oracle - 0.5)``; not estimable for a missing model value or ``oracle <= 0.5``.

    Args:
        model: the model's C-index or AUC (None / NaN: not estimable).
        oracle: the oracle's value of the same statistic on the same patients.
        metric: the statistic's name, for the reason.

    >>> oracle_share(0.75, 0.75), oracle_share(0.5, 0.9)
    (1.0, 0.0)
    >>> oracle_share(float("nan"), 0.9, "auc")
    NotEstimable(reason='model auc not estimable')
    """
    if model is None or not math.isfinite(float(model)):
        return NotEstimable(f"model {metric} not estimable")
    if not oracle > 0.5:
        return NotEstimable(f"oracle {metric} <= 0.5")
    return (float(model) - 0.5) / (float(oracle) - 0.5)


def oracle_shares(metrics: dict[str, float], oracle: dict[str, float]) -> dict[str, float | NotEstimable]:
    """``"<split>/<task>/oracle_share"`` for every oracle statistic in ``oracle``.

    Args:
        metrics: flat model metrics (``"internal/os/c_index"``, ...).
        oracle: :func:`oracle_metrics` of the same cohort.

    Returns:
        Per oracle key present, the share or why it is not estimable.

    >>> oracle_shares({"internal/os/c_index": 0.75}, {"internal/os/oracle_c_index": 1.0})
    {'internal/os/oracle_share': 0.5}
    """
    out: dict[str, float | NotEstimable] = {}
    for key, reference in oracle.items():
        split, task, name = parse_metric_key(key)
        metric = SHARE_METRICS.get(task)
        if metric is None or name != oracle_metric(metric):
            continue
        out[metric_key(split, task, SHARE)] = oracle_share(metrics.get(metric_key(split, task, metric)), reference, metric)
    return out
