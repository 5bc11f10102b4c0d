"""Clinical baselines of Supplementary Table 4: univariate C-index of BCLC, TNM, AFP and tumour size.

Each baseline is used as a risk score as it stands (higher stage, higher AFP,
larger tumour = higher risk), so its C-index is a univariate one; stages are
ordinal (BCLC 0 < A < B < C < D, TNM I < II < III < IV) and tie often, which
Harrell's C counts as 1/2. The model is compared with each baseline by a paired
bootstrap of C(model) - C(baseline) on the same patients and resamples; patients
with a missing baseline value are left out of that baseline's comparison only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hcc_exp.errors import InvalidValueError
from hcc_exp.evaluation.common import NotEstimable, as_scores, as_survival_arrays
from hcc_exp.evaluation.concordance import PairedCIndexDifference, paired_bootstrap_difference
from hcc_exp.vocabulary import metric_key

BCLC_ORDER: dict[str, int] = {"0": 0, "A": 1, "B": 2, "C": 3, "D": 4}
TNM_ORDER: dict[str, int] = {"I": 1, "II": 2, "III": 3, "IV": 4}

BASELINES: dict[str, tuple[str, str]] = {
    "bclc": ("bclc", "BCLC stage"),
    "tnm": ("tnm", "TNM stage"),
    "afp": ("afp_ng_ml", "AFP (ng/mL)"),
    "tumour_size": ("tumour_size_mm", "Max tumour size (mm)"),
}
"""Baseline key -> (labels.csv column, display name)."""


def _encode_stage(
    values: pd.Series, order: dict[str, int], column: str, patient_ids: pd.Series
) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for pos, (value, patient) in enumerate(zip(values.tolist(), patient_ids.tolist(), strict=True)):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        text = str(value).strip().upper()
        if text.endswith(".0"):  # a BCLC column of only "0" is read as floats by pandas
            text = text[:-2]
        if text not in order:
            raise InvalidValueError(
                f"unknown {column} stage '{value}' (expected one of {', '.join(order)})",
                patient_id=str(patient),
                column=column,
            )
        out[pos] = order[text]
    return out


def encode_baselines(labels: pd.DataFrame) -> pd.DataFrame:
    """Baseline risk scores as floats, one column per key of :data:`BASELINES` (NaN where missing).

    Args:
        labels: rows of ``labels.csv`` (``patient_id``, ``bclc``, ``tnm``, ``afp_ng_ml``,
            ``tumour_size_mm``; an absent column gives an all-NaN baseline).

    Raises:
        InvalidValueError: a stage outside the allowed set (names the patient and column).
    """
    ids = labels["patient_id"].astype(str)
    out = pd.DataFrame(index=labels.index)
    for key, order in (("bclc", BCLC_ORDER), ("tnm", TNM_ORDER)):
        column = BASELINES[key][0]
        out[key] = _encode_stage(labels[column], order, column, ids) if column in labels else np.nan
    for key in ("afp", "tumour_size"):
        column = BASELINES[key][0]
        out[key] = (
            pd.to_numeric(labels[column], errors="coerce").to_numpy(dtype=float)
            if column in labels
            else np.nan
        )
    return out


@dataclass(frozen=True)
class BaselineComparison:
    """Model vs one clinical baseline on one split and endpoint.

    Attributes:
        baseline: key of :data:`BASELINES`.
        n: patients with this baseline available.
        result: the paired bootstrap (model and baseline C-index with intervals, difference).
    """

    baseline: str
    n: int
    result: PairedCIndexDifference

    def values(self) -> dict[str, float]:
        """:data:`BASELINE_METRICS` -> value (the baseline's C-index and interval, model - baseline)."""
        res = self.result
        return dict(
            zip(
                BASELINE_METRICS,
                (
                    res.baseline.estimate,
                    res.baseline.ci_low,
                    res.baseline.ci_high,
                    res.model.estimate,
                    res.estimate,
                    res.ci_low,
                    res.ci_high,
                    res.p_value,
                ),
                strict=True,
            )
        )


def compare_with_baselines(
    time,
    event,
    model_risk,
    baselines: pd.DataFrame,
    indices: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, BaselineComparison | NotEstimable]:
    """Paired bootstrap of C(model) - C(baseline) for each baseline column.

    Args:
        time, event: (n,) outcomes.
        model_risk: (n,) model risk score.
        baselines: (n, k) baseline scores (:func:`encode_baselines`), NaN where missing.
        indices: (B, n) resamples of all n patients (those of the model's own C-index
            interval), used for every baseline known for all patients.
        rng: seeded generator drawing B fresh resamples for a baseline missing for some patients.
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    model_arr = as_scores(model_risk, time_arr.size, name="model risk")
    n_resamples = int(indices.shape[0])
    out: dict[str, BaselineComparison | NotEstimable] = {}
    for key in baselines.columns:
        values = baselines[key].to_numpy(dtype=float)
        available = np.isfinite(values)
        if not available.any():
            out[key] = NotEstimable(f"{key} missing for every patient")
            continue
        if available.all():
            subset_indices = indices
        else:
            subset_indices = rng.integers(0, int(available.sum()), size=(n_resamples, int(available.sum())))
        result = paired_bootstrap_difference(
            time_arr[available],
            event_arr[available],
            model_arr[available],
            values[available],
            indices=subset_indices,
        )
        if isinstance(result, NotEstimable):
            out[key] = NotEstimable(f"{key}: {result.reason}")
        else:
            out[key] = BaselineComparison(key, int(available.sum()), result)
    return out


BASELINE_METRICS: tuple[str, ...] = (
    "c_index",
    "c_index_ci_low",
    "c_index_ci_high",
    "model_c_index",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "diff_p",
)
"""Metrics stored per baseline, split and endpoint (the baseline's C-index and model - baseline)."""


def baseline_metric_key(split: str, endpoint: str, baseline: str, metric: str) -> str:
    """``"<split>/<endpoint>/baseline/<baseline>/<metric>"``: a metric key with the baseline's name inside.

    >>> baseline_metric_key("internal", "os", "bclc", "diff_p")
    'internal/os/baseline/bclc/diff_p'
    """
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
    return f"{metric_key(split, endpoint, 'baseline')}/{baseline}/{metric}"
