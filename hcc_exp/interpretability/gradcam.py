"""3D Grad-CAM of each head (OS, RFS, MVI), per phase, on the input grid.

Grad-CAM (``monai.visualize.GradCAM``) is taken at the network's ``target_layer_name`` (the
last dense block). The backbone runs the phases of a batch as one batch of ``B * P`` volumes,
so the target activations and their gradients are ``(B * P, C, d, h, w)`` and MONAI's
per-sample channel weights (spatially averaged gradients) are per patient *and phase*: each
phase gets its own map. The maps are trilinearly upsampled to the input grid and kept RAW
(MONAI's default postprocessing rescales each map to [0, 1], which changes nothing in the
shares of one map but makes maps incomparable and hides an all-zero map).

Each head is exposed to MONAI as one column of a ``(B, 4)`` score tensor: the OS and RFS
log-risks (higher = worse; the map shows what raises the risk) and the two MVI logits, of
which column "MVI present" is explained.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import Tensor, nn

from hcc_exp.errors import ConfigError
from hcc_exp.models import HCCMultiTaskNet

HEADS: tuple[str, ...] = ("os", "rfs", "mvi")
HEAD_TITLES: dict[str, str] = {"os": "OS risk", "rfs": "RFS risk", "mvi": "MVI present"}
HEAD_SCORE_COLUMN: dict[str, int] = {"os": 0, "rfs": 1, "mvi": 3}
"""Column of :class:`HeadScores`' output explained for each head (class_idx of Grad-CAM)."""


class HeadScores(nn.Module):
    """The three heads of a network as one ``(B, 4)`` score tensor for Grad-CAM.

    Columns: OS log-risk, RFS log-risk, MVI logit "absent", MVI logit "present"
    (:data:`HEAD_SCORE_COLUMN` says which column explains which head).
    """

    def __init__(self, network: HCCMultiTaskNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, masks: Tensor | None = None) -> Tensor:
        out = self.network(image, masks)
        return torch.cat([out.os_risk[:, None], out.rfs_risk[:, None], out.mvi_logits], dim=1)


def _identity(x: Tensor) -> Tensor:
    return x


def grad_cams(
    network: HCCMultiTaskNet,
    image: Tensor,
    masks: Tensor | None,
    heads: Sequence[str] = HEADS,
    target_layer: str | None = None,
) -> dict[str, Tensor]:
    """Raw 3D Grad-CAM of each head for every phase, on the input grid.

    Args:
        network: a 3D :class:`HCCMultiTaskNet` (left unchanged: hooks go on a copy, which
            is run in eval mode).
        image: ``(B, P, D, H, W)`` float CT in [0, 1].
        masks: ``(B, P, R, D, H, W)`` region masks (liver, margin, tumour), or None for ``roi="none"``.
        heads: subset of :data:`HEADS`.
        target_layer: dotted module name in ``network``; default ``network.target_layer_name``.

    Returns:
        head -> ``(B, P, D, H, W)`` float32 maps, >= 0 (Grad-CAM's ReLU), not rescaled.

    Raises:
        ConfigError: a 2D model, or an unknown head or layer.
    """
    if getattr(network.backbone, "dims", "3d") != "3d":
        raise ConfigError("Grad-CAM is implemented for 3D models only (model.dims=3d)")
    unknown = [h for h in heads if h not in HEAD_SCORE_COLUMN]
    if unknown:
        raise ConfigError(f"unknown head(s) {unknown}; valid: {list(HEADS)}")
    layer = target_layer or network.target_layer_name
    if layer not in dict(network.named_modules()):
        raise ConfigError(f"network has no layer {layer!r} for Grad-CAM")
    if image.ndim != 5:
        raise ConfigError(f"image must be (B, P, D, H, W), got shape {tuple(image.shape)}")
    b, p = image.shape[:2]
    # MONAI registers hooks it never removes: keep them off the caller's network.
    wrapped = HeadScores(copy.deepcopy(network)).float().eval()
    cam = GradCAM(nn_module=wrapped, target_layers=f"network.{layer}", postprocessing=_identity)
    device = next(wrapped.parameters()).device
    image = image.to(device=device, dtype=torch.float32)
    masks = None if masks is None else masks.to(device=device, dtype=torch.float32)
    maps: dict[str, Tensor] = {}
    with torch.enable_grad():
        for head in heads:
            # (B * P, 1, D, H, W): MONAI upsamples to image.shape[2:], the (D, H, W) grid.
            raw = cam(x=image, class_idx=HEAD_SCORE_COLUMN[head], masks=masks)
            maps[head] = raw.detach().reshape(b, p, *image.shape[2:]).float()
    return maps


def patient_cams(
    network: HCCMultiTaskNet, image: np.ndarray, masks: np.ndarray, heads: Sequence[str] = HEADS
) -> dict[str, np.ndarray]:
    """Raw Grad-CAMs of one patient: ``image (P, D, H, W)``, ``masks (P, R, D, H, W)`` -> head -> ``(P, D, H, W)``."""
    image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    masks_t = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[None]
    maps = grad_cams(network, image_t, masks_t, heads)
    return {head: m[0].cpu().numpy() for head, m in maps.items()}
