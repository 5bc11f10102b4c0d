"""Harrell's C-index and its bootstrap confidence interval, vectorised over resamples.

The C-index follows scikit-survival's ``concordance_index_censored`` exactly: a pair
(i, j) is comparable when i has an event and ``time_j > time_i``, or both share the
time and j is censored; a comparable pair scores 1 when ``risk_i > risk_j``, 0.5 when
``|risk_i - risk_j| <= tied_tol``, 0 otherwise.

The bootstrap resamples patients. A resample is a vector of multiplicities ``w``
(how often each patient was drawn); copies of one patient never form a comparable
pair (same time: two events are not comparable, a censored copy cannot lead), so

    C_b = sum_ij w_i w_j S_ij / sum_ij w_i w_j M_ij

with ``S`` the pair scores and ``M`` the comparable indicator, both computed once.
All resamples are then two batched matrix products instead of B loops over pairs;
memory is O(n^2) for the pair matrices, fine for cohorts of a few thousand patients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hcc_exp.evaluation.common import EvaluationInputError, NotEstimable, as_scores, as_survival_arrays

DEFAULT_TIED_TOL = 1e-8
"""Risk scores closer than this are tied (the default of scikit-survival and torchsurv)."""


@dataclass(frozen=True)
class CIndexBootstrap:
    """Harrell's C-index with a percentile bootstrap interval.

    Attributes:
        estimate: C-index on the full sample.
        ci_low, ci_high: percentile interval of the resample C-indices (NaN-free resamples only).
        n_resamples: resamples drawn (B).
        n_valid: resamples with at least one comparable pair (the others are NaN and skipped).
        confidence: the interval's coverage (0.95).
        resample_indices: (B, n) int, patient positions drawn in each resample, so a
            reference loop can recompute the same resamples.
        resample_estimates: (B,) C-index of each resample; NaN where none is comparable.
    """

    estimate: float
    ci_low: float
    ci_high: float
    n_resamples: int
    n_valid: int
    confidence: float
    resample_indices: np.ndarray
    resample_estimates: np.ndarray


@dataclass(frozen=True)
class PairedCIndexDifference:
    """Paired bootstrap of C(model) - C(baseline) on the same patients and resamples.

    Attributes:
        model, baseline: each score's C-index and interval on the same resamples.
        estimate: C(model) - C(baseline) on the full sample.
        ci_low, ci_high: percentile interval of the resample differences.
        p_value: two-sided bootstrap p of "no difference" (2 x the smaller tail share, capped at 1).
        n_resamples, n_valid, resample_indices: as in :class:`CIndexBootstrap`.
        resample_differences: (B,) difference per resample; NaN where none is comparable.
    """

    model: CIndexBootstrap
    baseline: CIndexBootstrap
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int
    n_valid: int
    resample_indices: np.ndarray
    resample_differences: np.ndarray


@dataclass(frozen=True)
class TorchsurvCIndex:
    """torchsurv's C-index and its own (Noether by default) confidence interval.

    ``ci_low`` / ``ci_high`` are NaN and ``reason`` says why when torchsurv cannot give an interval
    (its standard error is zero when the C-index is exactly 0 or 1).
    """

    estimate: float
    ci_low: float
    ci_high: float
    method: str
    reason: str = ""


# --------------------------------------------------------------------------- pair structure
def comparable_pairs(time, event) -> np.ndarray:
    """(n, n) bool: ``[i, j]`` is True when patient i's event is known to precede j's time.

    Args:
        time: (n,) event or censoring time (any unit).
        event: (n,) 1/True where the time is an event.

    An event at t = 1 precedes everyone; the event at t = 2 precedes the censoring at t = 2
    (censored patients were still at risk) but not the other event at t = 2:

    >>> comparable_pairs([1, 2, 2, 2], [1, 1, 1, 0]).astype(int)
    array([[0, 1, 1, 1],
           [0, 0, 0, 1],
           [0, 0, 0, 1],
           [0, 0, 0, 0]])
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    later = time_arr[None, :] > time_arr[:, None]
    same_time_censored = (time_arr[None, :] == time_arr[:, None]) & ~event_arr[None, :]
    return event_arr[:, None] & (later | same_time_censored)


def pair_scores(risk, comparable: np.ndarray, tied_tol: float = DEFAULT_TIED_TOL) -> np.ndarray:
    """(n, n) float: 1 concordant, 0.5 tied risk, 0 discordant or not comparable.

    Args:
        risk: (n,) risk score, higher = earlier event expected.
        comparable: (n, n) output of :func:`comparable_pairs`.

    >>> pair_scores([3.0, 1.0, 1.0], comparable_pairs([1, 2, 3], [1, 1, 0]))
    array([[0. , 1. , 1. ],
           [0. , 0. , 0.5],
           [0. , 0. , 0. ]])
    """
    risk_arr = as_scores(risk, comparable.shape[0])
    diff = risk_arr[:, None] - risk_arr[None, :]
    scores = np.where(np.abs(diff) <= tied_tol, 0.5, (diff > 0).astype(float))
    return np.where(comparable, scores, 0.0)


