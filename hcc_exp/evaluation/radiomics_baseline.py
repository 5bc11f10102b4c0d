"""The radiomics baseline: IBSI features of tumour and margin per phase, penalised Cox and logistic models.

The reviewer's question "does the network beat hand-crafted radiomics?" is answered on the
same patients and splits as the network:

1. :func:`extract_cohort_features` reads each patient's preprocessed volumes (the cache the
   network was trained on: phases x regions, intensities in [0, 1]) and computes, for the
   ``tumour`` and ``margin`` regions of every phase, the features of
   :func:`hcc_exp.evaluation.radiomics_features.roi_features` (intensity statistics,
   histogram entropy / uniformity, 3D-merged GLCM) after fixed-bin-size discretisation into
   :data:`N_LEVELS` grey levels of width ``1 / N_LEVELS``;
2. :func:`fit_radiomics_models` fits, on the TRAINING split only, after dropping features that
   are constant there and standardising (train mean / SD; missing values -> train median):
   an elastic-net Cox model per endpoint (scikit-survival ``CoxnetSurvivalAnalysis``, the
   penalty chosen by ``cv_folds``-fold cross-validated C-index over its own alpha path) and an
   L2-penalised logistic model for MVI (scikit-learn ``LogisticRegressionCV``, inverse penalty
   chosen by cross-validated ROC AUC);
3. :meth:`RadiomicsModels.predict` gives ``os_risk``, ``rfs_risk`` and ``mvi_prob`` for every
   patient, in the layout of a run's ``predictions.csv``, to be scored like the network.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.evaluation.radiomics_features import roi_features
from hcc_exp.evaluation.survival import survival_array
from hcc_exp.vocabulary import (
    ENDPOINTS,
    MVI_LABEL,
    MVI_PROBABILITY,
    PATIENT_ID,
    REGIONS,
    SPLIT,
    event_column,
    risk_column,
    time_column,
)

N_LEVELS = 32
"""Grey levels of the fixed bin size discretisation of the cache's [0, 1] intensities."""
FEATURE_REGIONS: tuple[str, ...] = ("tumour", "margin")
L1_RATIO = 0.5
N_ALPHAS = 30
CV_FOLDS = 5


def extract_cohort_features(
    cache: PreprocessedCohort, patient_ids: list[str] | None = None, *, progress: bool = False
) -> pd.DataFrame:
    """One row per patient: ``patient_id`` and ``<phase>_<region>_<feature>`` columns."""
    from hcc_exp.progress import patient_progress

    ids = patient_ids if patient_ids is not None else cache.patient_ids()
    rows = []
    with patient_progress("radiomics", enabled=progress) as bar:
        task = bar.add_task("", total=len(ids))
        for pid in ids:
            image, masks = cache.load(pid)
            row: dict[str, Any] = {PATIENT_ID: pid}
            for p, phase in enumerate(cache.phases):
                for region in FEATURE_REGIONS:
                    mask = np.asarray(masks[p, REGIONS.index(region)]) > 0
                    features = roi_features(
                        np.asarray(image[p], dtype=np.float32), mask, bin_width=1.0 / N_LEVELS, n_levels=N_LEVELS
                    )
                    row.update({f"{phase}_{region}_{k}": v for k, v in features.items()})
            rows.append(row)
            bar.advance(task)
    return pd.DataFrame(rows)


@dataclass
class _Standardiser:
    """Train-split feature selection (non-constant, finite somewhere), median imputation, z-scores."""

    columns: list[str]
    median: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> _Standardiser:
        values = frame.to_numpy(dtype=float)
        median = np.nanmedian(np.where(np.isfinite(values), values, np.nan), axis=0)
        filled = np.where(np.isfinite(values), values, median)
        sd = filled.std(axis=0)
        keep = np.isfinite(median) & (sd > 1e-12)
        return cls(
            [c for c, k in zip(frame.columns, keep, strict=True) if k],
            median[keep],
            filled[:, keep].mean(axis=0),
            sd[keep],
        )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.columns].to_numpy(dtype=float)
        values = np.where(np.isfinite(values), values, self.median)
        return (values - self.mean) / self.scale


@dataclass
class RadiomicsModels:
    """The fitted radiomics baseline: scaler, one Coxnet per endpoint, the MVI logistic model.

    Attributes:
        standardiser: features kept and their train-split centring / scaling.
        cox: endpoint -> fitted ``CoxnetSurvivalAnalysis`` (one alpha), or the reason it is absent.
        mvi: fitted ``LogisticRegressionCV``, or the reason it is absent.
        details: chosen penalties, cross-validated scores and number of non-zero coefficients.
    """

    standardiser: _Standardiser
    cox: dict[str, Any]
    mvi: Any
    details: dict[str, float] = field(default_factory=dict)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """``patient_id, os_risk, rfs_risk, mvi_prob`` (NaN where a model is absent)."""
        x = self.standardiser.transform(features)
        out = pd.DataFrame({PATIENT_ID: features[PATIENT_ID].astype(str).to_numpy()})
        for endpoint in ENDPOINTS:
            model = self.cox.get(endpoint)
            out[risk_column(endpoint)] = model.predict(x) if not isinstance(model, str) else np.nan
        out[MVI_PROBABILITY] = self.mvi.predict_proba(x)[:, 1] if not isinstance(self.mvi, str) else np.nan
        return out


