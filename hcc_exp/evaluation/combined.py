"""The combined (nomogram-style) model: the network's risk together with BCLC stage and AFP.

On the TRAINING split two Cox models are fitted with lifelines (Efron ties, no penalty, a tight
Newton-Raphson tolerance: lifelines' default leaves coefficients off by ~1e-4):

* clinical: ``BCLC stage (ordinal 0..4) + log10(AFP + 1)``;
* combined: the same plus the network's risk (its Cox log-hazard).

The likelihood-ratio test of the nested pair, ``LR = 2 (ll_combined - ll_clinical)`` on 1
degree of freedom, says whether the network adds to the clinical factors. The combined linear
predictor (fitted coefficients, unchanged) is then scored on internal and external like any
risk score. Patients missing BCLC or AFP are left out (complete cases; ``n`` is reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hcc_exp.evaluation.baselines import encode_baselines
from hcc_exp.evaluation.common import NotEstimable

CLINICAL_COVARIATES: tuple[str, ...] = ("bclc", "log10_afp")
NETWORK_COVARIATE = "network_risk"
TIGHT_FIT_OPTIONS = {"precision": 1e-12, "r_precision": 1e-12, "max_steps": 500}
"""lifelines' Newton-Raphson stopping rules, far tighter than its 1e-7 default."""


def clinical_design(labels: pd.DataFrame) -> pd.DataFrame:
    """``bclc`` (0..4) and ``log10_afp`` = log10(AFP + 1) per patient (NaN where missing)."""
    encoded = encode_baselines(labels)
    return pd.DataFrame(
        {"bclc": encoded["bclc"].to_numpy(float), "log10_afp": np.log10(encoded["afp"].to_numpy(float) + 1.0)},
        index=labels.index,
    )


@dataclass(frozen=True)
class CombinedModel:
    """The two nested Cox fits and their likelihood-ratio test.

    Attributes:
        coefficients: covariate -> log hazard ratio of the combined model.
        clinical_coefficients: the same for the clinical-only model.
        log_likelihood, clinical_log_likelihood: partial log-likelihoods at the optimum.
        lr_statistic, lr_df, lr_p: the likelihood-ratio test of the network's added value.
        n_train, events_train: complete-case training patients and events.
    """

    coefficients: dict[str, float]
    clinical_coefficients: dict[str, float]
    log_likelihood: float
    clinical_log_likelihood: float
    lr_statistic: float
    lr_df: int
    lr_p: float
    n_train: int
    events_train: int

    def linear_predictor(self, design: pd.DataFrame, *, clinical_only: bool = False) -> np.ndarray:
        """(n,) ``sum_k beta_k x_k`` on a design with the covariate columns (NaN rows stay NaN)."""
        coefs = self.clinical_coefficients if clinical_only else self.coefficients
        return sum(design[name].to_numpy(float) * beta for name, beta in coefs.items())


def _fit(frame: pd.DataFrame, covariates: list[str]):
    from lifelines import CoxPHFitter

    model = CoxPHFitter(penalizer=0.0)
    model.fit(frame[[*covariates, "time", "event"]], "time", "event", fit_options=TIGHT_FIT_OPTIONS)
    return model


def fit_combined_model(network_risk, time, event, design: pd.DataFrame) -> CombinedModel | NotEstimable:
    """Fit the clinical and combined Cox models on training data and test the network's addition.

    Args:
        network_risk, time, event: (n,) training rows.
        design: (n, 2) :func:`clinical_design` of the same rows.
    """
    from lifelines.exceptions import ConvergenceError

    frame = design.reset_index(drop=True).assign(
        **{NETWORK_COVARIATE: np.asarray(network_risk, float), "time": np.asarray(time, float), "event": np.asarray(event, float)}
    )
    complete = frame.dropna()
    if complete["event"].sum() < 5:
        return NotEstimable(f"{int(complete['event'].sum())} training events with BCLC and AFP known (< 5)")
    constant = [c for c in (*CLINICAL_COVARIATES, NETWORK_COVARIATE) if complete[c].nunique() < 2]
    if constant:
        return NotEstimable(f"{', '.join(constant)} constant on the training split: Cox model not identifiable")
    try:
        clinical = _fit(complete, list(CLINICAL_COVARIATES))
        combined = _fit(complete, [*CLINICAL_COVARIATES, NETWORK_COVARIATE])
    except ConvergenceError as exc:
        return NotEstimable(f"Cox fit did not converge: {str(exc).splitlines()[0]}")
    lr = max(0.0, 2.0 * (combined.log_likelihood_ - clinical.log_likelihood_))
    return CombinedModel(
        coefficients={k: float(v) for k, v in combined.params_.items()},
        clinical_coefficients={k: float(v) for k, v in clinical.params_.items()},
        log_likelihood=float(combined.log_likelihood_),
        clinical_log_likelihood=float(clinical.log_likelihood_),
        lr_statistic=float(lr),
        lr_df=1,
        lr_p=float(stats.chi2.sf(lr, 1)),
        n_train=len(complete),
        events_train=int(complete["event"].sum()),
    )
