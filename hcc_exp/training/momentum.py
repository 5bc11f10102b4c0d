"""Multi-task version of TorchSurv's momentum memory bank (``torchsurv.loss.momentum.Momentum``).

Paper ("DL model training"): "the Moment model from the TorchSurv package was employed ...
we modified TorchSurv to support multi-task learning". TorchSurv's algorithm, kept here step
by step for two Cox endpoints (OS and RFS) that share one network:

1. the online network (q) predicts the current batch; its estimates, with events and times,
   fill ``memory_q`` (``maxlen = batchsize``);
2. the loss is the Cox negative partial log-likelihood over ``memory_k + memory_q`` (past
   target estimates, which carry no gradient, plus the current online ones), one for OS and
   one for RFS. As in TorchSurv this is a deque sum, which keeps ``memory_k``'s maxlen: once
   the memory is full the bank is the current batch plus the newest
   ``batchsize * (steps - 1)`` target records (``batchsize * steps`` in all) (:func:`~hcc_exp.training.losses.cox_nll`, so a bank without events gives a
   connected zero);
3. without gradient: the target network (k) is updated by EMA,
   ``theta_k = rate * theta_k + (1 - rate) * theta_q`` (parameters only, as TorchSurv), and
   then predicts the same batch; those estimates join ``memory_k``
   (``maxlen = batchsize * steps``), dropping the oldest.

Differences from TorchSurv, none of which changes the numbers on full batches:

* ``online`` IS the ``backbone`` passed in (TorchSurv deep-copies it); the target is a deep
  copy with ``requires_grad=False``, initialised from the online parameters.
* ``memory_q`` is emptied at the start of every ``forward``: it only ever holds the current
  batch. TorchSurv relies on ``maxlen`` to push the previous batch out, which leaves stale
  entries (whose graph was already freed) when a last batch is smaller than ``batchsize``.
  A batch larger than ``batchsize`` is refused instead of silently truncated.
* The bank stays on the device of the estimates (TorchSurv moves it to CPU).
* :meth:`infer` restores the target's previous train/eval mode afterwards.

BatchNorm and dropout: like TorchSurv, the target's forward in :meth:`forward` runs in the
module's current mode, i.e. train mode during training: BatchNorm normalises with batch
statistics and the target's running mean/var are updated by its own forwards, not copied
from the online network; the EMA covers parameters only. :meth:`infer` evaluates the target
in eval mode (running statistics, no dropout).

``forward`` is for training steps only (it writes the bank and moves the target); evaluate
with :meth:`infer` (target network) or ``online`` directly.
"""

from __future__ import annotations

import collections
import copy
from typing import NamedTuple

import torch
from torch import Tensor, nn

from hcc_exp.errors import ConfigError
from hcc_exp.models.multitask import MultiTaskOutput
from hcc_exp.training.losses import cox_nll


class _SurvivalRecord(NamedTuple):
    """One patient's estimates and outcomes in the memory bank (all 0-d tensors)."""

    os_estimate: Tensor
    rfs_estimate: Tensor
    os_event: Tensor
    os_time: Tensor
    rfs_event: Tensor
    rfs_time: Tensor


