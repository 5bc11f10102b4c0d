"""Region-of-interest enhancement stem (paper: "Neural network structure").

The paper adds three 3D convolutional layers in front of DenseNet, one each for the
background liver, the peritumoral margin and the tumour, and fuses them "to capture
liver-specific characteristics while enhancing features of the tumour and its margins".
Here each branch is ``Conv(k=3) + BatchNorm + ELU`` applied to the CT multiplied by its
region mask; the branch maps are concatenated, max-pooled and fused by a ``1x1(x1)``
convolution (+ BatchNorm + ELU). One stem serves all phases (weights shared across phases)
and it replaces DenseNet's own convolution + max-pool stem.

ROI strategies (``ExperimentConfig.roi``) choose the branches:

========================  ====================================================
``full``                  background liver, margin, tumour (the paper)
``tumour_margin``         margin, tumour
``tumour``                tumour
``liver``                 whole liver (one branch on liver-masked CT)
``none``                  one branch on the raw crop, masks unused
========================  ====================================================

Region masks come from the cache channels ``REGIONS = (liver, margin, tumour)``:
background liver is ``liver AND NOT margin AND NOT tumour``; margin and tumour are used as
stored (the margin band straddles the tumour boundary, so it overlaps the tumour rim).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import Tensor, nn

from hcc_exp.config import RoiStrategy
from hcc_exp.data.cache import REGIONS

ACT = ("elu", {"inplace": True})
NORM = "batch"

ROI_BRANCHES: dict[str, tuple[str, ...]] = {
    "full": ("background_liver", "margin", "tumour"),
    "tumour_margin": ("margin", "tumour"),
    "tumour": ("tumour",),
    "liver": ("liver",),
    "none": ("crop",),
}
"""Branch names of every ROI strategy, in channel order of the concatenated branch maps."""

_LIVER, _MARGIN, _TUMOUR = (REGIONS.index(name) for name in ("liver", "margin", "tumour"))


def region_masks(masks: Tensor | None, strategy: RoiStrategy, like: Tensor) -> Tensor:
    """Per-branch region masks for ``strategy``.

    Args:
        masks: ``(N, R, *spatial)`` binary masks in ``REGIONS`` order (float or uint8);
            ignored (may be None) for ``none``.
        strategy: the ROI strategy.
        like: ``(N, 1, *spatial)`` CT; the result takes its dtype and device.

    Returns:
        ``(N, n_branches, *spatial)`` float masks in ``ROI_BRANCHES[strategy]`` order.
    """
    if strategy == "none":
        return torch.ones_like(like)
    m = masks.to(dtype=like.dtype)
    liver, margin, tumour = m[:, _LIVER], m[:, _MARGIN], m[:, _TUMOUR]
    regions = {
        "background_liver": liver * (1 - margin) * (1 - tumour),
        "margin": margin,
        "tumour": tumour,
        "liver": liver,
    }
    return torch.stack([regions[name] for name in ROI_BRANCHES[strategy]], dim=1)


class RoiEnhancementStem(nn.Module):
    """ROI branches, max pooling and 1x1 fusion, shared across phases; DenseNet's stem.

    It takes the place of DenseNet's ``conv(stride 2) + norm + act + MaxPool`` stem: each
    branch is ``Conv(k=3, stride 2) + BatchNorm + ELU`` on the CT times its region mask (the
    masking happens at full resolution), the branch maps are concatenated, max-pooled
    (k=3, stride 2) and fused by a ``1x1(x1)`` convolution + BatchNorm + ELU into the
    DenseNet's ``init_features`` channels. Pooling before the fusion keeps the tiny model fast
    on CPU: only the branch convolutions run at half resolution.

    Args:
        strategy: ROI strategy (see module docstring).
        branch_channels: channels of each branch (``ModelConfig.stem_channels``).
        out_channels: channels of the fused output (``ModelConfig.init_features``).
        spatial_dims: 3 (volumes) or 2 (axial slices).

    Shapes:
        ``forward(image (N, 1, *S), regions (N, n_branches, *S)) -> (N, out_channels, *S / 4)``,
        ``regions`` from :func:`region_masks` (the backbone reuses them for region pooling)
        (each side ``ceil(ceil(s / 2) / 2)``).
    """

    def __init__(
        self, strategy: RoiStrategy, branch_channels: int, out_channels: int, spatial_dims: int = 3
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.branch_names = ROI_BRANCHES[strategy]
        conv = Conv[Conv.CONV, spatial_dims]
        self.branches = nn.ModuleDict(
            {
                name: nn.Sequential(
                    OrderedDict(
                        conv=conv(1, branch_channels, kernel_size=3, stride=2, padding=1, bias=False),
                        norm=get_norm_layer(name=NORM, spatial_dims=spatial_dims, channels=branch_channels),
                        act=get_act_layer(name=ACT),
                    )
                )
                for name in self.branch_names
            }
        )
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)
        self.fuse = nn.Sequential(
            OrderedDict(
                conv=conv(branch_channels * len(self.branch_names), out_channels, kernel_size=1, bias=False),
                norm=get_norm_layer(name=NORM, spatial_dims=spatial_dims, channels=out_channels),
                act=get_act_layer(name=ACT),
            )
        )

    def forward(self, image: Tensor, regions: Tensor) -> Tensor:
        maps = [branch(image * regions[:, i : i + 1]) for i, branch in enumerate(self.branches.values())]
        return self.fuse(self.pool(torch.cat(maps, dim=1)))
