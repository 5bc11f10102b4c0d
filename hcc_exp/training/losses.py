"""Task losses: Cox negative partial log-likelihood (OS, RFS) and cross-entropy (MVI).

Paper ("DL model training"): "two negative partial log-likelihood components and one
cross-entropy loss". The Cox loss is TorchSurv's ``neg_partial_log_likelihood`` with Efron's
handling of tied event times (TorchSurv's default, and the default of lifelines and
scikit-survival) and TorchSurv's mean reduction: the partial log-likelihood summed over
event times divided by the number of DISTINCT event times (= the number of events when no
two events share a time).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torchsurv.loss.cox import neg_partial_log_likelihood

COX_TIES_METHOD = "efron"

# TorchSurv warns on every call with tied event times; ties are expected here (times in whole
# days, memory bank of several batches, +-3 day jitter), so the warning would only be spam.
_TIES_WARNING = r"Ties in `time` detected"


def cox_nll(log_risk: Tensor, event: Tensor, time: Tensor) -> Tensor:
    """Mean negative Cox partial log-likelihood (Efron ties) of one batch or memory bank.

    Args:
        log_risk: ``(N,)`` predicted log relative hazard.
        event: ``(N,)`` event indicator (bool or 0/1).
        time: ``(N,)`` event or censoring time (days).

    Returns:
        Scalar loss, >= 0 (mean over distinct event times, see the module docstring). A batch without events (or with fewer than two samples) has no
        partial likelihood: the result is then ``log_risk.sum() * 0.0``, a zero that stays
        connected to the graph (zero gradient, works with DDP and gradient hooks), and
        TorchSurv is not called (it would warn and return a disconnected zero).
    """
    log_risk = log_risk.reshape(-1)
    event = event.reshape(-1).bool()
    time = time.reshape(-1)
    if log_risk.numel() < 2 or not bool(event.any()):
        return log_risk.sum() * 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TIES_WARNING)
        # float32 at least: days in bfloat16 would round to ties (TorchSurv computes in float32).
        dtype = torch.promote_types(log_risk.dtype, torch.float32)
        return neg_partial_log_likelihood(
            log_risk.to(dtype), event, time.to(dtype), ties_method=COX_TIES_METHOD, reduction="mean"
        )


def mvi_cross_entropy(logits: Tensor, target: Tensor, class_weights: tuple[float, float] | None) -> Tensor:
    """Cross-entropy of the MVI head.

    Args:
        logits: ``(N, 2)`` logits of (no MVI, MVI).
        target: ``(N,)`` MVI label in {0, 1}.
        class_weights: optional (no MVI, MVI) weights (``LossConfig.mvi_class_weights``); with
            weights the mean is weighted, as in ``torch.nn.functional.cross_entropy``.

    Returns:
        Scalar mean loss.
    """
    weight = (
        None
        if class_weights is None
        else torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    )
    return F.cross_entropy(logits, target.long().reshape(-1), weight=weight)
