"""How the OS, RFS and MVI losses are combined into one training loss.

* :class:`DynamicWeightAverage` (Liu, Johns & Davison 2019, "End-to-end multi-task learning
  with attention", reference code ``lorenmt/mtan``; the paper's choice with T = 2):
  weights are 1 in the first two epochs; from the third epoch on
  ``w_k = K * softmax_k(r_k / T)`` with ``r_k = L_k(t-1) / L_k(t-2)``, the ratio of the
  epoch-averaged unweighted training losses of the last two epochs. A task whose loss falls
  slowly gets more weight. Cox negative partial log-likelihoods and cross-entropy are >= 0,
  but an epoch may have a zero loss (e.g. no events in any batch): when ``L_k(t-2) <= eps``
  the ratio is taken as 1 (no evidence of change).
* :class:`StaticWeighting`: fixed weights (``LossConfig.static_weights``).
* :class:`UncertaintyWeighting` (Kendall, Gal & Cipolla 2018): learnable
  ``s_k = log sigma_k^2`` and ``total = sum_k exp(-s_k) * L_k + s_k``, the usual form with the
  1/2 factors of the regression case dropped (it is twice Kendall's regression objective and
  exactly the classification one up to the approximation made there). ``weights()`` returns
  ``exp(-s_k)``. The total can be negative once ``s_k < 0``.

State (loss history, current weights, log-variances) lives in buffers / parameters, so it is
saved in and restored from Lightning checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hcc_exp.config import LossConfig
from hcc_exp.errors import ConfigError

TASKS: tuple[str, ...] = ("os", "rfs", "mvi")
"""Task order of every loss vector and weight vector."""


class LossWeighting(nn.Module):
    """Base class: combines ``K`` unweighted task losses into one scalar.

    Args:
        n_tasks: K.
    """

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        if n_tasks < 1:
            raise ConfigError(f"loss weighting needs at least one task, got {n_tasks}")
        self.n_tasks = n_tasks

    def weights(self) -> Tensor:
        """``(K,)`` current weights, detached."""
        raise NotImplementedError

    def forward(self, losses: Tensor) -> Tensor:
        """``losses (K,)`` unweighted -> weighted total (scalar)."""
        self._check(losses)
        return (self.weights().to(losses) * losses).sum()

    def end_epoch(self, mean_losses: Sequence[float]) -> None:
        """Receive the epoch-averaged UNWEIGHTED training losses ``(K,)``; no-op unless overridden."""
        self._check(torch.as_tensor(mean_losses))

    def _check(self, losses: Tensor) -> None:
        if tuple(losses.shape) != (self.n_tasks,):
            raise ConfigError(
                f"{type(self).__name__} expects {self.n_tasks} task losses, got shape {tuple(losses.shape)}"
            )


class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average (see module docstring).

    Args:
        n_tasks: K.
        temperature: T; larger T gives more uniform weights (paper: 2.0).
        eps: losses at or below ``eps`` in epoch ``t-2`` give ratio 1.
    """

    def __init__(self, n_tasks: int = 3, temperature: float = 2.0, eps: float = 1e-12) -> None:
        super().__init__(n_tasks)
        if temperature <= 0:
            raise ConfigError(f"DWA temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.eps = eps
        self.register_buffer("current", torch.ones(n_tasks, dtype=torch.float32))
        # Row 0: L(t-2), row 1: L(t-1).
        self.register_buffer("history", torch.zeros(2, n_tasks, dtype=torch.float32))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def weights(self) -> Tensor:
        return self.current.detach().clone()

    def end_epoch(self, mean_losses: Sequence[float]) -> None:
        losses = torch.as_tensor(mean_losses, dtype=torch.float32, device=self.history.device).reshape(-1)
        self._check(losses)
        self.history[0] = self.history[1]
        self.history[1] = losses
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            self.current.copy_(dwa_weights(self.history[0], self.history[1], self.temperature, self.eps))


def dwa_weights(loss_before: Tensor, loss_last: Tensor, temperature: float, eps: float = 1e-12) -> Tensor:
    """``K * softmax(r / T)`` with ``r = loss_last / loss_before`` (ratio 1 where ``loss_before <= eps``).

    Args:
        loss_before: ``(K,)`` epoch-mean losses of epoch t-2.
        loss_last: ``(K,)`` epoch-mean losses of epoch t-1.
        temperature: T.
    """
    safe = loss_before > eps
    ratio = torch.where(safe, loss_last / torch.where(safe, loss_before, torch.ones_like(loss_before)), 1.0)
    return loss_before.numel() * torch.softmax(ratio / temperature, dim=0)


class StaticWeighting(LossWeighting):
    """Fixed weights.

    Args:
        weights: ``(K,)`` non-negative weights, e.g. ``LossConfig.static_weights``.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__(len(weights))
        values = torch.as_tensor(list(weights), dtype=torch.float32)
        if bool((values < 0).any()):
            raise ConfigError(f"static loss weights must be >= 0, got {list(weights)}")
        self.register_buffer("fixed", values)

    def weights(self) -> Tensor:
        return self.fixed.detach().clone()


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic-uncertainty weighting (Kendall et al. 2018; form in the module docstring).

    Args:
        n_tasks: K. The log-variances ``log_vars`` start at 0 (all weights 1) and are learned
            by the optimiser together with the network (include this module's parameters).
    """

    def __init__(self, n_tasks: int = 3) -> None:
        super().__init__(n_tasks)
        self.log_vars = nn.Parameter(torch.zeros(n_tasks))

    def weights(self) -> Tensor:
        return torch.exp(-self.log_vars).detach().clone()

    def forward(self, losses: Tensor) -> Tensor:
        self._check(losses)
        s = self.log_vars.to(losses)
        return (torch.exp(-s) * losses + s).sum()


def build_weighting(loss_cfg: LossConfig, n_tasks: int = 3) -> LossWeighting:
    """The weighting named by ``loss_cfg.weighting`` for ``n_tasks`` tasks (order :data:`TASKS`)."""
    if loss_cfg.weighting == "dwa":
        return DynamicWeightAverage(n_tasks, temperature=loss_cfg.dwa_temperature)
    if loss_cfg.weighting == "static":
        if len(loss_cfg.static_weights) != n_tasks:
            raise ConfigError(
                f"loss.static_weights has {len(loss_cfg.static_weights)} values but there are {n_tasks} tasks"
            )
        return StaticWeighting(loss_cfg.static_weights)
    if loss_cfg.weighting == "uncertainty":
        return UncertaintyWeighting(n_tasks)
    raise ConfigError(f"unknown loss.weighting {loss_cfg.weighting!r}; valid: dwa, static, uncertainty")