def harrell_c_index(time, event, risk, tied_tol: float = DEFAULT_TIED_TOL) -> float | NotEstimable:
    """Harrell's C-index (equal to ``sksurv.metrics.concordance_index_censored(...)[0]``).

    Args:
        time, event, risk: (n,) each; risk higher = earlier event expected.

    Returns:
        The C-index, or :class:`NotEstimable` when no pair is comparable (no event, or
        all events at the last time).

    Hand count: comparable pairs (1,2), (1,3), (2,3); risks 3 > 1 twice, then a tie (1/2):

    >>> harrell_c_index([1, 2, 3], [1, 1, 0], [3.0, 1.0, 1.0])  # (1 + 1 + 0.5) / 3
    0.8333333333333334
    >>> harrell_c_index([1, 2], [0, 0], [1.0, 2.0])
    NotEstimable(reason='no events (all patients censored)')
    """
    comparable = comparable_pairs(time, event)
    denominator = comparable.sum()
    if denominator == 0:
        return NotEstimable(_no_pairs_reason(event))
    return float(pair_scores(risk, comparable, tied_tol).sum() / denominator)


def _no_pairs_reason(event) -> str:
    n_events = int(np.asarray(event, dtype=bool).sum())
    if n_events == 0:
        return "no events (all patients censored)"
    return f"no comparable pairs ({n_events} event(s), none before another patient's time)"


# --------------------------------------------------------------------------- bootstrap
def bootstrap_indices(n_patients: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) int64: patient positions drawn with replacement, one row per resample.

    >>> bootstrap_indices(4, 3, np.random.default_rng(0)).shape
    (3, 4)
    """
    return rng.integers(0, n_patients, size=(n_resamples, n_patients))


def resample_counts(indices: np.ndarray, n_patients: int) -> np.ndarray:
    """(B, n) float64 multiplicities: how often each patient appears in each resample.

    >>> resample_counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    array([[2., 0., 1.],
           [0., 1., 2.]])
    """
    n_resamples = indices.shape[0]
    offsets = (np.arange(n_resamples, dtype=np.int64) * n_patients)[:, None]
    flat = np.bincount((indices + offsets).ravel(), minlength=n_resamples * n_patients)
    return flat.reshape(n_resamples, n_patients).astype(float)


def _quadratic_forms(
    weights: np.ndarray, matrix: np.ndarray, rows: np.ndarray, chunk: int = 2048
) -> np.ndarray:
    """``w_b^T matrix w_b`` for every row b of ``weights``, using only the non-zero ``rows``."""
    out = np.empty(weights.shape[0])
    sub = matrix[rows]
    for start in range(0, weights.shape[0], chunk):
        w = weights[start : start + chunk]
        out[start : start + chunk] = np.einsum("bj,bj->b", w[:, rows] @ sub, w)
    return out


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float, int]:
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return float("nan"), float("nan"), 0
    alpha = 1.0 - confidence
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), int(valid.size)


def _resample_c_indices(
    time: np.ndarray,
    event: np.ndarray,
    risks: list[np.ndarray],
    indices: np.ndarray,
    tied_tol: float,
) -> tuple[list[float], list[np.ndarray]]:
    """Full-sample and per-resample C-index of each score in ``risks`` (shared denominators)."""
    comparable = comparable_pairs(time, event)
    event_rows = np.flatnonzero(event)
    weights = resample_counts(indices, time.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        denominators = _quadratic_forms(weights, comparable.astype(float), event_rows)
        denominators[denominators == 0] = np.nan
        full, per_resample = [], []
        for risk in risks:
            scores = pair_scores(risk, comparable, tied_tol)
            full.append(float(scores.sum() / comparable.sum()))
            per_resample.append(_quadratic_forms(weights, scores, event_rows) / denominators)
    return full, per_resample


def _check_indices(
    indices: np.ndarray | None, n: int, n_resamples: int, rng: np.random.Generator | None
) -> np.ndarray:
    if indices is None:
        if rng is None:
            raise EvaluationInputError("pass a seeded numpy Generator (rng) or explicit resample indices")
        return bootstrap_indices(n, n_resamples, rng)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 2 or indices.shape[1] != n or indices.min() < 0 or indices.max() >= n:
        raise EvaluationInputError(f"resample indices must be (B, {n}) positions in [0, {n})")
    return indices


def bootstrap_c_index(
    time,
    event,
    risk,
    *,
    rng: np.random.Generator | None = None,
    n_resamples: int = 1000,
    indices: np.ndarray | None = None,
    confidence: float = 0.95,
    tied_tol: float = DEFAULT_TIED_TOL,
) -> CIndexBootstrap | NotEstimable:
    """Harrell's C-index with a percentile bootstrap interval over patients.

    Args:
        time: (n,) event or censoring time.
        event: (n,) event indicator.
        risk: (n,) risk score, higher = earlier event expected.
        rng: seeded generator drawing the resamples (ignored when ``indices`` is given).
        n_resamples: B, the number of resamples.
        indices: optional (B, n) positions to reuse (e.g. the same resamples for two scores).
        confidence: coverage of the interval.

    Returns:
        :class:`CIndexBootstrap`, or :class:`NotEstimable` when the full sample has no comparable pair.
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    risk_arr = as_scores(risk, time_arr.size)
    point = harrell_c_index(time_arr, event_arr, risk_arr, tied_tol)
    if isinstance(point, NotEstimable):
        return point
    indices = _check_indices(indices, time_arr.size, n_resamples, rng)
    (estimate,), (per_resample,) = _resample_c_indices(time_arr, event_arr, [risk_arr], indices, tied_tol)
    return _bootstrap_result(estimate, per_resample, indices, confidence)


