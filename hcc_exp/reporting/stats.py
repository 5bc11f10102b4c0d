"""Statistics of an ablation: arrays in, numbers out (no file IO, no logging).

Two kinds of evidence are reported for each arm of a sweep against the
reference arm ``full``:

* across seeds: mean with a 95 % t-interval, paired t-test and Wilcoxon
  signed-rank test of the per-seed metric (paired by seed), Holm-adjusted
  across arms;
* across patients: a paired bootstrap of Harrell's C-index difference and of
  the MVI ROC AUC difference (arm minus full) where every resample draws the
  *same* patients for every arm and seed, so the variability of the cohort
  cancels in the difference (the C-index and its vectorised bootstrap are
  :mod:`hcc_exp.evaluation.concordance`; the AUC's is :func:`bootstrap_auc`;
  this module pools them over seeds).

Quantities that cannot be estimated (fewer than two seeds, zero variance,
no comparable pairs) come back as ``nan`` with a ``reason`` in words instead
of raising, so a half-finished sweep still yields a table.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.concordance import paired_bootstrap_difference

CONFIDENCE = 0.95
SPREAD_TOL = 1e-12
"""Relative spread below which values count as identical (no variance for a t statistic)."""


# --------------------------------------------------------------------------- seeds
@dataclass(frozen=True)
class MeanInterval:
    """Mean over seeds with a two-sided t-interval.

    Attributes:
        mean: arithmetic mean of the finite values (nan when there are none).
        low, high: interval bounds (nan when not estimable).
        n: number of finite values used.
        reason: why the interval is not estimable, else None.
    """

    mean: float
    low: float
    high: float
    n: int
    reason: str | None = None

    @property
    def estimable(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class PairedComparison:
    """Arm vs reference over seeds, paired by seed.

    Attributes:
        n_pairs: seeds present (finite) in both arms.
        diff: mean of ``arm - reference`` over the pairs, with its t-interval.
        t_statistic, t_p: ``scipy.stats.ttest_rel(arm, reference)`` (two-sided).
        wilcoxon_statistic, wilcoxon_p: ``scipy.stats.wilcoxon(arm, reference)``
            (two-sided, zero differences dropped, exact distribution for small n).
        reason: why the tests are not estimable (the interval carries its own reason).
    """

    n_pairs: int
    diff: MeanInterval
    t_statistic: float
    t_p: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    reason: str | None = None


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _no_spread(x: np.ndarray) -> bool:
    """All values equal up to rounding (0.8 - 0.7 and 0.7 - 0.6 differ in the last bits)."""
    return bool(np.ptp(x) <= SPREAD_TOL * max(1.0, float(np.max(np.abs(x)))))


def mean_t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> MeanInterval:
    """Mean and ``confidence`` t-interval (df = n - 1, standard error with ddof = 1).

    Args:
        values: one metric value per seed, shape (n,); nan entries are ignored.
        confidence: two-sided coverage, e.g. 0.95.

    Returns:
        The mean and interval; with fewer than two values the interval is nan with a reason.
        With zero spread the interval collapses to the mean (every seed gave the same value).

    Three seeds 0.70, 0.72, 0.74: mean 0.72, SE 0.02 / sqrt(3), t(0.975, 2) = 4.303:

    >>> r = mean_t_interval([0.70, 0.72, 0.74])
    >>> round(r.mean, 4), round(r.low, 4), round(r.high, 4), r.n
    (0.72, 0.6703, 0.7697, 3)
    >>> mean_t_interval([0.7]).reason
    'not estimable: 1 seed (a t-interval needs at least 2)'
    """
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0, "not estimable: no values")
    mean = float(x.mean())
    if n < 2:
        return MeanInterval(mean, math.nan, math.nan, n, "not estimable: 1 seed (a t-interval needs at least 2)")
    if _no_spread(x):
        return MeanInterval(mean, mean, mean, n)
    sem = float(stats.sem(x, ddof=1))
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return MeanInterval(mean, float(low), float(high), n)


def paired_seed_comparison(
    arm_values: Sequence[float] | np.ndarray,
    reference_values: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """Paired t-test and Wilcoxon signed-rank test of ``arm - reference`` over seeds.

    Args:
        arm_values, reference_values: metric per seed, shape (n,), aligned so position k
            is the same seed in both; pairs with a nan on either side are dropped.
        confidence: coverage of the interval of the mean difference.

    Returns:
        The comparison; tests are nan with a reason when fewer than two pairs remain,
        when every difference is zero, or (t-test) when the differences do not vary.
    """
    arm = np.asarray(arm_values, dtype=float).ravel()
    ref = np.asarray(reference_values, dtype=float).ravel()
    if arm.shape != ref.shape:
        raise ValueError(f"paired values differ in length: arm {arm.size}, reference {ref.size}")
    keep = np.isfinite(arm) & np.isfinite(ref)
    arm, ref = arm[keep], ref[keep]
    n = int(arm.size)
    diff = mean_t_interval(arm - ref, confidence)
    nan = math.nan
    if n < 2:
        reason = f"not estimable: {n} paired seed(s) (tests need at least 2)"
        return PairedComparison(n, diff, nan, nan, nan, nan, reason)
    d = arm - ref
    if np.all(d == 0):
        return PairedComparison(n, diff, nan, nan, nan, nan, "not estimable: every paired difference is zero")
    reasons = []
    if _no_spread(d):
        t_stat, t_p = nan, nan
        reasons.append("t-test not estimable: paired differences do not vary")
    else:
        result = stats.ttest_rel(arm, ref)
        t_stat, t_p = float(result.statistic), float(result.pvalue)
    with warnings.catch_warnings():
        # scipy warns about the normal approximation when ties/zeros force it; the value is still its answer.
        warnings.simplefilter("ignore", UserWarning)
        w = stats.wilcoxon(arm, ref)
    reason = "; ".join(reasons) if reasons else None
    return PairedComparison(n, diff, t_stat, t_p, float(w.statistic), float(w.pvalue), reason)


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error), nan entries left out of the family.

    Args:
        p_values: shape (m,), raw p-values; nan marks a test that was not estimable.

    Returns:
        Shape (m,): adjusted p-values in the input order, nan where the input was nan.

    Sorted 0.01, 0.03, 0.04 times 3, 2, 1 give 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06:

    >>> holm_adjust([0.04, 0.01, float("nan"), 0.03])
    array([0.06, 0.03,  nan, 0.06])
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        # Same numbers as statsmodels' multipletests(method="holm") (tested), which costs a
        # gc.collect() per call -- a quarter second each once torch is loaded.
        order = np.argsort(p[ok], kind="stable")
        m = ok.size
        stepped = np.maximum.accumulate((m - np.arange(m)) * p[ok][order])
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
        out[ok] = adjusted
    return out


# --------------------------------------------------------------------------- patients
@dataclass(frozen=True)
class PairedBootstrap:
    """Paired patient bootstrap of a C-index or AUC difference, averaged over shared seeds.

    Attributes:
        estimate: mean over seeds of ``C(arm, seed) - C(reference, seed)`` (or of the AUCs)
            on all patients.
        low, high: percentile interval of that seed-averaged difference over resamples
            (nan when not estimable).
        n_patients: patients in the comparison.
        n_seeds: seeds shared by both arms (the pairs averaged).
        n_resamples: resamples with at least one comparable pair (used for the interval).
        reason: why the interval is not estimable, else None.
    """

    estimate: float
    low: float
    high: float
    n_patients: int
    n_seeds: int
    n_resamples: int
    reason: str | None = None

    @property
    def estimable(self) -> bool:
        return self.reason is None


def _percentile_interval(
    estimate: float, pooled: np.ndarray, n_patients: int, n_seeds: int, confidence: float, too_few: str
) -> PairedBootstrap:
    """Percentile interval of the seed-averaged per-resample differences ``pooled`` (B,), nan ones left out."""
    valid = pooled[np.isfinite(pooled)]
    if valid.size < 2:
        return PairedBootstrap(estimate, math.nan, math.nan, n_patients, n_seeds, int(valid.size), too_few)
    alpha = 1.0 - confidence
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return PairedBootstrap(estimate, float(low), float(high), n_patients, n_seeds, int(valid.size))


def pooled_paired_c_index_difference(
    time: Sequence[float] | np.ndarray,
    event: Sequence[bool] | np.ndarray,
    arm_risks: np.ndarray,
    reference_risks: np.ndarray,
    resample_indices: np.ndarray,
    confidence: float = CONFIDENCE,
) -> PairedBootstrap:
    """Paired patient bootstrap CI of Harrell's C difference (arm minus reference), pooled over seeds.

    Every seed pair is bootstrapped with
    :func:`hcc_exp.evaluation.concordance.paired_bootstrap_difference` on the *same*
    ``resample_indices``, and the per-resample differences are averaged over seeds
    before taking percentiles, so the interval covers the seed-averaged difference
    with the cohort's sampling variability paired out.

    Args:
        time, event: labels of the n patients, shape (n,) (days; 1 = event).
        arm_risks: shape (s, n), risk per seed of the arm, row k paired with...
        reference_risks: shape (s, n), ...row k of the reference arm (the same seed).
        resample_indices: shape (B, n) patient positions per resample
            (:func:`hcc_exp.evaluation.concordance.bootstrap_indices`); pass the same array for every arm.
        confidence: coverage of the percentile interval.

    Returns:
        The pooled difference and interval; not estimable (nan with a reason) without a
        seed pair or without comparable patient pairs.
    """
    arm = np.atleast_2d(np.asarray(arm_risks, dtype=float))
    ref = np.atleast_2d(np.asarray(reference_risks, dtype=float))
    n_patients = int(np.asarray(time).size)
    if arm.shape[0] != ref.shape[0] or arm.size == 0:
        reason = f"not estimable: {arm.shape[0] if arm.size else 0} arm and {ref.shape[0]} reference seed(s) to pair"
        return PairedBootstrap(math.nan, math.nan, math.nan, n_patients, 0, 0, reason)
    estimates, differences = [], []
    for arm_seed, ref_seed in zip(arm, ref, strict=True):
        result = paired_bootstrap_difference(
            time, event, arm_seed, ref_seed, indices=resample_indices, confidence=confidence
        )
        if isinstance(result, NotEstimable):
            return PairedBootstrap(math.nan, math.nan, math.nan, n_patients, arm.shape[0], 0, f"not estimable: {result.reason}")
        estimates.append(result.estimate)
        differences.append(result.resample_differences)
    return _percentile_interval(
        float(np.mean(estimates)), np.mean(differences, axis=0), n_patients, arm.shape[0], confidence,
        "not estimable: fewer than 2 resamples with comparable pairs",
    )  # fmt: skip


def bootstrap_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, indices: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for binary ``labels`` on every resample, vectorised.

    The Mann-Whitney form: ``(sum of positive ranks - n1 (n1 + 1) / 2) / (n1 n0)`` with
    average ranks for ties, which equals the trapezoidal ROC area (``roc_auc_score``).

    Args:
        labels: shape (n,), 0 / 1.
        scores: shape (n,), higher = more likely positive.
        indices: shape (B, n) patient positions per resample (an identity row gives the AUC
            on all patients).

    Returns:
        shape (B,): the AUC per resample; nan where a resample holds one class only.

    The full sample (positives 0.9, 0.4; negatives 0.5, 0.1: 3 of 4 pairs won) and a resample
    of negatives only:

    >>> bootstrap_auc([1, 0, 1, 0], [0.9, 0.5, 0.4, 0.1], np.array([[0, 1, 2, 3], [1, 1, 3, 3]]))
    array([0.75,  nan])
    """
    y = np.asarray(labels, dtype=float)[indices]
    ranks = stats.rankdata(np.asarray(scores, dtype=float)[indices], axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def pooled_paired_auc_difference(
    labels: Sequence[int] | np.ndarray,
    arm_scores: np.ndarray,
    reference_scores: np.ndarray,
    resample_indices: np.ndarray,
    confidence: float = CONFIDENCE,
) -> PairedBootstrap:
    """Paired patient bootstrap CI of the ROC AUC difference (arm minus reference), pooled over seeds.

    The AUC counterpart of :func:`pooled_paired_c_index_difference`: the same resamples for
    every seed pair, per-resample differences averaged over seeds, percentile interval.

    Args:
        labels: shape (n,), the binary outcome (MVI) of the n patients.
        arm_scores: shape (s, n), predicted probability per seed of the arm, row k paired with...
        reference_scores: shape (s, n), ...row k of the reference arm (the same seed).
        resample_indices: shape (B, n), as for the C-index; pass the same array for every arm.
        confidence: coverage of the percentile interval.
    """
    arm = np.atleast_2d(np.asarray(arm_scores, dtype=float))
    ref = np.atleast_2d(np.asarray(reference_scores, dtype=float))
    y = np.asarray(labels, dtype=float)
    n_patients = int(y.size)
    if arm.shape[0] != ref.shape[0] or arm.size == 0:
        reason = f"not estimable: {arm.shape[0] if arm.size else 0} arm and {ref.shape[0]} reference seed(s) to pair"
        return PairedBootstrap(math.nan, math.nan, math.nan, n_patients, 0, 0, reason)
    if y.min() == y.max():
        return PairedBootstrap(math.nan, math.nan, math.nan, n_patients, arm.shape[0], 0, "not estimable: one class only")
    everyone = np.arange(n_patients)[None, :]
    pairs = list(zip(arm, ref, strict=True))
    estimate = float(np.mean([bootstrap_auc(y, a, everyone)[0] - bootstrap_auc(y, r, everyone)[0] for a, r in pairs]))
    pooled = np.mean([bootstrap_auc(y, a, resample_indices) - bootstrap_auc(y, r, resample_indices) for a, r in pairs], axis=0)
    return _percentile_interval(
        estimate, pooled, n_patients, arm.shape[0], confidence, "not estimable: fewer than 2 resamples with both classes"
    )
