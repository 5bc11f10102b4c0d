"""The patient-level inputs of the ablation bootstrap: labels and every run's scores on shared patients.

:class:`PredictionLoader` reads each run's ``predictions.csv`` and its cache's ``labels.csv`` once
per table and aligns them: the patients of a split present with a finite score in every run, one
label row per patient (runs whose caches disagree on an outcome are refused), and per arm and seed
the ``(patients,)`` score vector. :class:`SurvivalData` / :class:`ClassificationData` hold the
result and run the paired bootstrap of :mod:`hcc_exp.reporting.stats` on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcc_exp.errors import RunFolderError
from hcc_exp.reporting.stats import (
    PairedBootstrap,
    pooled_paired_auc_difference,
    pooled_paired_c_index_difference,
)
from hcc_exp.reporting.sweep_folder import RunRecord, read_labels, read_predictions
from hcc_exp.vocabulary import ENDPOINTS, MVI_LABEL, MVI_PROBABILITY, event_column, risk_column, time_column

SURVIVAL_COLUMNS: dict[str, tuple[str, str, str]] = {
    endpoint: (risk_column(endpoint), time_column(endpoint), event_column(endpoint)) for endpoint in ENDPOINTS
}
"""Endpoint -> (prediction column, label time column, label event column)."""
MVI_COLUMNS: tuple[str, str] = (MVI_PROBABILITY, MVI_LABEL)
"""(prediction column, label column) of the MVI task."""

@dataclass(frozen=True)
class SurvivalData:
    time: np.ndarray
    event: np.ndarray
    scores: dict[str, dict[int, np.ndarray]]  # arm -> seed -> (patients,) risk

    @property
    def n_patients(self) -> int:
        return int(self.time.size)

    def paired_bootstrap(
        self, arm: np.ndarray, reference: np.ndarray, indices: np.ndarray, confidence: float
    ) -> PairedBootstrap:
        return pooled_paired_c_index_difference(self.time, self.event, arm, reference, indices, confidence)


@dataclass(frozen=True)
class ClassificationData:
    labels: np.ndarray  # (patients,) 0 / 1
    scores: dict[str, dict[int, np.ndarray]]  # arm -> seed -> (patients,) probability

    @property
    def n_patients(self) -> int:
        return int(self.labels.size)

    def paired_bootstrap(
        self, arm: np.ndarray, reference: np.ndarray, indices: np.ndarray, confidence: float
    ) -> PairedBootstrap:
        return pooled_paired_auc_difference(self.labels, arm, reference, indices, confidence)


class PredictionLoader:
    """Caches predictions and labels so each file is read once per table."""

    def __init__(self) -> None:
        self._predictions: dict[Path, pd.DataFrame] = {}
        self._labels: dict[Path, pd.DataFrame] = {}

    def predictions(self, run: RunRecord) -> pd.DataFrame:
        if run.run_dir not in self._predictions:
            self._predictions[run.run_dir] = read_predictions(run.run_dir)
        return self._predictions[run.run_dir]

    def labels(self, run: RunRecord) -> pd.DataFrame:
        cache_dir = run.cache_dir
        if cache_dir is None:
            raise RunFolderError(f"{run.run_dir}/meta.json names no cache_dir, so its labels are unknown")
        if cache_dir not in self._labels:
            self._labels[cache_dir] = read_labels(cache_dir)
        return self._labels[cache_dir]

    def survival(self, runs: Sequence[RunRecord], split: str, task: str) -> SurvivalData:
        """Labels and risks of the patients of ``split`` present with a finite risk in every run.

        Raises:
            RunFolderError: a file is missing, or two runs' caches disagree on a patient's outcome.
        """
        risk_column, time_column, event_column = SURVIVAL_COLUMNS[task]
        labels, risks = self._aligned(runs, split, risk_column, (time_column, event_column), task.upper())
        return SurvivalData(
            time=labels[time_column].to_numpy(float),
            event=labels[event_column].to_numpy(float).astype(bool),
            scores=risks,
        )

    def classification(self, runs: Sequence[RunRecord], split: str) -> ClassificationData:
        """MVI labels and predicted probabilities of the patients of ``split`` present in every run."""
        labels, scores = self._aligned(runs, split, MVI_COLUMNS[0], (MVI_COLUMNS[1],), "MVI")
        return ClassificationData(labels=labels[MVI_COLUMNS[1]].to_numpy(float).astype(int), scores=scores)

    def _aligned(
        self, runs: Sequence[RunRecord], split: str, score_column: str, label_columns: tuple[str, ...], what: str
    ) -> tuple[pd.DataFrame, dict[str, dict[int, np.ndarray]]]:
        """Labels (one row per patient) and per-arm, per-seed scores on the patients shared by every run."""
        per_run: list[pd.Series] = []
        for run in runs:
            frame = self.predictions(run)
            if score_column not in frame.columns:
                raise RunFolderError(f"{run.run_dir}/predictions.csv has no column {score_column}")
            rows = frame[frame["split"] == split]
            per_run.append(pd.Series(rows[score_column].to_numpy(float), index=rows["patient_id"].astype(str)))
        patients = sorted(set.intersection(*(set(s[np.isfinite(s.to_numpy())].index) for s in per_run)))
        if not patients:
            raise RunFolderError(f"no {split} patient has a finite {score_column} in every run")

        reference_labels: pd.DataFrame | None = None
        for run in runs:
            labels = self.labels(run)
            missing = [c for c in label_columns if c not in labels.columns]
            if missing:
                raise RunFolderError(f"labels of {run.cache_dir} lack column(s) {missing}")
            table = labels.drop_duplicates("patient_id").set_index("patient_id")
            absent = [p for p in patients if p not in table.index]
            if absent:
                raise RunFolderError(f"labels of {run.cache_dir} lack patient(s) {absent[:5]} predicted by {run.run_dir}")
            outcome = table.loc[patients, list(label_columns)].astype(float)
            if reference_labels is None:
                reference_labels = outcome
            elif not np.allclose(outcome.to_numpy(), reference_labels.to_numpy()):
                differing = outcome.index[(outcome != reference_labels).any(axis=1)].tolist()
                raise RunFolderError(
                    f"runs disagree on {what} labels (cache {run.cache_dir}, patient(s) {differing[:5]}): "
                    "arms must be compared on the same cohort"
                )
        if reference_labels is None:
            raise RunFolderError(f"no run to read {split} {what} labels from")
        scores: dict[str, dict[int, np.ndarray]] = {}
        for run, series in zip(runs, per_run, strict=True):
            scores.setdefault(run.arm, {})[run.seed] = series.loc[patients].to_numpy(float)
        return reference_labels, scores