def _bootstrap_result(
    estimate: float, per_resample: np.ndarray, indices: np.ndarray, confidence: float
) -> CIndexBootstrap:
    low, high, n_valid = _percentile_interval(per_resample, confidence)
    return CIndexBootstrap(
        estimate=estimate,
        ci_low=low,
        ci_high=high,
        n_resamples=int(indices.shape[0]),
        n_valid=n_valid,
        confidence=confidence,
        resample_indices=indices,
        resample_estimates=per_resample,
    )


def paired_bootstrap_difference(
    time,
    event,
    risk_model,
    risk_baseline,
    *,
    rng: np.random.Generator | None = None,
    n_resamples: int = 1000,
    indices: np.ndarray | None = None,
    confidence: float = 0.95,
    tied_tol: float = DEFAULT_TIED_TOL,
) -> PairedCIndexDifference | NotEstimable:
    """Paired bootstrap of C(model) - C(baseline): both scores on the same resamples.

    Arguments as :func:`bootstrap_c_index`; ``risk_model`` and ``risk_baseline`` are (n,).
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    model_arr = as_scores(risk_model, time_arr.size, name="model risk")
    baseline_arr = as_scores(risk_baseline, time_arr.size, name="baseline risk")
    point = harrell_c_index(time_arr, event_arr, model_arr, tied_tol)
    if isinstance(point, NotEstimable):
        return point
    indices = _check_indices(indices, time_arr.size, n_resamples, rng)
    (c_model, c_base), (res_model, res_base) = _resample_c_indices(
        time_arr, event_arr, [model_arr, baseline_arr], indices, tied_tol
    )
    differences = res_model - res_base
    low, high, n_valid = _percentile_interval(differences, confidence)
    valid = differences[np.isfinite(differences)]
    if valid.size:
        tail = min(np.mean(valid <= 0), np.mean(valid >= 0))
        p_value = float(min(1.0, 2.0 * tail))
    else:
        p_value = float("nan")
    return PairedCIndexDifference(
        model=_bootstrap_result(c_model, res_model, indices, confidence),
        baseline=_bootstrap_result(c_base, res_base, indices, confidence),
        estimate=c_model - c_base,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        n_resamples=int(indices.shape[0]),
        n_valid=n_valid,
        resample_indices=indices,
        resample_differences=differences,
    )


# --------------------------------------------------------------------------- torchsurv
def torchsurv_c_index(
    time, event, risk, *, method: str = "noether", confidence: float = 0.95
) -> TorchsurvCIndex | NotEstimable:
    """torchsurv's ``ConcordanceIndex`` and its ``confidence_interval(method)``, for reporting beside ours.

    ``method`` is torchsurv's: "noether" (default), "conservative" or "bootstrap"
    (torchsurv's bootstrap draws from torch's global generator, so it is not seeded here).
    """
    from torchsurv.metrics.cindex import ConcordanceIndex

    time_arr, event_arr = as_survival_arrays(time, event)
    risk_arr = as_scores(risk, time_arr.size)
    if isinstance(harrell_c_index(time_arr, event_arr, risk_arr), NotEstimable):
        return NotEstimable(_no_pairs_reason(event_arr))
    metric = ConcordanceIndex()
    estimate = metric(torch.from_numpy(risk_arr), torch.from_numpy(event_arr), torch.from_numpy(time_arr))
    try:
        low, high = metric.confidence_interval(method=method, alpha=1.0 - confidence)
    except ValueError as exc:  # "The standard error of the concordance index must be a positive value."
        reason = f"torchsurv {method} interval undefined at C = {float(estimate):g} ({exc})"
        return TorchsurvCIndex(float(estimate), math.nan, math.nan, method, reason)
    return TorchsurvCIndex(float(estimate), float(low), float(high), method)
