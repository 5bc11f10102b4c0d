"""Figures are written even when a panel's statistic is not estimable."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_waltons

from hcc_exp.evaluation import plots
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.risk_groups import compare_risk_groups
from hcc_exp.evaluation.survival import TimeDependentROC

DEAD = NotEstimable("no events (all patients censored)")


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_not_estimable_panels_still_give_figures(tmp_path):
    roc = TimeDependentROC(365.0, np.array([0, 0.5, 1]), np.array([0, 0.8, 1]), 0.65)
    calibration = pd.DataFrame(
        {
            "group": [1, 2],
            "n": [5, 5],
            "events_by_horizon": [1, 3],
            "predicted": [0.2, 0.6],
            "observed": [0.25, np.nan],
            "observed_ci_low": [0.1, np.nan],
            "observed_ci_high": [0.5, np.nan],
            "reason": ["", "follow-up ends at 300 d, before 365 d"],
        }
    )
    paths = [
        plots.plot_kaplan_meier({"internal": DEAD}, "os", tmp_path / "km.png", 1826),
        plots.plot_time_dependent_roc({"internal": {365.0: roc, 730.0: DEAD}}, "rfs", tmp_path / "roc.png"),
        plots.plot_binary_roc({"internal": DEAD}, tmp_path / "roc_mvi.png"),
        plots.plot_survival_calibration(
            {"internal": {365.0: calibration, 730.0: DEAD}}, "os", tmp_path / "cal.png"
        ),
        plots.plot_reliability({"internal": DEAD}, tmp_path / "rel.png"),
        plots.plot_decision_curves({"internal": {"1 year": DEAD}}, "DCA", tmp_path / "dca.png"),
    ]
    assert all(_is_png(p) for p in paths)
    assert plt.get_fignums() == [], "figures must be closed after saving"


def test_km_figure_has_numbers_at_risk(tmp_path, monkeypatch):
    df = load_waltons()
    result = compare_risk_groups(df["T"], df["E"], (df["group"] == "miR-137").astype(float), cut=0.5)
    seen = {}
    original = plots.add_at_risk_counts

    def spy(*fitters, **kwargs):
        seen["fitters"] = fitters
        return original(*fitters, **kwargs)

    monkeypatch.setattr(plots, "add_at_risk_counts", spy)
    path = plots.plot_kaplan_meier({"train": result}, "os", tmp_path / "km.png", 60)
    assert _is_png(path)
    assert seen["fitters"] == (result.km_low, result.km_high)


@pytest.mark.parametrize(("days", "label"), [(365, "1 year"), (730, "2 years"), (548, "548 d")])
def test_horizon_labels(days, label):
    assert plots.horizon_label(days) == label
