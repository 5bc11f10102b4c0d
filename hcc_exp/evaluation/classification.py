"""MVI classification metrics (Supplementary Table 3A).

The decision threshold is chosen once, by Youden's J on the training split, and
applied unchanged to the validation and external splits. Metrics come from
scikit-learn; a metric undefined on a split (no positive patient: sensitivity,
one class: AUC) is NaN with a reason in :attr:`BinaryMetrics.reasons`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    roc_auc_score,
    roc_curve,
)

from hcc_exp.evaluation.common import NotEstimable, as_binary_labels, as_scores


@dataclass(frozen=True)
class BinaryMetrics:
    """Classification metrics of MVI probabilities at a fixed threshold.

    Attributes:
        threshold: probability at or above which a patient is called MVI-positive.
        n, n_positive: patients and MVI-positive patients.
        f1, accuracy, sensitivity, specificity, precision: at ``threshold``.
        auc: ROC AUC of the probability (threshold-free).
        brier: mean squared error of the probability.
        tn, fp, fn, tp: confusion-matrix cells.
        reasons: metric name -> why it is NaN.
    """

    threshold: float
    n: int
    n_positive: int
    f1: float
    accuracy: float
    sensitivity: float
    specificity: float
    precision: float
    auc: float
    brier: float
    tn: int
    fp: int
    fn: int
    tp: int
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def confusion(self) -> np.ndarray:
        """(2, 2) int: rows true (0, 1), columns predicted (0, 1), as sklearn's confusion_matrix."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]])


def youden_threshold(y_true, probability) -> float | NotEstimable:
    """The probability cut maximising sensitivity + specificity - 1 on these (training) patients.

    Ties in J keep the highest threshold (the first one along sklearn's ROC curve).

    Cutting at 0.6 classifies every patient correctly (J = 1):

    >>> youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9])
    0.6
    """
    y = as_binary_labels(y_true, name="mvi")
    prob = as_scores(probability, y.size, name="mvi probability")
    if y.size == 0 or y.min() == y.max():
        return NotEstimable("only one MVI class in the training split: Youden threshold undefined")
    fpr, tpr, thresholds = roc_curve(y, prob)
    finite = np.isfinite(thresholds)  # sklearn prepends +inf (nobody positive)
    j = tpr[finite] - fpr[finite]
    return float(thresholds[finite][int(np.argmax(j))])


def binary_metrics(y_true, probability, threshold: float) -> BinaryMetrics:
    """All MVI metrics of one split at ``threshold`` (positive when probability >= threshold)."""
    y = as_binary_labels(y_true, name="mvi")
    prob = as_scores(probability, y.size, name="mvi probability")
    predicted = (prob >= threshold).astype(int)
    reasons: dict[str, str] = {}
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, predicted, labels=[0, 1]).ravel())
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())

    def ratio(num: int, den: int, name: str, why: str) -> float:
        if den == 0:
            reasons[name] = why
            return float("nan")
        return num / den

    sensitivity = ratio(tp, tp + fn, "sensitivity", "no MVI-positive patient")
    specificity = ratio(tn, tn + fp, "specificity", "no MVI-negative patient")
    if tp + fp == 0:
        reasons["precision"] = "nobody predicted MVI-positive"
        precision = float("nan")
    else:
        precision = float(precision_score(y, predicted, zero_division=0))
    if n_pos == 0:
        reasons["f1"] = "no MVI-positive patient"
        f1 = float("nan")
    else:
        f1 = float(f1_score(y, predicted, zero_division=0))
    if n_pos == 0 or n_neg == 0:
        reasons["auc"] = "only one MVI class present"
        auc = float("nan")
    else:
        auc = float(roc_auc_score(y, prob))
    return BinaryMetrics(
        threshold=float(threshold),
        n=int(y.size),
        n_positive=n_pos,
        f1=f1,
        accuracy=float(accuracy_score(y, predicted)) if y.size else float("nan"),
        sensitivity=sensitivity,
        specificity=specificity,
        precision=precision,
        auc=auc,
        brier=float(brier_score_loss(y, prob, labels=[0, 1])) if y.size else float("nan"),
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
        reasons=reasons,
    )


def roc_points(y_true, probability) -> tuple[np.ndarray, np.ndarray, float] | NotEstimable:
    """``(fpr, tpr, auc)`` of the MVI probability, for plotting."""
    y = as_binary_labels(y_true, name="mvi")
    prob = as_scores(probability, y.size, name="mvi probability")
    if y.size == 0 or y.min() == y.max():
        return NotEstimable("only one MVI class present")
    fpr, tpr, _ = roc_curve(y, prob)
    return fpr, tpr, float(roc_auc_score(y, prob))
