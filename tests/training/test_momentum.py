"""MultiTaskMomentum equals TorchSurv's Momentum on one endpoint, and handles the bank correctly."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torchsurv.loss.cox import neg_partial_log_likelihood
from torchsurv.loss.momentum import Momentum

from hcc_exp.errors import ConfigError
from hcc_exp.models import MultiTaskOutput
from hcc_exp.training.losses import mvi_cross_entropy
from hcc_exp.training.momentum import MultiTaskMomentum

N_FEATURES = 6


class ToyNet(nn.Module):
    """Three linear heads on a feature vector (``image`` is ``(B, N_FEATURES)``; masks unused)."""

    def __init__(self, os_linear: nn.Linear) -> None:
        super().__init__()
        self.os = copy.deepcopy(os_linear)
        self.rfs = nn.Linear(N_FEATURES, 1)
        self.mvi = nn.Linear(N_FEATURES, 2)

    def forward(self, image: torch.Tensor, masks: torch.Tensor | None) -> MultiTaskOutput:
        return MultiTaskOutput(self.os(image).squeeze(-1), self.rfs(image).squeeze(-1), self.mvi(image))


def batches(n: int, batchsize: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(batchsize, N_FEATURES, generator=g)
        event = torch.rand(batchsize, generator=g) < 0.6
        event[0] = True  # TorchSurv warns on a bank without events
        time = torch.rand(batchsize, generator=g) * 1000 + 1  # continuous: no ties
        rfs_event = torch.rand(batchsize, generator=g) < 0.5
        rfs_event[-1] = True
        rfs_time = time * torch.rand(batchsize, generator=g)
        mvi = (torch.rand(batchsize, generator=g) < 0.5).long()
        yield x, event, time, rfs_event, rfs_time, mvi


def test_single_task_equivalence_with_torchsurv_momentum() -> None:
    torch.manual_seed(0)
    os_linear = nn.Linear(N_FEATURES, 1)
    batchsize, steps, rate = 8, 3, 0.9
    reference = Momentum(
        backbone=os_linear, loss=neg_partial_log_likelihood, batchsize=batchsize, steps=steps, rate=rate
    )
    ours = MultiTaskMomentum(ToyNet(os_linear), batchsize=batchsize, steps=steps, rate=rate)
    # The RFS head follows the same algorithm: a second TorchSurv Momentum on a copy of it.
    reference_rfs = Momentum(
        backbone=copy.deepcopy(ours.online.rfs),
        loss=neg_partial_log_likelihood,
        batchsize=batchsize,
        steps=steps,
        rate=rate,
    )
    opt_rfs = torch.optim.SGD(reference_rfs.online.parameters(), lr=0.5)
    opt_ref = torch.optim.SGD(reference.online.parameters(), lr=0.5)
    opt_ours = torch.optim.SGD(ours.online.parameters(), lr=0.5)
    # 7 steps: the memory fills (3 batches) and then rolls over.
    for x, event, time, rfs_event, rfs_time, mvi in batches(7, batchsize):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss_ref = reference(x, event, time)
            loss_rfs_ref = reference_rfs(x, rfs_event, rfs_time)
            out, os_loss, rfs_loss = ours(x, None, event, time, rfs_event, rfs_time)
        assert os_loss.item() == pytest.approx(loss_ref.item(), abs=1e-6)
        assert rfs_loss.item() == pytest.approx(loss_rfs_ref.item(), abs=1e-6)
        for optimiser, loss in ((opt_ref, loss_ref), (opt_rfs, loss_rfs_ref)):
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        opt_ours.zero_grad()
        (os_loss + rfs_loss + mvi_cross_entropy(out.mvi_logits, mvi, None)).backward()
        opt_ours.step()
        torch.testing.assert_close(ours.online.os.weight, reference.online.weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.target.os.weight, reference.target.weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.target.os.bias, reference.target.bias, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.target.rfs.weight, reference_rfs.target.weight, atol=1e-6, rtol=0)
    assert len(ours.memory_k) == len(reference.memory_k) == batchsize * steps
    # The EMA really moved the target away from its start and from the online network.
    assert not torch.allclose(ours.target.os.weight, os_linear.weight)
    assert not torch.allclose(ours.target.os.weight, ours.online.os.weight)
    assert all(not p.requires_grad for p in ours.target.parameters())
    torch.testing.assert_close(ours.infer(x, None).os_risk, reference.infer(x).squeeze(-1), atol=1e-6, rtol=0)


def test_bank_gives_current_batch_gradient_only_and_handles_short_batches() -> None:
    torch.manual_seed(0)
    momentum = MultiTaskMomentum(ToyNet(nn.Linear(N_FEATURES, 1)), batchsize=4, steps=2, rate=0.9)
    for x, event, time, rfs_event, rfs_time, _ in batches(3, 4):
        _, os_loss, rfs_loss = momentum(x, None, event, time, rfs_event, rfs_time)
        (os_loss + rfs_loss).backward()
    assert len(momentum.memory_k) == 8 and len(momentum.memory_q) == 4
    assert all(r.os_estimate.grad_fn is None for r in momentum.memory_k)
    # A short last batch: memory_q holds only it (no stale entries whose graph is freed).
    x, event, time, rfs_event, rfs_time, _ = next(batches(1, 3, seed=5))
    _, os_loss, rfs_loss = momentum(x, None, event, time, rfs_event, rfs_time)
    (os_loss + rfs_loss).backward()
    assert len(momentum.memory_q) == 3 and len(momentum.memory_k) == 8
    with pytest.raises(ConfigError, match="batches of 4"):
        x, event, time, rfs_event, rfs_time, _ = next(batches(1, 5))
        momentum(x, None, event, time, rfs_event, rfs_time)
    momentum.reset_memory()
    assert len(momentum.memory_k) == 0 and len(momentum.memory_q) == 0


class DropoutToyNet(ToyNet):
    def __init__(self) -> None:
        super().__init__(nn.Linear(N_FEATURES, 1))
        self.drop = nn.Dropout(0.9)

    def forward(self, image: torch.Tensor, masks: torch.Tensor | None) -> MultiTaskOutput:
        return super().forward(self.drop(image), masks)


def test_infer_uses_eval_mode_and_restores_it() -> None:
    torch.manual_seed(0)
    momentum = MultiTaskMomentum(DropoutToyNet(), batchsize=4).train()
    x = torch.randn(4, N_FEATURES)
    first, second = momentum.infer(x, None), momentum.infer(x, None)
    torch.testing.assert_close(first.os_risk, second.os_risk)  # no dropout in eval
    torch.testing.assert_close(first.os_risk, momentum.target.os(x).squeeze(-1))
    assert momentum.target.training
