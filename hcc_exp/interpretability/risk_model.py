"""The risk model behind ``hcc-exp predict``: risk-group cut-offs and Breslow baselines of a run.

A Cox head gives a log relative hazard only. :class:`RiskModel` holds what turns it into
something a clinician reads, all fitted on the TRAINING split's predictions of the best
checkpoint: the median OS and RFS risk (high risk = risk above it, the cut of the
evaluation's Kaplan-Meier stratification, :mod:`hcc_exp.evaluation.risk_groups`) and the
Breslow cumulative baseline hazards (:func:`hcc_exp.evaluation.survival.fit_breslow`),
which give ``S(t | x)`` at the report horizons. It is stored as JSON in
``RUN_DIR/checkpoints/risk_model.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.config import ExperimentConfig
from hcc_exp.errors import RunFolderError
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.risk_groups import high_risk_indicator, median_cut
from hcc_exp.evaluation.survival import BreslowBaseline, fit_breslow

RISK_MODEL_JSON = Path("checkpoints") / "risk_model.json"
"""Where a run keeps its risk model, relative to the run folder."""
PREDICTIONS_CSV = "predictions.csv"
ENDPOINTS: tuple[str, ...] = ("os", "rfs")


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
        """Write the model as JSON (atomic)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
        tmp.replace(path)
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


def fit_risk_model(predictions: pd.DataFrame, labels: pd.DataFrame, horizons_days: Sequence[int]) -> RiskModel:
    """Fit the risk cuts and Breslow baselines on the training split's predictions.

    Args:
        predictions: ``patient_id, split, os_risk, rfs_risk`` (``RUN_DIR/predictions.csv``).
        labels: ``patient_id, os_time_days, os_event, rfs_time_days, rfs_event`` (cache ``labels.csv``).
        horizons_days: report horizons (days), e.g. (365, 730).

    Raises:
        RunFolderError: no training rows, missing columns, or training patients without labels.
    """
    needed = {"patient_id", "split", "os_risk", "rfs_risk"}
    if needed - set(predictions.columns):
        raise RunFolderError(f"predictions lack columns {sorted(needed - set(predictions.columns))}")
    needed_labels = {"patient_id", "os_time_days", "os_event", "rfs_time_days", "rfs_event"}
    if needed_labels - set(labels.columns):
        raise RunFolderError(f"labels lack columns {sorted(needed_labels - set(labels.columns))}")
    train = predictions[predictions["split"] == "train"].copy()
    if train.empty:
        raise RunFolderError("predictions hold no 'train' rows: the risk model is fitted on the training split")
    train["patient_id"] = train["patient_id"].astype(str)
    label_frame = labels.assign(patient_id=labels["patient_id"].astype(str)).set_index("patient_id")
    missing = sorted(set(train["patient_id"]) - set(label_frame.index))
    if missing:
        raise RunFolderError(f"training patients without labels: {', '.join(missing[:5])}")
    outcome = label_frame.loc[train["patient_id"]]
    endpoints = {}
    for name in ENDPOINTS:
        risk = train[f"{name}_risk"].to_numpy(dtype=float)
        baseline = fit_breslow(risk, outcome[f"{name}_time_days"].to_numpy(float), outcome[f"{name}_event"].to_numpy(float))
        if isinstance(baseline, NotEstimable):
            endpoints[name] = EndpointRiskModel(median_cut(risk), None, baseline.reason)
        else:
            endpoints[name] = EndpointRiskModel(median_cut(risk), baseline)
    return RiskModel(
        os=endpoints["os"], rfs=endpoints["rfs"], horizons_days=tuple(int(h) for h in horizons_days), n_train=len(train)
    )


def ensure_risk_model(run_dir: Path | str, config: ExperimentConfig) -> RiskModel:
    """The run's risk model: read ``checkpoints/risk_model.json``, or fit it from the run's
    ``predictions.csv`` and the cache labels and write it there."""
    run_dir = Path(run_dir)
    path = run_dir / RISK_MODEL_JSON
    if path.is_file():
        return RiskModel.load(path)
    predictions_path = run_dir / PREDICTIONS_CSV
    if not predictions_path.is_file():
        raise RunFolderError(f"{run_dir} has neither {RISK_MODEL_JSON} nor {PREDICTIONS_CSV}")
    predictions = pd.read_csv(predictions_path, dtype={"patient_id": str})
    from hcc_exp.interpretability.checkpoint import open_run_cache

    labels = open_run_cache(run_dir).labels
    model = fit_risk_model(predictions, labels, config.evaluation.horizons_days)
    model.save(path)
    return model
