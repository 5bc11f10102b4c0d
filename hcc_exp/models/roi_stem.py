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
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import Tensor, nn

from hcc_exp.config import RoiStrategy
from hcc_exp.data.cache import REGIONS
from hcc_exp.errors import ConfigError

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

    The regions are combined as booleans and converted to float once (one copy of the
    result, instead of a float copy of every mask plus the arithmetic of
    ``liver * (1 - margin) * (1 - tumour)``); for binary masks both give the same values.
    The result is laid out channels-last (``torch.channels_last_3d`` in 3D).

    >>> m = torch.zeros(1, 3, 2, 2, 2, dtype=torch.uint8); m[0, 0] = 1; m[0, 2, 0] = 1
    >>> region_masks(m, "full", torch.zeros(1, 1, 2, 2, 2)).sum(dim=(2, 3, 4)).tolist()
    [[4.0, 0.0, 4.0]]
    """
    if strategy == "none":
        return torch.ones_like(like)
    m = masks.bool()
    liver, margin, tumour = m[:, _LIVER], m[:, _MARGIN], m[:, _TUMOUR]
    regions = {
        "background_liver": lambda: liver & ~margin & ~tumour,
        "margin": lambda: margin,
        "tumour": lambda: tumour,
        "liver": lambda: liver,
    }
    # Stacked along a trailing axis and moved to dim 1: the result is channels-last, the layout
    # the stem's grouped convolution and max pooling run fastest in on CPU (no copy to get there).
    stacked = torch.stack([regions[name]() for name in ROI_BRANCHES[strategy]], dim=-1).movedim(-1, 1)
    return stacked.to(dtype=like.dtype)


def masked_regions(image: Tensor, masks: Tensor, strategy: RoiStrategy) -> tuple[Tensor, Tensor]:
    """The stem's input (CT times each branch's region) and the branch regions, built without float mask copies.

    Args:
        image: ``(N, 1, *spatial)`` CT.
        masks: ``(N, R, *spatial)`` binary masks in ``REGIONS`` order (uint8, bool or float).
        strategy: an ROI strategy other than ``none``.

    Returns:
        ``(masked, regions)``: ``masked`` is ``(N, n_branches, *spatial)`` in ``image``'s dtype,
        the values of ``image * region_masks(masks, strategy, image)``; ``regions`` is the
        ``(N, n_branches, *spatial)`` binary masks themselves (uint8 or bool), for region
        pooling (:func:`~hcc_exp.models.backbone.cell_shares` counts them exactly). Both are
        channels-last views: the regions are combined bitwise (``liver & ~margin & ~tumour``
        on 0/1 bytes) into one ``(N, *spatial, n_branches)`` byte tensor, and the masked CT is
        ONE broadcast multiplication of it, already in the stem convolution's layout.

    >>> m = torch.zeros(1, 3, 1, 2, 2, dtype=torch.uint8); m[0, 0] = 1; m[0, 2, 0, 0] = 1
    >>> masked, regions = masked_regions(torch.full((1, 1, 1, 2, 2), 2.0), m, "full")
    >>> masked.sum(dim=(2, 3, 4)).tolist(), regions.dtype
    ([[6.0, 0.0, 2.0]], torch.uint8)
    """
    binary = masks if masks.dtype in (torch.uint8, torch.bool) else masks.to(torch.uint8)
    liver, margin, tumour = binary[:, _LIVER], binary[:, _MARGIN], binary[:, _TUMOUR]
    regions = {
        # On 0/1 bytes ~x is 255 / 254, so x & ~y is x AND NOT y.
        "background_liver": lambda: liver & ~margin & ~tumour,
        "margin": lambda: margin,
        "tumour": lambda: tumour,
        "liver": lambda: liver,
    }
    stacked = torch.stack([regions[name]() for name in ROI_BRANCHES[strategy]], dim=-1)  # (N, *S, K)
    masked = image[:, 0].unsqueeze(-1) * stacked
    return masked.movedim(-1, 1), stacked.movedim(-1, 1)


def region_masks_reference(masks: Tensor | None, strategy: RoiStrategy, like: Tensor) -> Tensor:
    """:func:`region_masks` as written at commit fd7cd16 (float arithmetic; kept for the equality tests)."""
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


Formulation = Literal["fast", "reference"]
"""How the stem and the pooling are computed: ``fast`` (default) or ``reference``, the operators of
commit fd7cd16 (per-branch convolutions, concatenation, max pooling in the default layout).
Both compute the same function of the same parameters (tested to float tolerance)."""


def channels_last(x: Tensor) -> Tensor:
    """``x`` in the channels-last layout of its rank (4D: ``channels_last``, 5D: ``channels_last_3d``)."""
    return x.contiguous(memory_format=torch.channels_last_3d if x.ndim == 5 else torch.channels_last)


class RoiEnhancementStem(nn.Module):
    """ROI branches, max pooling and 1x1 fusion, shared across phases; DenseNet's stem.

    It takes the place of DenseNet's ``conv(stride 2) + norm + act + MaxPool`` stem: each
    branch is ``Conv(k=3, stride 2) + BatchNorm + ELU`` on the CT times its region mask (the
    masking happens at full resolution), the branch maps are concatenated, max-pooled
    (k=3, stride 2) and fused by a ``1x1(x1)`` convolution + BatchNorm + ELU into the
    DenseNet's ``init_features`` channels. Pooling before the fusion keeps the tiny model fast
    on CPU: only the branch convolutions run at half resolution.

    Computation (``formulation="fast"``, the default): the masked CT of all branches is ONE
    ``(N, n_branches, *S)`` tensor (one broadcast multiplication) and the branches are ONE
    grouped convolution (``groups = n_branches``, the branch kernels concatenated) followed by
    ONE BatchNorm over the concatenated channels (the branches' affine parameters and running
    statistics concatenated; the updated statistics are written back to each branch). Batch
    norm is per channel, so this is the same function as the separate branches, and it
    produces the concatenated map without a ``cat``. The stem runs channels-last, where the
    CPU max-pool kernel is vectorised over channels (about 4x faster forward and backward
    than on the default layout, same values and the same argmax on ties), and hands a
    contiguous map to the encoder. Parameters and their names are those of the reference
    formulation, so checkpoints load in either.

    Args:
        strategy: ROI strategy (see module docstring).
        branch_channels: channels of each branch (``ModelConfig.stem_channels``).
        out_channels: channels of the fused output (``ModelConfig.init_features``).
        spatial_dims: 3 (volumes) or 2 (axial slices).
        formulation: ``fast`` or ``reference`` (see :data:`Formulation`).

    Shapes:
        ``forward(image (N, 1, *S), regions (N, n_branches, *S)) -> (N, out_channels, *S / 4)``,
        ``regions`` from :func:`region_masks` (the backbone reuses them for region pooling)
        (each side ``ceil(ceil(s / 2) / 2)``).
    """

    def __init__(
        self,
        strategy: RoiStrategy,
        branch_channels: int,
        out_channels: int,
        spatial_dims: int = 3,
        formulation: Formulation = "fast",
    ) -> None:
        super().__init__()
        if formulation not in ("fast", "reference"):
            raise ConfigError(f"stem formulation must be 'fast' or 'reference', got {formulation!r}")
        self.strategy = strategy
        self.formulation = formulation
        self.spatial_dims = spatial_dims
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
        if self.formulation == "reference":
            maps = [branch(image * regions[:, i : i + 1]) for i, branch in enumerate(self.branches.values())]
            return self.fuse(self.pool(torch.cat(maps, dim=1)))
        return self.forward_masked(channels_last(image * regions))

    def forward_masked(self, masked: Tensor) -> Tensor:
        """The fast formulation on the masked CT of every branch.

        Args:
            masked: ``(N, n_branches, *S)`` CT times each branch's region mask (channels-last
                is fastest; see :func:`masked_regions`).

        Returns:
            ``(N, out_channels, *S / 4)``, the value of :meth:`forward`.

        The branch convolutions are ONE grouped convolution, and the branches'
        ``BatchNorm -> ELU -> MaxPool`` is computed as ``MaxPool -> BatchNorm -> ELU``:
        BatchNorm is an affine map per channel and ELU is increasing, so for a channel with
        ``gamma >= 0`` both orders give the same value and the same argmax. A channel with
        ``gamma < 0`` is decreasing in the convolution's output, so its kernel is negated
        first (``conv(x, -w) = -conv(x, w)``; BatchNorm of ``-y`` with ``|gamma|`` equals
        BatchNorm of ``y`` with ``gamma``). The batch statistics still come from the
        full-resolution map (``var_mean``: one pass), but normalisation and ELU, forward and
        backward, run on the 8x smaller pooled map. Same function and gradients as the
        reference order (tested to float tolerance; the batch variance is computed from sums of
        x and x^2, see :meth:`_signed_batch_statistics`); running statistics updated as
        ``torch.nn.BatchNorm`` does. (A gamma of exactly 0 makes a channel constant: its value
        is the same, but the max pool's argmax is then a tie, so that gamma's gradient may be
        taken at another voxel than the reference's.)
        """
        branches = list(self.branches.values())
        norms = [branch.norm for branch in branches]
        gamma = torch.cat([n.weight for n in norms])
        beta = torch.cat([n.bias for n in norms])
        sign = torch.where(gamma.detach() >= 0, 1.0, -1.0).to(gamma.dtype)  # (K * C,)
        weight = torch.cat([branch.conv.weight for branch in branches])  # (K * C, 1, 3, ...)
        signed_weight = weight * sign.reshape(-1, *([1] * (weight.ndim - 1)))
        conv = F.conv3d if self.spatial_dims == 3 else F.conv2d
        signed_maps = conv(masked, signed_weight, stride=2, padding=1, groups=len(branches))  # sign * branch map
        mean, var = self._signed_batch_statistics(signed_maps, norms, sign)
        scale = gamma * sign * torch.rsqrt(var + norms[0].eps)  # (K * C,), >= 0: |gamma| with the gradient of gamma
        shift = beta - scale * mean
        pooled = self.pool(signed_maps)
        view = (1, -1) + (1,) * self.spatial_dims
        maps = branches[0].act(pooled.to(scale.dtype) * scale.reshape(view) + shift.reshape(view))
        return self.fuse(maps).contiguous()

    @staticmethod
    def _signed_batch_statistics(signed_maps: Tensor, norms: list[nn.Module], sign: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (biased) variance per channel of ``signed_maps`` that BatchNorm would normalise with.

        In training (or without running statistics) the batch's own, computed in float32;
        the running statistics of the branch BatchNorms (which describe the unsigned maps)
        are updated with them as ``torch.nn.BatchNorm`` does (unbiased variance, momentum or
        cumulative average). In eval mode the running statistics, mean signed.
        """
        first = norms[0]
        use_batch_stats = first.training or not first.track_running_stats
        if not use_batch_stats:
            running_mean = torch.cat([n.running_mean for n in norms])
            running_var = torch.cat([n.running_var for n in norms])
            return sign * running_mean, running_var
        wide = signed_maps if signed_maps.dtype in (torch.float32, torch.float64) else signed_maps.float()
        # (voxels, channels): a view of the channels-last map. Sums of x and x^2 over it are two
        # fast column reductions (torch.var_mean over dims (0, 2, 3, 4) of a channels-last tensor
        # is about 3x slower, forward and backward); float32 sums keep ~1e-7 relative error here.
        columns = wide.movedim(1, -1).reshape(-1, wide.shape[1])
        count = columns.shape[0]
        mean = columns.sum(dim=0) / count
        var = ((columns * columns).sum(dim=0) / count - mean * mean).clamp_min(0)
        if first.training and first.track_running_stats:
            for n in norms:
                n.num_batches_tracked.add_(1)
            momentum = 0.0 if first.momentum is None else first.momentum
            if first.momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(first.num_batches_tracked)
            with torch.no_grad():
                unbiased = var.detach() * (count / max(count - 1, 1))
                batch_mean = (sign * mean.detach()).chunk(len(norms))
                for n, m, v in zip(norms, batch_mean, unbiased.chunk(len(norms)), strict=True):
                    n.running_mean.mul_(1 - momentum).add_(m.to(n.running_mean.dtype), alpha=momentum)
                    n.running_var.mul_(1 - momentum).add_(v.to(n.running_var.dtype), alpha=momentum)
        return mean, var
