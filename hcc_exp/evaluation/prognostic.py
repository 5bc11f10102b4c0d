"""Survival statistics reviewers ask for beyond the C-index: subgroups, calibration slope, Brier.

Pure functions on arrays (times in days, ``risk`` = Cox linear predictor, higher = worse):

* :func:`subgroup_c_index`: Harrell's C with its bootstrap CI within each level of a grouping
  variable (institution, sex, BCLC stage); a level without a comparable pair carries the reason.
* :func:`calibration_at_horizon`: calibration intercept and slope at a horizon ``t`` by the
  Poisson-regression method of Crowson, Atkinson & Therneau (Stat Methods Med Res 2016;25:1692):
  follow-up is censored at ``t``; each patient's expected count is the predicted cumulative
  hazard up to ``min(T_i, t)``, ``E_i = H0(min(T_i, t)) exp(lp_i)``; the intercept ``a`` of
  ``d_i ~ Poisson(exp(a) E_i)`` is calibration-in-the-large (``exp(a)`` = observed / expected,
  0 = perfect) and the slope ``b`` of ``d_i ~ Poisson(exp(c + b lp_i) E_i / exp(lp_i))`` the
  calibration slope (1 = perfect, < 1 = predictions too extreme). Fitted with statsmodels' GLM.
* :func:`brier_scores`: time-dependent Brier score at the horizons and the integrated Brier score
  (scikit-survival's ``brier_score`` / ``integrated_brier_score``, IPCW with the censoring
  distribution of the training split) from the Breslow survival function ``S(t | lp)``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hcc_exp.evaluation.common import NotEstimable, as_scores, as_survival_arrays
from hcc_exp.evaluation.concordance import CIndexBootstrap, bootstrap_c_index
from hcc_exp.evaluation.survival import BreslowBaseline, survival_array

MIN_SUBGROUP_PATIENTS = 5
"""Smaller subgroups are reported as not estimable (a C-index on < 5 patients says nothing)."""
IBS_GRID_POINTS = 100


def level_name(value) -> str:
    """A subgroup level as a metric-name fragment: ``"II"``, ``"M"``, ``"0"`` (``/`` and spaces replaced).

    >>> level_name("B/C"), level_name(1.0)
    ('B_C', '1')
    """
    text = str(value).strip()
    text = text[:-2] if text.endswith(".0") else text
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "missing"


@dataclass(frozen=True)
class SubgroupCIndex:
    """C-index within one subgroup level: patients, events and the bootstrap result."""

    level: str
    n: int
    events: int
    result: CIndexBootstrap | NotEstimable


def subgroup_c_index(
    time, event, risk, groups, *, rng: np.random.Generator, n_resamples: int = 1000, confidence: float = 0.95
) -> list[SubgroupCIndex]:
    """Harrell's C with a percentile bootstrap CI per level of ``groups`` (levels sorted).

    Args:
        time, event, risk: (n,) outcome and linear predictor.
        groups: (n,) subgroup label per patient; missing (None / NaN) patients are left out.
        rng: seeded generator for the resamples (drawn per subgroup).
    """
    time_arr, event_arr = as_survival_arrays(time, event)
    risk_arr = as_scores(risk, time_arr.size)
    labels = np.asarray([None if _missing(g) else level_name(g) for g in np.asarray(groups, dtype=object)], dtype=object)
    out = []
    for level in sorted({g for g in labels if g is not None}):
        keep = labels == level
        n, events = int(keep.sum()), int(event_arr[keep].sum())
        if n < MIN_SUBGROUP_PATIENTS:
            result: CIndexBootstrap | NotEstimable = NotEstimable(
                f"{n} patient(s) in subgroup {level} (< {MIN_SUBGROUP_PATIENTS})"
            )
        elif events == 0:
            result = NotEstimable(f"no events in subgroup {level} ({n} patients)")
        else:
            result = bootstrap_c_index(
                time_arr[keep], event_arr[keep], risk_arr[keep], rng=rng, n_resamples=n_resamples, confidence=confidence
            )
            if isinstance(result, NotEstimable):
                result = NotEstimable(f"subgroup {level}: {result.reason}")
        out.append(SubgroupCIndex(level, n, events, result))
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in ("", "nan")


# --------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class CalibrationFit:
    """Calibration at one horizon (Crowson et al. 2016).

    Attributes:
        horizon_days: t.
        intercept: calibration-in-the-large ``log(O/E)`` (0 = perfect).
        slope: calibration slope (1 = perfect).
        slope_se: its standard error (model-based).
        observed, expected: events up to t and the sum of predicted cumulative hazards.
    """

    horizon_days: float
    intercept: float
    slope: float
    slope_se: float
    observed: int
    expected: float


def expected_events(baseline: BreslowBaseline, lp, time, horizon_days: float) -> np.ndarray:
    """(n,) predicted cumulative hazard up to ``min(T_i, t)``: ``H0(min(T_i, t)) exp(lp_i - offset)``."""
    follow = np.minimum(np.asarray(time, dtype=float), float(horizon_days))
    idx = np.searchsorted(baseline.times, follow, side="right") - 1
    h0 = np.where(idx >= 0, baseline.cumulative_hazard[np.clip(idx, 0, None)], 0.0)
    return h0 * np.exp(np.asarray(lp, dtype=float) - baseline.offset)


def calibration_at_horizon(
    time, event, lp, baseline: BreslowBaseline, horizon_days: float
) -> CalibrationFit | NotEstimable:
    """Calibration intercept and slope at ``horizon_days`` (see the module docstring)."""
    import statsmodels.api as sm

    time_arr, event_arr = as_survival_arrays(time, event)
    lp_arr = as_scores(lp, time_arr.size, name="linear predictor")
    if horizon_days > baseline.max_time:
        return NotEstimable(f"{horizon_days:g} d is beyond the training follow-up ({baseline.max_time:g} d)")
    observed = (event_arr & (time_arr <= horizon_days)).astype(float)
    expected = expected_events(baseline, lp_arr, time_arr, horizon_days)
    usable = expected > 0  # patients censored before the first training event time contribute nothing
    if observed[usable].sum() == 0:
        return NotEstimable(f"no events up to {horizon_days:g} d")
    if usable.sum() < 3:
        return NotEstimable("fewer than 3 patients with follow-up after the first event time")
    obs, exp_ = observed[usable], expected[usable]
    intercept = math.log(obs.sum() / exp_.sum())  # the intercept-only Poisson MLE in closed form
    lp_used = lp_arr[usable]
    if np.ptp(lp_used) < 1e-12:
        return NotEstimable("all linear predictors equal: the slope is undefined")
    # log E_i = log H0(min(T_i, t)) + lp_i - offset: the follow-up part stays an offset and only
    # the linear predictor gets a free coefficient (Crowson et al.: glm(d ~ lp + offset(log E - lp))).
    with warnings.catch_warnings():  # tiny splits: statsmodels warns of separation, the SE says it
        warnings.simplefilter("ignore")
        fit = sm.GLM(
            obs, sm.add_constant(lp_used), family=sm.families.Poisson(), offset=np.log(exp_) - lp_used
        ).fit(tol=1e-12, maxiter=200)
    return CalibrationFit(
        horizon_days=float(horizon_days),
        intercept=float(intercept),
        slope=float(fit.params[1]),
        slope_se=float(fit.bse[1]),
        observed=int(obs.sum()),
        expected=float(exp_.sum()),
    )


# --------------------------------------------------------------------------- Brier
@dataclass(frozen=True)
class BrierScores:
    """Brier score at each horizon and the integrated Brier score over ``grid_days``."""

    horizons_days: tuple[float, ...]
    brier: tuple[float, ...]
    integrated: float
    grid_days: np.ndarray


def brier_grid(train_time, test_time, test_event, baseline: BreslowBaseline, n_points: int = IBS_GRID_POINTS) -> np.ndarray:
    """Times for the integrated Brier score: the test split's 10th to 90th percentile of event
    times, kept inside the training follow-up (scikit-survival needs times inside the test range)."""
    times = np.asarray(test_time, dtype=float)
    events = times[np.asarray(test_event, dtype=bool)]
    ref = events if events.size >= 2 else times
    low, high = np.percentile(ref, [10, 90])
    high = min(high, baseline.max_time, float(np.max(train_time)), times.max() - 1e-6)
    if not high > low:
        return np.array([])
    return np.linspace(low, high, n_points)


def brier_scores(
    train_time, train_event, test_time, test_event, test_lp, baseline: BreslowBaseline, horizons_days: Sequence[float]
) -> BrierScores | NotEstimable:
    """Time-dependent Brier scores at ``horizons_days`` and the integrated Brier score.

    Args:
        train_time, train_event: the training split (censoring distribution for the IPC weights).
        test_time, test_event, test_lp: the split scored.
        baseline: Breslow baseline of the training split; ``S(t | lp)`` comes from it.
    """
    from sksurv.metrics import brier_score, integrated_brier_score

    tr_t, tr_e = as_survival_arrays(train_time, train_event, name="training outcome")
    te_t, te_e = as_survival_arrays(test_time, test_event)
    lp = as_scores(test_lp, te_t.size, name="linear predictor")
    horizons = [float(h) for h in horizons_days]
    limit = min(te_t.max(), tr_t.max(), baseline.max_time)
    beyond = [h for h in horizons if not h < limit]
    if beyond:
        return NotEstimable(f"horizon {beyond[0]:g} d is not inside the follow-up (ends {limit:g} d)")
    y_train, y_test = survival_array(tr_t, tr_e), survival_array(te_t, te_e)
    try:
        _, scores = brier_score(y_train, y_test, baseline.survival(lp, horizons), horizons)
        grid = brier_grid(tr_t, te_t, te_e, baseline)
        if grid.size < 2:
            return NotEstimable("follow-up too short for an integrated Brier score")
        ibs = integrated_brier_score(y_train, y_test, baseline.survival(lp, grid), grid)
    except ValueError as exc:  # sksurv: censoring survival zero, times outside the range
        return NotEstimable(f"Brier score: {exc}")
    return BrierScores(tuple(horizons), tuple(float(s) for s in scores), float(ibs), grid)