class MultiTaskMomentum(nn.Module):
    """Online / target networks with a memory bank for the OS and RFS Cox losses.

    Args:
        backbone: the multi-task network (``forward(image, masks) -> MultiTaskOutput``); it
            becomes ``online``.
        batchsize: training batch size (size of ``memory_q``).
        steps: number of past batches kept in ``memory_k`` (``MomentumConfig.steps``).
        rate: EMA momentum of the target network (``MomentumConfig.rate``).

    Attributes:
        online: the trained network (gradient).
        target: the momentum network (no gradient), recommended for inference.
        memory_q: current batch records (with graph).
        memory_k: past target records (no graph), ``maxlen = batchsize * steps``.
    """

    def __init__(self, backbone: nn.Module, batchsize: int, steps: int = 4, rate: float = 0.999) -> None:
        super().__init__()
        if batchsize < 1 or steps < 1:
            raise ConfigError(f"momentum needs batchsize >= 1 and steps >= 1, got {batchsize} and {steps}")
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"momentum rate must lie in [0, 1], got {rate}")
        self.batchsize = batchsize
        self.steps = steps
        self.rate = rate
        self.online = backbone
        self.target = copy.deepcopy(backbone)
        self._init_target()
        self.memory_q: collections.deque[_SurvivalRecord] = collections.deque(maxlen=batchsize)
        self.memory_k: collections.deque[_SurvivalRecord] = collections.deque(maxlen=batchsize * steps)

    def forward(
        self,
        image: Tensor,
        masks: Tensor | None,
        os_event: Tensor,
        os_time: Tensor,
        rfs_event: Tensor,
        rfs_time: Tensor,
    ) -> tuple[MultiTaskOutput, Tensor, Tensor]:
        """One training step's forward: online outputs and the two bank losses.

        Args:
            image: ``(B, P, D, H, W)`` CT.
            masks: ``(B, P, R, D, H, W)`` region masks.
            os_event, rfs_event: ``(B,)`` event indicators.
            os_time, rfs_time: ``(B,)`` times in days.

        Returns:
            ``(online outputs of this batch, OS Cox loss over the bank, RFS Cox loss over the bank)``;
            use the online ``mvi_logits`` for the MVI loss.
        """
        batch = image.shape[0]
        if batch > self.batchsize:
            raise ConfigError(
                f"momentum bank built for batches of {self.batchsize} received {batch} samples; "
                "build it with the trainer's batch size"
            )
        # The online and the target network read the same batch: prepare it once (masked CT,
        # regions and their pooling weights) where the network can (HCCMultiTaskNet.prepare).
        prepared = self.online.prepare(image, masks) if hasattr(self.online, "forward_prepared") else None
        online_out = self.online(image, masks) if prepared is None else self.online.forward_prepared(prepared)
        self.memory_q.clear()
        self.memory_q.extend(self._records(online_out, os_event, os_time, rfs_event, rfs_time))
        os_loss, rfs_loss = self._bank_loss()
        with torch.no_grad():
            self._update_momentum_encoder()
            target_out = self.target(image, masks) if prepared is None else self.target.forward_prepared(prepared)
            self.memory_k.extend(self._records(target_out, os_event, os_time, rfs_event, rfs_time))
        return online_out, os_loss, rfs_loss

    @torch.no_grad()
    def infer(self, image: Tensor, masks: Tensor | None) -> MultiTaskOutput:
        """Predict with the target network in eval mode (no gradient); its mode is restored after."""
        was_training = self.target.training
        self.target.eval()
        try:
            return self.target(image, masks)
        finally:
            self.target.train(was_training)

    def reset_memory(self) -> None:
        """Empty both memories (e.g. between folds or sweep trials)."""
        self.memory_q.clear()
        self.memory_k.clear()

    @staticmethod
    def _records(out: MultiTaskOutput, os_event, os_time, rfs_event, rfs_time) -> list[_SurvivalRecord]:
        columns = (
            out.os_risk.reshape(-1),
            out.rfs_risk.reshape(-1),
            os_event.reshape(-1),
            os_time.reshape(-1),
            rfs_event.reshape(-1),
            rfs_time.reshape(-1),
        )
        return [_SurvivalRecord(*row) for row in zip(*columns, strict=True)]

    def _bank_loss(self) -> tuple[Tensor, Tensor]:
        """Cox losses (OS, RFS) over ``memory_k + memory_q``."""
        # deque + deque keeps the LEFT operand's maxlen, exactly as in TorchSurv: the bank holds
        # at most batchsize * steps records, the current batch plus the newest target ones.
        bank = self.memory_k + self.memory_q
        device = self.memory_q[0].os_estimate.device

        def column(name: str) -> Tensor:
            return torch.stack([getattr(record, name).to(device) for record in bank])

        os_loss = cox_nll(column("os_estimate").float(), column("os_event"), column("os_time"))
        rfs_loss = cox_nll(column("rfs_estimate").float(), column("rfs_event"), column("rfs_time"))
        return os_loss, rfs_loss

    @torch.no_grad()
    def _update_momentum_encoder(self) -> None:
        """EMA of the parameters, written as TorchSurv does: ``k * rate + q * (1 - rate)``."""
        for param_q, param_k in zip(self.online.parameters(), self.target.parameters(), strict=True):
            param_k.copy_(param_k * self.rate + param_q * (1.0 - self.rate))

    @torch.no_grad()
    def _init_target(self) -> None:
        for param_q, param_k in zip(self.online.parameters(), self.target.parameters(), strict=True):
            param_k.copy_(param_q)
            param_k.requires_grad = False