def fit_coxnet(x: np.ndarray, time, event, *, seed: int, l1_ratio: float = L1_RATIO, cv_folds: int = CV_FOLDS):
    """Elastic-net Cox with the penalty chosen by cross-validated C-index on (x, time, event).

    Returns:
        ``(model refitted on all rows at the chosen alpha, details dict)``.
    """
    from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
    from sklearn.model_selection import GridSearchCV, KFold
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    y = survival_array(time, event)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, FitFailedWarning, UserWarning, RuntimeWarning))
        path = CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, alpha_min_ratio=0.01, n_alphas=N_ALPHAS, max_iter=100_000).fit(x, y)
        search = GridSearchCV(
            CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, max_iter=100_000),
            param_grid={"alphas": [[float(a)] for a in path.alphas_]},
            cv=KFold(cv_folds, shuffle=True, random_state=seed),
            error_score=0.5,
            refit=False,
        ).fit(x, y)
        # Best cross-validated C-index first; ties and a refit that diverges (tiny alpha on few
        # events) move on to the next candidate, larger alphas preferred among equals.
        results = search.cv_results_
        alphas = np.array([p["alphas"][0] for p in results["params"]], dtype=float)
        order = np.lexsort((-alphas, -np.asarray(results["mean_test_score"], dtype=float)))
        for index in order:
            try:
                model = CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, alphas=[alphas[index]], max_iter=100_000).fit(x, y)
            except ArithmeticError:
                continue
            return model, {
                "alpha": float(alphas[index]),
                "cv_c_index": float(results["mean_test_score"][index]),
                "n_nonzero": float(np.count_nonzero(model.coef_)),
            }
    raise ArithmeticError("Coxnet diverged at every alpha of the path")


def fit_logistic(x: np.ndarray, y, *, seed: int, cv_folds: int = CV_FOLDS):
    """L2-penalised logistic regression, inverse penalty C chosen by cross-validated ROC AUC."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(y, dtype=int)
    folds = int(min(cv_folds, np.bincount(labels, minlength=2).min()))
    if folds < 2:
        raise ValueError("fewer than 2 patients in a class: cross-validation impossible")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning, FutureWarning))
        model = LogisticRegressionCV(
            Cs=10, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="roc_auc", max_iter=5000
        ).fit(x, labels)
    return model, {"C": float(np.ravel(model.C_)[0]), "cv_auc": float(np.max(np.mean(next(iter(model.scores_.values())), axis=0)))}


def fit_radiomics_models(features: pd.DataFrame, labels: pd.DataFrame, *, seed: int = 0) -> RadiomicsModels:
    """Fit the baseline on the training split (see the module docstring).

    Args:
        features: :func:`extract_cohort_features` output.
        labels: ``patient_id, split`` and the outcome columns (cache ``labels.csv``).
    """
    merged = features.merge(labels.assign(**{PATIENT_ID: labels[PATIENT_ID].astype(str)}), on=PATIENT_ID)
    train = merged[merged[SPLIT] == "train"]
    feature_columns = [c for c in features.columns if c != PATIENT_ID]
    standardiser = _Standardiser.fit(train[feature_columns])
    x = standardiser.transform(train)
    details: dict[str, float] = {"n_features": float(len(standardiser.columns)), "n_train": float(len(train))}
    cox: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        event = train[event_column(endpoint)].to_numpy(dtype=float)
        if event.sum() < CV_FOLDS:
            cox[endpoint] = f"{int(event.sum())} training events: too few for {CV_FOLDS}-fold cross-validation"
            continue
        try:
            cox[endpoint], info = fit_coxnet(x, train[time_column(endpoint)].to_numpy(float), event, seed=seed)
        except (ValueError, ArithmeticError) as exc:
            cox[endpoint] = f"Coxnet failed: {exc}"
            continue
        details.update({f"{endpoint}_{k}": v for k, v in info.items()})
    known = np.isfinite(train[MVI_LABEL].to_numpy(dtype=float))
    try:
        mvi, info = fit_logistic(x[known], train.loc[known, MVI_LABEL].to_numpy(float), seed=seed)
        details.update({f"mvi_{k}": v for k, v in info.items()})
    except ValueError as exc:
        mvi = f"logistic model failed: {exc}"
    return RadiomicsModels(standardiser, cox, mvi, details)
