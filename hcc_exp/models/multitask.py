"""The multi-task network: phase-shared ROI stem + DenseNet, then OS, RFS and MVI heads.

Paper ("Neural network structure"): "two linear layers were used to provide individual
predictions of survival and recurrence risk, while a third linear layer with two outputs
was used to predict MVI"; dropout sits before the heads ("DL model training").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from hcc_exp.config import ExperimentConfig, ModelConfig, RoiStrategy
from hcc_exp.models.backbone import PhaseSharedBackbone, PreparedBatch


class MultiTaskOutput(NamedTuple):
    """Outputs of :class:`HCCMultiTaskNet` for a batch of B patients.

    Attributes:
        os_risk: ``(B,)`` log relative hazard (log-risk) of death (higher = worse).
        rfs_risk: ``(B,)`` log relative hazard of recurrence or death.
        mvi_logits: ``(B, 2)`` logits of (no MVI, MVI).
    """

    os_risk: Tensor
    rfs_risk: Tensor
    mvi_logits: Tensor


class HCCMultiTaskNet(nn.Module):
    """Multi-task network for OS, RFS and MVI.

    Args:
        backbone: phase-shared feature extractor returning ``(B, backbone.out_features)``.
        dropout: dropout probability before the heads.

    Attributes:
        target_layer_name: dotted module name of the last dense block (for Grad-CAM). Its
            activations have batch ``B * P`` (3D; phase-major per patient) or
            ``B * P * n_slices`` (2D).
    """

    def __init__(self, backbone: PhaseSharedBackbone, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_dropout = nn.Dropout(dropout)
        self.os_head = nn.Linear(backbone.out_features, 1)
        self.rfs_head = nn.Linear(backbone.out_features, 1)
        self.mvi_head = nn.Linear(backbone.out_features, 2)
        self.target_layer_name = f"backbone.encoder.{backbone.encoder.last_block_name}"
        _init_weights(self)

    def backbone_features(self, image: Tensor, masks: Tensor | None) -> Tensor:
        """``image (B, P, D, H, W)``, ``masks (B, P, R, D, H, W)`` -> ``(B, P * F)`` concatenated phase features."""
        return self.backbone(image, masks)

    def forward(self, image: Tensor, masks: Tensor | None) -> MultiTaskOutput:
        """Predict the three tasks.

        Args:
            image: ``(B, P, D, H, W)`` float CT in [0, 1], P = ``len(config.phases)`` in ``PHASES`` order.
            masks: ``(B, P, R, D, H, W)`` float or uint8 binary masks, R = 3 (liver, margin,
                tumour); may be None when ``roi == "none"``.

        Returns:
            :class:`MultiTaskOutput`, float32 also under mixed-precision autocast: the heads
            run in float32 (the Cox losses rank risks, and bf16 keeps 8 bits of them).
        """
        return self.forward_prepared(self.prepare(image, masks))

    def prepare(self, image: Tensor, masks: Tensor | None) -> PreparedBatch:
        """The batch made ready for :meth:`forward_prepared` (checked; masked CT and regions built once)."""
        return self.backbone.prepare(image, masks)

    def forward_prepared(self, prepared: PreparedBatch) -> MultiTaskOutput:
        """:meth:`forward` of a :meth:`prepare` d batch (several networks may read the same one)."""
        features = self.head_dropout(self.backbone.forward_prepared(prepared))
        with torch.autocast(device_type=features.device.type, enabled=False):
            features = features.to(self.os_head.weight.dtype)  # bf16 under autocast -> the heads' float32
            return MultiTaskOutput(
                os_risk=self.os_head(features).squeeze(-1),
                rfs_risk=self.rfs_head(features).squeeze(-1),
                mvi_logits=self.mvi_head(features),
            )


def _init_weights(module: nn.Module) -> None:
    # MONAI DenseNet's initialisation: Kaiming-normal convolutions, unit BatchNorm, zero biases.
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm3d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def build_network(
    model: ModelConfig, *, phases: tuple[str, ...], roi: RoiStrategy, n_slices_2d: int = 1
) -> HCCMultiTaskNet:
    """Build the network of a model section for the given phases and ROI strategy.

    Args:
        model: the architecture; resolved against its preset here.
        phases: the input's CT phases (their number sets the feature width).
        roi: ROI strategy of the stem.
        n_slices_2d: for ``model.dims == "2d"``: central axial slices per phase (features averaged).
    """
    model_cfg = model.resolved()
    backbone = PhaseSharedBackbone(
        n_phases=len(phases),
        roi=roi,
        dims=model_cfg.dims,
        stem_channels=model_cfg.stem_channels,
        init_features=model_cfg.init_features,
        growth_rate=model_cfg.growth_rate,
        block_config=model_cfg.block_config,
        bn_size=model_cfg.bn_size,
        dropout=model_cfg.dropout,
        n_slices=n_slices_2d,
        pooling=model_cfg.pooling,
        formulation=model_cfg.formulation,
    )
    return HCCMultiTaskNet(backbone, dropout=model_cfg.dropout)


def build_model(config: ExperimentConfig, *, n_slices_2d: int = 1) -> HCCMultiTaskNet:
    """:func:`build_network` of ``config.model``, ``config.phases`` and ``config.roi``."""
    return build_network(config.model, phases=config.phases, roi=config.roi, n_slices_2d=n_slices_2d)
