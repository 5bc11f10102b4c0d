"""The LightningModule: multi-task network, Cox + cross-entropy losses, loss weighting, momentum.

Training step (paper, "Multi-task learning optimization"):
    L = w_os * L_os + w_rfs * L_rfs + w_mvi * L_mvi
with L_os, L_rfs the negative Cox partial log-likelihoods (over TorchSurv's momentum memory
bank when enabled) and L_mvi the cross-entropy, and the weights w from DWA (or the static /
uncertainty alternatives), updated from epoch-averaged unweighted training losses.

Validation metrics are computed once per epoch on the concatenated predictions of the
internal split, not averaged over batches: the C-index and the Cox likelihood are not
additive over batches.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torchsurv.metrics.cindex import ConcordanceIndex

from hcc_exp.config import ExperimentConfig
from hcc_exp.models import MultiTaskOutput, build_model
from hcc_exp.training.losses import cox_nll, mvi_cross_entropy
from hcc_exp.training.momentum import MultiTaskMomentum
from hcc_exp.training.weighting import TASKS, build_weighting


def c_index(log_risk: torch.Tensor, event: torch.Tensor, time: torch.Tensor) -> float:
    """Harrell's C-index of a log-risk (higher = worse) with torchsurv; NaN without events."""
    if int(event.sum()) == 0 or log_risk.numel() < 2:
        return float("nan")
    try:
        return float(ConcordanceIndex()(log_risk.double(), event.bool(), time.double()))
    except ValueError:  # torchsurv: "No comparable pairs" (e.g. the only event is the last time)
        return float("nan")


class MultiTaskModule(pl.LightningModule):
    """Owns the network, the losses, the loss weighting and the momentum memory bank.

    Args:
        config: the resolved experiment config as a JSON-compatible dict (stored in the
            checkpoint's hyper-parameters, so a checkpoint can rebuild its model).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = ExperimentConfig.model_validate(config)
        network = build_model(self.config)
        self.momentum: MultiTaskMomentum | None = None
        if self.config.momentum.enabled:
            self.momentum = MultiTaskMomentum(
                network,
                batchsize=self.config.trainer.batch_size,
                steps=self.config.momentum.steps,
                rate=self.config.momentum.rate,
            )
            self.network = None
        else:
            self.network = network
        self.weighting = build_weighting(self.config.loss, n_tasks=len(TASKS))
        self._epoch_loss_sums = torch.zeros(len(TASKS), dtype=torch.float64)
        self._epoch_batches = 0
        self._val_outputs: list[dict[str, torch.Tensor]] = []

    # ------------------------------------------------------------------ inference
    @property
    def inference_network(self) -> torch.nn.Module:
        """The network used for predictions.

        With the memory bank this is the online network, the one the gradients train: the
        momentum target trails it by about ``1 / (1 - rate)`` steps (100 at the default
        0.99; torchsurv's 0.999 would leave it near its initialisation on a small cohort).
        """
        return self.momentum.online if self.momentum is not None else self.network

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> MultiTaskOutput:
        return self.inference_network(image, masks)

    # ------------------------------------------------------------------ training
    def _task_losses(self, batch: dict[str, torch.Tensor]) -> tuple[MultiTaskOutput, torch.Tensor]:
        if self.momentum is not None:
            out, loss_os, loss_rfs = self.momentum(
                batch["image"], batch["masks"], batch["os_event"], batch["os_time"], batch["rfs_event"], batch["rfs_time"]
            )
        else:
            out = self.network(batch["image"], batch["masks"])
            loss_os = cox_nll(out.os_risk, batch["os_event"], batch["os_time"])
            loss_rfs = cox_nll(out.rfs_risk, batch["rfs_event"], batch["rfs_time"])
        loss_mvi = mvi_cross_entropy(out.mvi_logits, batch["mvi"], self.config.loss.mvi_class_weights)
        return out, torch.stack([loss_os, loss_rfs, loss_mvi])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, losses = self._task_losses(batch)
        total = self.weighting(losses)
        self._epoch_loss_sums += losses.detach().double().cpu()
        self._epoch_batches += 1
        batch_size = batch["image"].shape[0]
        for name, value in zip(TASKS, losses, strict=True):
            self.log(f"train/loss_{name}", value.detach(), on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        return total

    def on_train_epoch_start(self) -> None:
        self._epoch_loss_sums.zero_()
        self._epoch_batches = 0
        for name, weight in zip(TASKS, self.weighting.weights(), strict=True):
            self.log(f"weights/{name}", float(weight), on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        if self._epoch_batches:
            mean_losses = (self._epoch_loss_sums / self._epoch_batches).tolist()
            self.weighting.end_epoch(mean_losses)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def predict_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.inference_network(batch["image"], batch["masks"])
        return {
            "os_risk": out.os_risk.detach().float(),
            "rfs_risk": out.rfs_risk.detach().float(),
            "mvi_logits": out.mvi_logits.detach().float(),
            "os_time": batch["os_time"],
            "os_event": batch["os_event"],
            "rfs_time": batch["rfs_time"],
            "rfs_event": batch["rfs_event"],
            "mvi": batch["mvi"],
            "index": batch["index"],
        }

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._val_outputs.append(self.predict_batch(batch))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        metrics = epoch_metrics(concat_outputs(self._val_outputs), self.config.loss.mvi_class_weights)
        self._val_outputs = []
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=key in {"loss", "os_c_index"})

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.config.optim.lr, weight_decay=self.config.optim.weight_decay)


def concat_outputs(outputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([o[key].reshape(o[key].shape[0], *o[key].shape[1:]) for o in outputs]) for key in outputs[0]}


def epoch_metrics(out: dict[str, torch.Tensor], class_weights: tuple[float, float] | None) -> dict[str, float]:
    """Losses and metrics of concatenated predictions of one split.

    Returns:
        ``loss`` (unweighted sum of the three task losses, the early-stopping monitor),
        ``loss_os``, ``loss_rfs``, ``loss_mvi``, ``os_c_index``, ``rfs_c_index``,
        ``mvi_accuracy``, ``mvi_f1``.
    """
    loss_os = cox_nll(out["os_risk"], out["os_event"], out["os_time"])
    loss_rfs = cox_nll(out["rfs_risk"], out["rfs_event"], out["rfs_time"])
    loss_mvi = mvi_cross_entropy(out["mvi_logits"], out["mvi"], class_weights)
    predicted = out["mvi_logits"].argmax(dim=1).cpu().numpy()
    truth = out["mvi"].cpu().numpy()
    metrics = {
        "loss_os": float(loss_os),
        "loss_rfs": float(loss_rfs),
        "loss_mvi": float(loss_mvi),
        "os_c_index": c_index(out["os_risk"], out["os_event"], out["os_time"]),
        "rfs_c_index": c_index(out["rfs_risk"], out["rfs_event"], out["rfs_time"]),
        "mvi_accuracy": float(accuracy_score(truth, predicted)),
        "mvi_f1": float(f1_score(truth, predicted, zero_division=0)),
    }
    metrics["loss"] = metrics["loss_os"] + metrics["loss_rfs"] + metrics["loss_mvi"]
    return {k: (v if np.isfinite(v) else float("nan")) for k, v in metrics.items()}
