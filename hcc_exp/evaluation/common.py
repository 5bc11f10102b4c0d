"""Shared pieces of the evaluation modules: the "not estimable" result and input checks.

A statistic that cannot be computed on a split (no event before a horizon, all
patients censored, one class only) is not an error of the user: the pure
functions return :class:`NotEstimable` with the reason, and the orchestrator
writes the reason into the tables and ``reasons.json`` instead of a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hcc_exp.errors import EvaluationInputError
from hcc_exp.vocabulary import ENDPOINT_TITLES, SPLIT_TITLES, SPLITS  # noqa: F401  (re-exported)

__all__ = ["EvaluationInputError", "NotEstimable"]



@dataclass(frozen=True)
class NotEstimable:
    """A statistic that cannot be computed on the data given, and why (in words)."""

    reason: str

    def __bool__(self) -> bool:  # lets ``if result:`` read as "was estimable"
        return False


def as_survival_arrays(time, event, *, name: str = "survival") -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(time float64 (n,), event bool (n,))``.

    Raises:
        EvaluationInputError: lengths differ, a time is NaN or negative, an event is not 0/1.
    """
    time_arr = np.asarray(time, dtype=float).reshape(-1)
    event_raw = np.asarray(event).reshape(-1)
    if time_arr.shape != event_raw.shape:
        raise EvaluationInputError(f"{name}: time has {time_arr.size} values but event has {event_raw.size}")
    if not np.all(np.isfinite(time_arr)):
        raise EvaluationInputError(f"{name}: time contains NaN or infinite values")
    if np.any(time_arr < 0):
        raise EvaluationInputError(f"{name}: time contains negative values")
    if event_raw.dtype != bool:
        event_num = np.asarray(event_raw, dtype=float)
        if not np.all(np.isin(event_num, (0.0, 1.0))):
            raise EvaluationInputError(f"{name}: event must be 0/1 or boolean")
        event_arr = event_num.astype(bool)
    else:
        event_arr = event_raw
    return np.ascontiguousarray(time_arr), np.ascontiguousarray(event_arr)


def as_scores(values, n: int, *, name: str = "risk") -> np.ndarray:
    """Validate a score vector of length ``n`` (finite floats) and return it as float64."""
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size != n:
        raise EvaluationInputError(f"{name}: expected {n} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(f"{name}: contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def as_binary_labels(values, *, name: str = "label") -> np.ndarray:
    """Validate 0/1 labels and return them as int64."""
    arr = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isin(arr, (0.0, 1.0))):
        raise EvaluationInputError(f"{name}: labels must be 0 or 1")
    return arr.astype(np.int64)


def truncate_follow_up(time, event, truncate_days: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Administrative censoring at ``truncate_days``: later times become censored at that day.

    Used for the paper's 5-year window (Figure 3). ``None`` returns the input unchanged.

    >>> truncate_follow_up([100.0, 2000.0], [1, 1], 1825.0)
    (array([ 100., 1825.]), array([ True, False]))
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    if truncate_days is None:
        return time_arr, event_arr
    beyond = time_arr > truncate_days
    return np.where(beyond, float(truncate_days), time_arr), event_arr & ~beyond
