"""DWA against hand-computed values, static and uncertainty weighting."""

from __future__ import annotations

import math

import pytest
import torch

from hcc_exp.config import LossConfig
from hcc_exp.errors import ConfigError
from hcc_exp.training.weighting import (
    TASKS,
    DynamicWeightAverage,
    StaticWeighting,
    UncertaintyWeighting,
    build_weighting,
)

HISTORY = [(1.0, 2.0, 0.8), (0.5, 2.0, 0.88), (0.45, 1.0, 0.66)]


def reference_dwa(before: tuple[float, ...], last: tuple[float, ...], temperature: float) -> list[float]:
    ratios = [b / a for a, b in zip(before, last, strict=True)]
    exps = [math.exp(r / temperature) for r in ratios]
    return [len(exps) * e / sum(exps) for e in exps]


def test_dwa_is_one_for_the_first_two_epochs_then_matches_reference() -> None:
    dwa = DynamicWeightAverage(3, temperature=2.0)
    assert torch.equal(dwa.weights(), torch.ones(3))
    dwa.end_epoch(HISTORY[0])
    assert torch.equal(dwa.weights(), torch.ones(3))  # epoch 2 still uniform
    dwa.end_epoch(HISTORY[1])
    expected = reference_dwa(HISTORY[0], HISTORY[1], 2.0)  # ratios 0.5, 1.0, 1.1
    torch.testing.assert_close(dwa.weights(), torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert float(dwa.weights().sum()) == pytest.approx(3.0, abs=1e-6)
    # The slowest-falling task (MVI, ratio 1.1) gets the largest weight.
    assert int(dwa.weights().argmax()) == TASKS.index("mvi")
    dwa.end_epoch(HISTORY[2])
    torch.testing.assert_close(
        dwa.weights(), torch.tensor(reference_dwa(HISTORY[1], HISTORY[2], 2.0)), rtol=1e-6, atol=1e-6
    )
    losses = torch.tensor([0.7, 1.3, 0.4], requires_grad=True)
    total = dwa(losses)
    assert total.item() == pytest.approx(
        sum(
            w * loss
            for w, loss in zip(reference_dwa(HISTORY[1], HISTORY[2], 2.0), [0.7, 1.3, 0.4], strict=True)
        ),
        rel=1e-6,
    )
    total.backward()
    torch.testing.assert_close(losses.grad, dwa.weights())


def test_dwa_temperature_controls_spread() -> None:
    spreads = []
    for temperature in (0.5, 2.0, 50.0):
        dwa = DynamicWeightAverage(3, temperature=temperature)
        dwa.end_epoch(HISTORY[0])
        dwa.end_epoch(HISTORY[1])
        w = dwa.weights()
        assert float(w.sum()) == pytest.approx(3.0, abs=1e-5)
        spreads.append(float(w.max() - w.min()))
    assert spreads[0] > spreads[1] > spreads[2] and spreads[2] < 0.02


def test_dwa_guards_zero_losses_and_keeps_state_in_checkpoints() -> None:
    dwa = DynamicWeightAverage(3, temperature=2.0)
    dwa.end_epoch([0.0, 1.0, 1.0])  # e.g. no events for OS in the whole epoch
    dwa.end_epoch([0.3, 1.0, 1.0])
    w = dwa.weights()
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, torch.ones(3))  # ratio of the zero loss taken as 1
    dwa.end_epoch([0.3, 0.5, 1.0])
    restored = DynamicWeightAverage(3, temperature=2.0)
    restored.load_state_dict(dwa.state_dict())
    torch.testing.assert_close(restored.weights(), dwa.weights())
    restored.end_epoch([0.3, 0.5, 0.5])
    dwa.end_epoch([0.3, 0.5, 0.5])
    torch.testing.assert_close(restored.weights(), dwa.weights())


def test_static_weighting() -> None:
    static = build_weighting(LossConfig(weighting="static", static_weights=(1.0, 0.5, 2.0)))
    assert isinstance(static, StaticWeighting)
    assert float(static(torch.tensor([1.0, 2.0, 3.0]))) == pytest.approx(1.0 + 1.0 + 6.0)
    static.end_epoch([5.0, 1.0, 1.0])
    torch.testing.assert_close(static.weights(), torch.tensor([1.0, 0.5, 2.0]))
    assert list(static.parameters()) == []
    with pytest.raises(ConfigError):
        build_weighting(LossConfig(weighting="static"), n_tasks=2)


def test_uncertainty_weighting_form_and_optimum() -> None:
    uw = build_weighting(LossConfig(weighting="uncertainty"))
    assert isinstance(uw, UncertaintyWeighting)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.0, 1.0, -0.5]))
    losses = torch.tensor([2.0, 0.5, 1.0])
    expected = sum(math.exp(-s) * loss + s for s, loss in zip([0.0, 1.0, -0.5], losses.tolist(), strict=True))
    assert uw(losses).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(uw.weights(), torch.exp(-torch.tensor([0.0, 1.0, -0.5])))
    # For fixed task losses the learned log-variance converges to log(L_k).
    optimiser = torch.optim.Adam(uw.parameters(), lr=0.1)
    for _ in range(300):
        optimiser.zero_grad()
        uw(losses).backward()
        optimiser.step()
    torch.testing.assert_close(uw.log_vars.detach(), losses.log(), atol=1e-2, rtol=0)


def test_build_weighting_dwa_and_shape_checks() -> None:
    dwa = build_weighting(LossConfig(weighting="dwa", dwa_temperature=3.0))
    assert isinstance(dwa, DynamicWeightAverage) and dwa.temperature == 3.0
    with pytest.raises(ConfigError):
        dwa(torch.ones(2))
    with pytest.raises(ConfigError):
        dwa.end_epoch([1.0, 2.0])
