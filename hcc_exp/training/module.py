"""The LightningModule: multi-task network, Cox + cross-entropy losses, loss weighting, momentum.

Training step (paper, "Multi-task learning optimization"):
    L = w_os * L_os + w_rfs * L_rfs + w_mvi * L_mvi
with L_os, L_rfs the negative Cox partial log-likelihoods (over TorchSurv's momentum memory
bank when enabled) and L_mvi the cross-entropy, and the weights w from DWA (or the static /
uncertainty alternatives), updated from epoch-averaged unweighted training losses.

Validation metrics are computed once per epoch on the concatenated predictions of the
internal split, not averaged over batches: the C-index and the Cox likelihood are not
additive over batches.

Configuration: the module receives the typed sections it uses (phases, ROI strategy,
``ModelConfig``, ``LossConfig``, ``MomentumConfig``, ``OptimConfig``, the batch size and
the epoch count of the schedule); :meth:`MultiTaskModule.from_config` picks them from an
:class:`~hcc_exp.config.ExperimentConfig` and stores the whole resolved config in the
checkpoint (``hyper_parameters["config"]``, JSON types, loadable with
``torch.load(weights_only=True)``), so that a checkpoint rebuilds its network and carries its
preprocessing recipe. :meth:`MultiTaskModule.load_from_checkpoint` is the one place that turns
that stored dict back into typed sections.

Precision: under Lightning's ``bf16-mixed`` the network runs in bf16 autocast; the heads
(:class:`~hcc_exp.models.multitask.HCCMultiTaskNet`), the task losses and the Cox risk set
(memory bank included) stay float32.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torchsurv.metrics.cindex import ConcordanceIndex

from hcc_exp.config import (
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    MomentumConfig,
    OptimConfig,
    RoiStrategy,
)
from hcc_exp.errors import ConfigError, RunFolderError
from hcc_exp.models import MultiTaskOutput
from hcc_exp.models.multitask import build_network
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
        phases: the CT phases of the input, in ``PHASES`` order.
        roi: ROI strategy of the stem.
        model: the architecture (resolved against its preset here).
        loss: how the task losses are weighted.
        momentum: the memory bank of the Cox losses.
        optim: AdamW and the learning-rate schedule.
        batch_size: training batch size (size of the bank's current batch).
        max_epochs: epochs the schedule spans (``trainer.max_epochs``).
        hparams: what the checkpoint records in ``hyper_parameters``; :meth:`from_config`
            passes ``{"config": <resolved experiment config as JSON>}``.

    Build it with :meth:`from_config`; restore it with :meth:`load_from_checkpoint`.
    """

    def __init__(
        self,
        *,
        phases: tuple[str, ...],
        roi: RoiStrategy,
        model: ModelConfig,
        loss: LossConfig,
        momentum: MomentumConfig,
        optim: OptimConfig,
        batch_size: int,
        max_epochs: int = 1,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if hparams is not None:
            self.save_hyperparameters(hparams)
        self.loss_config = loss
        self.optim_config = optim
        self.max_epochs = int(max_epochs)
        network = build_network(model, phases=phases, roi=roi)
        self.momentum: MultiTaskMomentum | None = None
        if momentum.enabled:
            self.momentum = MultiTaskMomentum(network, batchsize=batch_size, steps=momentum.steps, rate=momentum.rate)
            self.network = None
        else:
            self.network = network
        self.weighting = build_weighting(loss, n_tasks=len(TASKS))
        self._epoch_loss_sums = torch.zeros(len(TASKS), dtype=torch.float64)
        self._epoch_batches = 0
        self._val_outputs: list[dict[str, torch.Tensor]] = []

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> MultiTaskModule:
        """The module of an experiment: its sections, and the whole config recorded for the checkpoint."""
        return cls(
            phases=config.phases,
            roi=config.roi,
            model=config.model,
            loss=config.loss,
            momentum=config.momentum,
            optim=config.optim,
            batch_size=config.trainer.batch_size,
            max_epochs=config.trainer.max_epochs,
            hparams={"config": config.model_dump(mode="json")},
        )

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = "cpu", **_: Any
    ) -> MultiTaskModule:
        """Rebuild the module of a checkpoint written by training and load its weights (eval mode).

        Reads ``hyper_parameters["config"]`` (every checkpoint format of this project so far)
        with ``torch.load(weights_only=True)``.

        Raises:
            RunFolderError: the file is missing, unreadable, or not a checkpoint of this project.
            ConfigError: its stored config is not valid for this version.
        """
        path = Path(checkpoint_path)
        if not path.is_file():
            raise RunFolderError(f"checkpoint {path} does not exist")
        try:
            payload: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for a bad file
            raise RunFolderError(f"{path} cannot be loaded as a checkpoint: {exc}") from exc
        try:
            raw_config, state_dict = payload["hyper_parameters"]["config"], payload["state_dict"]
        except (KeyError, TypeError) as exc:
            raise RunFolderError(f"{path} lacks {exc} (not an hcc-exp checkpoint)") from exc
        try:
            config = ExperimentConfig.model_validate(raw_config)
        except ValueError as exc:
            raise ConfigError(f"config stored in {path} is invalid: {exc}") from exc
        module = cls.from_config(config)
        module.load_state_dict(state_dict)
        return module.eval()

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
        loss_mvi = mvi_cross_entropy(out.mvi_logits, batch["mvi"], self.loss_config.mvi_class_weights)
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
        if self._trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=batch_size)
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
        metrics = epoch_metrics(concat_outputs(self._val_outputs), self.loss_config.mvi_class_weights)
        self._val_outputs = []
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=key in {"loss", "os_c_index"})

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        cfg = self.optim_config
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.schedule == "constant":
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else self.max_epochs
        warmup_steps = min(total_steps - 1, round(cfg.warmup_epochs * total_steps / max(1, max_epochs)))
        if cfg.schedule == "onecycle":
            scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=cfg.lr,
                total_steps=total_steps,
                pct_start=max(warmup_steps, 1) / total_steps,
                anneal_strategy="cos",
                cycle_momentum=False,
            )
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_steps, cfg.min_lr_ratio)
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


WARMUP_START_FACTOR = 0.01
"""The warm-up of ``warmup_cosine`` starts at 1 % of the peak learning rate."""


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier of step ``step`` (0-based): linear warm-up, then cosine decay.

    ``WARMUP_START_FACTOR -> 1`` linearly over ``warmup_steps``, then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 at the end
    of the warm-up to 1 after the last step.

    >>> [round(warmup_cosine_factor(s, 5, 1, 0.0), 3) for s in range(5)]
    [0.01, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup_steps:
        return WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


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
