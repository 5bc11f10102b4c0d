"""Cox and MVI losses against lifelines / scikit-learn, and the no-event case."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from sklearn.metrics import log_loss

from hcc_exp.config import ExperimentConfig, LossConfig
from hcc_exp.models import build_model
from hcc_exp.training.losses import cox_nll, mvi_cross_entropy
from hcc_exp.training.momentum import MultiTaskMomentum
from hcc_exp.training.weighting import build_weighting


def test_cox_nll_matches_lifelines_partial_likelihood_on_rossi() -> None:
    # rossi has many tied event weeks, so this checks Efron's tie handling too.
    rossi = load_rossi()
    cph = CoxPHFitter().fit(rossi, duration_col="week", event_col="arrest")  # Efron ties
    covariates = rossi.drop(columns=["week", "arrest"])
    log_risk = torch.tensor(
        covariates.to_numpy(float) @ cph.params_[covariates.columns].to_numpy(), dtype=torch.float64
    )
    event = torch.tensor(rossi["arrest"].to_numpy(), dtype=torch.bool)
    time = torch.tensor(rossi["week"].to_numpy(), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ties warning of TorchSurv is silenced
        loss = cox_nll(log_risk, event, time)
    # TorchSurv's mean runs over distinct event times (one Efron term per time).
    n_event_times = len(torch.unique(time[event]))
    assert n_event_times < int(event.sum())  # ties present
    assert float(loss) * n_event_times == pytest.approx(-cph.log_likelihood_, rel=1e-5)


def test_cox_nll_without_events_is_a_connected_zero_and_silent() -> None:
    log_risk = torch.randn(6, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = cox_nll(log_risk, torch.zeros(6, dtype=torch.bool), torch.arange(1.0, 7.0))
        single = cox_nll(log_risk[:1], torch.ones(1), torch.ones(1))
    assert loss.item() == 0.0 and single.item() == 0.0
    assert loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(log_risk.grad, torch.zeros(6))


def test_cox_nll_is_non_negative_and_decreases_with_concordant_risk() -> None:
    time = torch.tensor([5.0, 10.0, 15.0, 20.0, 25.0])
    event = torch.tensor([1, 1, 0, 1, 0])
    concordant = cox_nll(-time / 5, event, time)
    discordant = cox_nll(time / 5, event, time)
    assert 0 <= float(concordant) < float(discordant)


def test_mvi_cross_entropy_matches_sklearn_weighted_log_loss() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 2, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 1, 1, 0, 1, 0, 0, 0, 1, 0])
    probs = torch.softmax(logits, dim=1).numpy()
    assert float(mvi_cross_entropy(logits, target, None)) == pytest.approx(
        log_loss(target.numpy(), probs), rel=1e-9
    )
    weights = (1.0, 2.5)
    sample_weight = np.where(target.numpy() == 1, weights[1], weights[0])
    expected = log_loss(target.numpy(), probs, sample_weight=sample_weight)
    assert float(mvi_cross_entropy(logits, target, weights)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("use_momentum", [False, True])
def test_batch_without_events_trains_only_through_mvi(use_momentum: bool) -> None:
    torch.manual_seed(0)
    model = build_model(ExperimentConfig())
    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 3, 24, 24, 24, generator=g)
    masks = (torch.rand(4, 3, 3, 24, 24, 24, generator=g) > 0.5).to(torch.uint8)
    no_event = torch.zeros(4, dtype=torch.bool)
    time = torch.tensor([100.0, 200.0, 300.0, 400.0])
    mvi = torch.tensor([0, 1, 1, 0])
    weighting = build_weighting(LossConfig(weighting="dwa"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if use_momentum:
            momentum = MultiTaskMomentum(model, batchsize=4, steps=2, rate=0.9)
            out, os_loss, rfs_loss = momentum(image, masks, no_event, time, no_event, time)
        else:
            out = model(image, masks)
            os_loss, rfs_loss = cox_nll(out.os_risk, no_event, time), cox_nll(out.rfs_risk, no_event, time)
        total = weighting(torch.stack([os_loss, rfs_loss, mvi_cross_entropy(out.mvi_logits, mvi, None)]))
        total.backward()
    assert torch.isfinite(total) and os_loss.item() == 0.0 and rfs_loss.item() == 0.0
    for head in (model.os_head, model.rfs_head):
        assert torch.equal(head.weight.grad, torch.zeros_like(head.weight))
        assert torch.equal(head.bias.grad, torch.zeros_like(head.bias))
    assert float(model.mvi_head.weight.grad.abs().sum()) > 0
    assert float(model.backbone.stem.fuse.conv.weight.grad.abs().sum()) > 0
