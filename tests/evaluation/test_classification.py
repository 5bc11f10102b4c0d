"""MVI metrics against scikit-learn on real data (the breast cancer set ships with sklearn)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, confusion_matrix, f1_score, roc_auc_score

from hcc_exp.evaluation.classification import binary_metrics, roc_points, youden_threshold
from hcc_exp.evaluation.common import NotEstimable


@pytest.fixture(scope="module")
def breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    prob = LogisticRegression(max_iter=5000).fit(X[:, :2], y).predict_proba(X[:, :2])[:, 1]
    train = np.arange(y.size) % 2 == 0
    return y, prob, train


def test_youden_threshold_maximises_j(breast_cancer):
    y, prob, train = breast_cancer
    threshold = youden_threshold(y[train], prob[train])

    def j(cut):
        pred = prob[train] >= cut
        sens = np.mean(pred[y[train] == 1])
        spec = np.mean(~pred[y[train] == 0])
        return sens + spec - 1

    best = max(j(c) for c in np.unique(prob[train]))
    assert j(threshold) == pytest.approx(best, abs=1e-12)


def test_metrics_equal_sklearn(breast_cancer):
    y, prob, train = breast_cancer
    threshold = youden_threshold(y[train], prob[train])
    test = ~train
    m = binary_metrics(y[test], prob[test], threshold)
    pred = (prob[test] >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y[test], pred).ravel()
    assert (m.tn, m.fp, m.fn, m.tp) == (tn, fp, fn, tp)
    np.testing.assert_array_equal(m.confusion, confusion_matrix(y[test], pred))
    assert m.f1 == pytest.approx(f1_score(y[test], pred))
    assert m.accuracy == pytest.approx(accuracy_score(y[test], pred))
    assert m.sensitivity == pytest.approx(tp / (tp + fn))
    assert m.specificity == pytest.approx(tn / (tn + fp))
    assert m.auc == pytest.approx(roc_auc_score(y[test], prob[test]))
    assert m.brier == pytest.approx(brier_score_loss(y[test], prob[test]))
    assert m.reasons == {}
    fpr, tpr, auc = roc_points(y[test], prob[test])
    assert auc == pytest.approx(m.auc) and fpr[0] == 0 and tpr[-1] == 1


def test_one_class_split_gives_reasons_not_errors():
    m = binary_metrics(np.zeros(6), np.linspace(0.1, 0.9, 6), 0.5)
    assert np.isnan(m.sensitivity) and np.isnan(m.auc) and np.isnan(m.f1)
    assert {"sensitivity", "auc", "f1"} <= set(m.reasons)
    assert m.specificity == pytest.approx(0.5)
    assert isinstance(youden_threshold(np.ones(4), np.linspace(0, 1, 4)), NotEstimable)
    assert isinstance(roc_points(np.ones(4), np.linspace(0, 1, 4)), NotEstimable)
