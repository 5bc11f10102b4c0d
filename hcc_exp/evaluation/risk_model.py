"""The risk model of a run: risk-group cut-offs and Breslow baselines, fitted on the training split.

A Cox head gives a log relative hazard only. :class:`RiskModel` holds what turns it into
something a clinician reads, all fitted on the TRAINING split's predictions of the best
checkpoint: the median OS and RFS risk (high risk = risk above it, the cut of the
evaluation's Kaplan-Meier stratification, :mod:`hcc_exp.evaluation.risk_groups`) and the
Breslow cumulative baseline hazards (:func:`hcc_exp.evaluation.survival.fit_breslow`),
which give ``S(t | x)`` at the report horizons.

:func:`fit_endpoint_risk_model` is the one fitting path: training fits the run's model with it
at the end of a run (stored as ``RUN_DIR/checkpoints/risk_model.json``, see
:mod:`hcc_exp.run_folder`), and ``evaluate`` uses the same cut and baseline for its risk groups
and calibration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.data.io import atomic_path
from hcc_exp.errors import RunFolderError
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.risk_groups import high_risk_indicator, median_cut
from hcc_exp.evaluation.survival import BreslowBaseline, fit_breslow
from hcc_exp.vocabulary import ENDPOINTS, PATIENT_ID, SPLIT, event_column, risk_column, time_column


# --------------------------------------------------------------------------- risk model
@dataclass(frozen=True)
class EndpointRiskModel:
    """Risk cut and baseline hazard of one Cox head (OS or RFS).

    Attributes:
        cutoff: the training split's median log-risk; high risk = risk > cutoff.
        baseline: Breslow baseline fitted on the training split, or None (see ``reason``).
        reason: why there is no baseline (e.g. no training events), else None.
    """

    cutoff: float
    baseline: BreslowBaseline | None
    reason: str | None = None

    @property
    def breslow(self) -> BreslowBaseline | NotEstimable:
        """The baseline, or why there is none (the form the evaluation's statistics take)."""
        return self.baseline if self.baseline is not None else NotEstimable(self.reason or "no baseline")

    def risk_group(self, risk) -> np.ndarray:
        """(n,) ``"high"`` / ``"low"`` per patient."""
        return np.where(high_risk_indicator(risk, self.cutoff), "high", "low")

    def survival(self, risk, horizons_days) -> np.ndarray:
        """(n, h) S(t | risk); NaN without a baseline or beyond the training follow-up."""
        risk = np.atleast_1d(np.asarray(risk, dtype=float))
        if self.baseline is None:
            return np.full((risk.size, len(np.atleast_1d(horizons_days))), np.nan)
        return self.baseline.survival(risk, horizons_days)

    def to_dict(self) -> dict[str, Any]:
        baseline = None
        if self.baseline is not None:
            baseline = {
                "times_days": [float(t) for t in self.baseline.times],
                "cumulative_hazard": [float(h) for h in self.baseline.cumulative_hazard],
                "offset": float(self.baseline.offset),
                "max_time_days": float(self.baseline.max_time),
            }
        return {"cutoff": float(self.cutoff), "baseline": baseline, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EndpointRiskModel:
        raw = data.get("baseline")
        baseline = None
        if raw is not None:
            baseline = BreslowBaseline(
                times=np.asarray(raw["times_days"], dtype=float),
                cumulative_hazard=np.asarray(raw["cumulative_hazard"], dtype=float),
                offset=float(raw["offset"]),
                max_time=float(raw["max_time_days"]),
            )
        return cls(cutoff=float(data["cutoff"]), baseline=baseline, reason=data.get("reason"))


@dataclass(frozen=True)
class RiskModel:
    """What turns the two Cox heads' log-risks into risk groups and survival probabilities.

    Attributes:
        os, rfs: per-endpoint cut and Breslow baseline, fitted on the training split.
        horizons_days: times (days) at which survival is reported (``evaluation.horizons_days``).
        n_train: training patients it was fitted on.
    """

    os: EndpointRiskModel
    rfs: EndpointRiskModel
    horizons_days: tuple[int, ...]
    n_train: int
    extra: dict[str, Any] = field(default_factory=dict)

    def endpoint(self, name: str) -> EndpointRiskModel:
        return {"os": self.os, "rfs": self.rfs}[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizons_days": [int(h) for h in self.horizons_days],
            "n_train": int(self.n_train),
            "os": self.os.to_dict(),
            "rfs": self.rfs.to_dict(),
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskModel:
        return cls(
            os=EndpointRiskModel.from_dict(data["os"]),
            rfs=EndpointRiskModel.from_dict(data["rfs"]),
            horizons_days=tuple(int(h) for h in data["horizons_days"]),
            n_train=int(data["n_train"]),
            extra=dict(data.get("extra", {})),
        )

    def save(self, path: Path | str) -> Path:
        """Write the model as strict JSON (no NaN), atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> RiskModel:
        path = Path(path)
        if not path.is_file():
            raise RunFolderError(f"risk model {path} does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RunFolderError(f"risk model {path} is malformed: {exc}") from exc


def fit_endpoint_risk_model(risk, time, event) -> EndpointRiskModel:
    """Cut-off and Breslow baseline of one Cox head, from the training split.

    Args:
        risk: (n,) log relative hazards of the training patients.
        time, event: (n,) their outcomes (days, 0 / 1).

    Returns:
        The median of ``risk`` as the cut (high risk = strictly above) and the Breslow
        baseline (None with the reason when there are no training events).

    >>> model = fit_endpoint_risk_model([0.0, 1.0, 2.0], [5.0, 3.0, 1.0], [1, 1, 1])
    >>> model.cutoff, model.risk_group([0.5, 1.5]).tolist()
    (1.0, ['low', 'high'])
    """
    cutoff = median_cut(risk)
    baseline = fit_breslow(risk, time, event)
    if isinstance(baseline, NotEstimable):
        return EndpointRiskModel(cutoff, None, baseline.reason)
    return EndpointRiskModel(cutoff, baseline)


def fit_risk_model(predictions: pd.DataFrame, labels: pd.DataFrame, horizons_days: Sequence[int]) -> RiskModel:
    """Fit the risk cuts and Breslow baselines on the training split's predictions.

    Args:
        predictions: ``patient_id, split, os_risk, rfs_risk`` (``RUN_DIR/predictions.csv``).
        labels: ``patient_id, os_time_days, os_event, rfs_time_days, rfs_event`` (cache ``labels.csv``).
        horizons_days: report horizons (days), e.g. (365, 730).

    Raises:
        RunFolderError: no training rows, missing columns, or training patients without labels.
    """
    needed = {PATIENT_ID, SPLIT, *(risk_column(e) for e in ENDPOINTS)}
    if needed - set(predictions.columns):
        raise RunFolderError(f"predictions lack columns {sorted(needed - set(predictions.columns))}")
    needed_labels = {PATIENT_ID, *(time_column(e) for e in ENDPOINTS), *(event_column(e) for e in ENDPOINTS)}
    if needed_labels - set(labels.columns):
        raise RunFolderError(f"labels lack columns {sorted(needed_labels - set(labels.columns))}")
    train = predictions[predictions[SPLIT] == "train"].copy()
    if train.empty:
        raise RunFolderError("predictions hold no 'train' rows: the risk model is fitted on the training split")
    train[PATIENT_ID] = train[PATIENT_ID].astype(str)
    label_frame = labels.assign(**{PATIENT_ID: labels[PATIENT_ID].astype(str)}).set_index(PATIENT_ID)
    missing = sorted(set(train[PATIENT_ID]) - set(label_frame.index))
    if missing:
        raise RunFolderError(f"training patients without labels: {', '.join(missing[:5])}")
    outcome = label_frame.loc[train[PATIENT_ID]]
    endpoints = {
        name: fit_endpoint_risk_model(
            train[risk_column(name)].to_numpy(dtype=float),
            outcome[time_column(name)].to_numpy(float),
            outcome[event_column(name)].to_numpy(float),
        )
        for name in ENDPOINTS
    }
    return RiskModel(
        os=endpoints["os"], rfs=endpoints["rfs"], horizons_days=tuple(int(h) for h in horizons_days), n_train=len(train)
    )
