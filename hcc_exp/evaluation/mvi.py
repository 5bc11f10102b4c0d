"""Every MVI statistic, split by split: the training Youden threshold applied to each split.

Classification metrics at that threshold (F1, accuracy, sensitivity, specificity, precision,
confusion counts), the threshold-free AUC and Brier score, ROC points, reliability groups and the
decision curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hcc_exp.evaluation.classification import binary_metrics, roc_points, youden_threshold
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.decision_curves import binary_decision_curve
from hcc_exp.evaluation.endpoint import TRAIN, n_groups
from hcc_exp.evaluation.record import MetricRecord
from hcc_exp.evaluation.survival import mvi_reliability
from hcc_exp.vocabulary import MVI, MVI_LABEL, MVI_PROBABILITY, SPLIT, SPLITS, metric_key

SCORE_METRICS: tuple[str, ...] = ("f1", "accuracy", "sensitivity", "specificity", "precision", "auc", "brier")
"""Metrics of :class:`~hcc_exp.evaluation.classification.BinaryMetrics` that may be not estimable."""
COUNT_METRICS: tuple[str, ...] = ("tp", "fp", "fn", "tn", "n_positive")
OUTCOME = "MVI"
"""The decision-curve outcome's name."""


@dataclass
class MviArtefacts:
    """Per split what the MVI figures and long tables need."""

    metrics: dict[str, Any] = field(default_factory=dict)
    roc: dict[str, Any] = field(default_factory=dict)
    reliability: dict[str, Any] = field(default_factory=dict)
    dca: dict[str, dict[str, Any]] = field(default_factory=dict)


def training_threshold(data: pd.DataFrame) -> float | NotEstimable:
    """Youden's threshold of the MVI probability on the training split."""
    train = data[data[SPLIT] == TRAIN]
    if train.empty:
        return NotEstimable("no training split: Youden threshold undefined")
    return youden_threshold(train[MVI_LABEL], train[MVI_PROBABILITY])


def evaluate_mvi(data: pd.DataFrame, record: MetricRecord, dca_thresholds: tuple[float, ...]) -> MviArtefacts:
    """All MVI statistics; fills ``record`` and returns the artefacts for figures/tables."""
    artefacts = MviArtefacts()
    threshold = training_threshold(data)
    if not isinstance(threshold, NotEstimable):
        record.put(metric_key(TRAIN, MVI, "threshold"), threshold)
    for split in SPLITS:
        part = data[data[SPLIT] == split]
        if part.empty:
            record.miss(metric_key(split, MVI, "f1"), f"no {split} patients")
            continue
        known = part[np.isfinite(part[MVI_LABEL].to_numpy(dtype=float))]
        y, prob = known[MVI_LABEL].to_numpy(dtype=float), known[MVI_PROBABILITY].to_numpy(dtype=float)
        record.put(metric_key(split, MVI, "n"), len(known))
        metrics = threshold if isinstance(threshold, NotEstimable) else binary_metrics(y, prob, threshold)
        if isinstance(metrics, NotEstimable):
            record.miss([metric_key(split, MVI, name) for name in SCORE_METRICS], metrics.reason)
        else:
            for name in SCORE_METRICS:
                record.put(metric_key(split, MVI, name), getattr(metrics, name), metrics.reasons.get(name))
            for name in COUNT_METRICS:
                record.put(metric_key(split, MVI, name), getattr(metrics, name))
        artefacts.metrics[split] = metrics
        artefacts.roc[split] = roc_points(y, prob)
        artefacts.reliability[split] = mvi_reliability(y, prob, n_groups(len(known)))
        artefacts.dca[split] = {OUTCOME: binary_decision_curve(y, prob, dca_thresholds)}
    return artefacts
