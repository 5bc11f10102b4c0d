"""DenseNet backbone shared by the CT phases (paper: Figure 1, "shared parameters").

:class:`PhaseSharedBackbone` = :class:`~hcc_exp.models.roi_stem.RoiEnhancementStem` (which is
the DenseNet stem: region convolutions, BatchNorm, ELU, MaxPool, 1x1 fusion) followed by
:class:`DenseNetEncoder` (MONAI's ``_DenseBlock`` / ``_Transition`` with BatchNorm and ELU,
dropout after every dense layer, final ``norm + ELU``) and a pooling step:

* ``global`` (the paper's DenseNet): average over the whole feature map;
* ``regions``: one average per ROI branch region (background liver, margin, tumour for
  ``roi="full"``), each weighted by the share of that region in every feature-map cell.
  Over a 96 mm crop a 16 mm tumour is about 2 % of the map, so a global average scales an
  intratumoural texture feature by the tumour's volume and buries it under size; a region
  average reads it directly. ``roi="none"`` has one region, the crop: the global average.

All phases of a batch run through stem and encoder as ONE batch of ``B * P`` volumes (no
Python loop over phases); the pooled features are concatenated per patient in phase order,
giving ``(B, P * F)``. The 2D variant takes the ``n_slices`` central axial slices of the crop
(the crop is centred on the tumour centroid), runs a 2D stem and 2D DenseNet on each slice
(``B * P * n_slices`` images in one batch) and averages the slice features of each phase.

In training mode BatchNorm statistics are pooled over all phases of the batch; in eval mode
the batched forward equals a per-phase loop (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.densenet import _DenseBlock, _Transition
from torch import Tensor, nn

from hcc_exp.config import PoolingStrategy, RoiStrategy
from hcc_exp.data.cache import REGIONS
from hcc_exp.errors import ConfigError
from hcc_exp.models.roi_stem import (
    ACT,
    NORM,
    ROI_BRANCHES,
    Formulation,
    RoiEnhancementStem,
    masked_regions,
    region_masks,
    region_masks_reference,
)

REGION_WEIGHT_EPS = 1e-6
"""Added to a region's total weight: an empty region pools to zero instead of NaN."""


def cell_shares(regions: Tensor, spatial: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """Share of each region in every cell of a coarse grid: ``adaptive_avg_pool`` to ``spatial``.

    Args:
        regions: ``(N, K, *S)`` region masks: floats in [0, 1], or binary uint8 / bool (read
            as they are: no float copy of the full-resolution masks).
        spatial: the coarse grid ``s`` (2 or 3 sides).
        dtype: the result's dtype for integer or bool masks (float masks keep theirs).

    Returns:
        ``(N, K, *s)``. When every side of ``S`` is a multiple of the side of ``s`` (the
        default 48^3 crop on a 3^3 map), the cells are disjoint blocks and the shares are block
        means of a reshaped view (no pooling kernel; integer masks are counted exactly);
        otherwise ``adaptive_avg_pool``.

    >>> cell_shares(torch.arange(16.0).reshape(1, 1, 4, 4), (2, 2)).flatten().tolist()
    [2.5, 4.5, 10.5, 12.5]
    >>> cell_shares(torch.tensor([[[[1, 1, 0, 1]]]], dtype=torch.uint8), (1, 2)).flatten().tolist()
    [1.0, 0.5]
    """
    big = regions.shape[2:]
    if all(n % m == 0 for n, m in zip(big, spatial, strict=True)):
        blocks = [d for n, m in zip(big, spatial, strict=True) for d in (m, n // m)]
        view = regions.reshape(*regions.shape[:2], *blocks)  # a view, also of a channels-last tensor
        block_axes = tuple(range(3, 3 + 2 * len(spatial), 2))
        if regions.is_floating_point():
            return view.mean(dim=block_axes)
        cells = math.prod(n // m for n, m in zip(big, spatial, strict=True))
        return view.sum(dim=block_axes, dtype=dtype) / cells
    pool = F.adaptive_avg_pool3d if len(spatial) == 3 else F.adaptive_avg_pool2d
    return pool(regions if regions.is_floating_point() else regions.to(dtype), tuple(spatial))


def region_average(feature_map: Tensor, regions: Tensor) -> Tensor:
    """Average a feature map over each of several soft regions.

    Args:
        feature_map: ``(N, C, *s)`` features on a coarse grid.
        regions: ``(N, K, *S)`` region masks in [0, 1] on the input grid (``S`` a multiple of
            ``s`` or larger); each is reduced to the share of the region in every cell of
            ``s`` (:func:`cell_shares`).

    Returns:
        ``(N, K * C)``: region-major, ``[region 0 channels..., region 1 channels..., ...]``.
        A region absent from a sample gives zeros. The weighted sums are one batched matrix
        product ``(N, K, cells) @ (N, cells, C)``.

    >>> fmap = torch.tensor([1.0, 3.0]).reshape(1, 1, 2, 1)  # two cells with values 1 and 3
    >>> region_average(fmap, torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 4, 1)).tolist()  # doctest: +ELLIPSIS
    [[0.99999...]]
    """
    return weighted_average(feature_map, region_weights(regions, feature_map))


def weighted_average(feature_map: Tensor, weights: Tensor) -> Tensor:
    """``(N, C, *s)`` features averaged with ``(N, K, cells)`` cell weights -> ``(N, K * C)`` (:func:`region_average`)."""
    sums = torch.bmm(weights, feature_map.flatten(2).transpose(1, 2))  # (N, K, C)
    return (sums / (weights.sum(-1, keepdim=True) + REGION_WEIGHT_EPS)).flatten(1)


def region_weights(regions: Tensor, feature_map: Tensor) -> Tensor:
    """``(N, K, cells)`` shares of each region in the cells of ``feature_map``, in its dtype (:func:`cell_shares`)."""
    masks = regions.to(feature_map.dtype) if regions.is_floating_point() else regions
    return cell_shares(masks, feature_map.shape[2:], dtype=feature_map.dtype).flatten(2)


def region_average_reference(feature_map: Tensor, regions: Tensor) -> Tensor:
    """:func:`region_average` as written at commit fd7cd16 (adaptive pooling and einsum)."""
    spatial = feature_map.shape[2:]
    pool = F.adaptive_avg_pool3d if len(spatial) == 3 else F.adaptive_avg_pool2d
    weights = pool(regions.to(feature_map.dtype), spatial).flatten(2)  # (N, K, cells)
    features = feature_map.flatten(2)  # (N, C, cells)
    sums = torch.einsum("nkv,ncv->nkc", weights, features)
    return (sums / (weights.sum(-1, keepdim=True) + REGION_WEIGHT_EPS)).flatten(1)


class DenseNetEncoder(nn.Module):
    """DenseNet body after the stem: dense blocks and transitions, then norm, ELU and global pooling.

    Args:
        spatial_dims: 3 or 2.
        in_channels: input channels (the stem's ``init_features``).
        growth_rate: channels added by each dense layer.
        block_config: dense layers per block.
        bn_size: bottleneck width factor (``bn_size * growth_rate``).
        dropout: dropout after each dense layer.

    Shapes:
        ``forward(x (N, in_channels, *S)) -> (N, out_features)``; ``features`` maps
        ``(N, in_channels, *S)`` to ``(N, out_features, *S / 2**(len(block_config) - 1))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        growth_rate: int,
        block_config: Sequence[int],
        bn_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential()
        channels = in_channels
        for i, n_layers in enumerate(block_config):
            self.features.add_module(
                f"denseblock{i + 1}",
                _DenseBlock(
                    spatial_dims=spatial_dims,
                    layers=n_layers,
                    in_channels=channels,
                    bn_size=bn_size,
                    growth_rate=growth_rate,
                    dropout_prob=dropout,
                    act=ACT,
                    norm=NORM,
                ),
            )
            channels += n_layers * growth_rate
            if i < len(block_config) - 1:
                self.features.add_module(
                    f"transition{i + 1}",
                    _Transition(
                        spatial_dims, in_channels=channels, out_channels=channels // 2, act=ACT, norm=NORM
                    ),
                )
                channels //= 2
        self.features.add_module(
            "norm5", get_norm_layer(name=NORM, spatial_dims=spatial_dims, channels=channels)
        )
        self.features.add_module("act5", get_act_layer(name=ACT))
        self.pool = nn.Sequential(Pool[Pool.ADAPTIVEAVG, spatial_dims](1), nn.Flatten(1))
        self.out_features = channels
        self.last_block_name = f"features.denseblock{len(block_config)}"

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x))


class PhaseSharedBackbone(nn.Module):
    """ROI stem + DenseNet applied to every phase with shared weights.

    Args:
        n_phases: P, the number of phases in the input (``len(config.phases)``).
        roi: ROI strategy of the stem.
        dims: ``"3d"`` (volumes) or ``"2d"`` (central axial slices).
        stem_channels: channels of each ROI branch.
        init_features: channels of the fused stem output (DenseNet's first features).
        growth_rate, block_config, bn_size, dropout: DenseNet sizes (see :class:`DenseNetEncoder`).
        n_slices: 2D only: number of central axial slices per phase; their features are averaged.
        pooling: ``global`` average (the paper's DenseNet) or one average per ROI region
            (see :func:`region_average`); ``out_features_per_phase`` is the encoder's channels
            times the number of regions of ``roi``.
        formulation: ``fast`` (default) or ``reference`` (the operators of commit fd7cd16,
            same function; see :class:`~hcc_exp.models.roi_stem.RoiEnhancementStem`).

    Shapes:
        ``forward(image (B, P, D, H, W), masks (B, P, R, D, H, W)) -> (B, P * out_features_per_phase)``.
        Activations inside stem and encoder have batch ``B * P`` (3D) or ``B * P * n_slices``
        (2D), ordered patient-major then phase (then slice).
    """

    def __init__(
        self,
        n_phases: int,
        roi: RoiStrategy,
        dims: str,
        stem_channels: int,
        init_features: int,
        growth_rate: int,
        block_config: Sequence[int],
        bn_size: int,
        dropout: float,
        n_slices: int = 1,
        pooling: PoolingStrategy = "global",
        formulation: Formulation = "fast",
    ) -> None:
        super().__init__()
        if pooling not in ("global", "regions"):
            raise ConfigError(f"model.pooling must be 'global' or 'regions', got {pooling!r}")
        if dims not in ("3d", "2d"):
            raise ConfigError(f"model.dims must be '3d' or '2d', got {dims!r}")
        if n_slices < 1:
            raise ConfigError(f"n_slices must be >= 1, got {n_slices}")
        self.n_phases = n_phases
        self.dims = dims
        self.n_slices = n_slices
        self.pooling = pooling
        self.formulation = formulation
        spatial_dims = 3 if dims == "3d" else 2
        self.stem = RoiEnhancementStem(
            roi, stem_channels, init_features, spatial_dims=spatial_dims, formulation=formulation
        )
        self.encoder = DenseNetEncoder(
            spatial_dims, init_features, growth_rate, block_config, bn_size, dropout
        )
        n_pools = len(ROI_BRANCHES[roi]) if pooling == "regions" else 1
        self.out_features_per_phase = self.encoder.out_features * n_pools
        self.out_features = n_phases * self.out_features_per_phase

    def check_inputs(self, image: Tensor, masks: Tensor | None) -> None:
        """Raise :class:`ConfigError` when the input does not match the phases and regions the model was built for."""
        if image.ndim != 5 or image.shape[1] != self.n_phases:
            raise ConfigError(
                f"model expects image (B, P={self.n_phases}, D, H, W) for the configured phases, "
                f"got shape {tuple(image.shape)}"
            )
        if self.stem.strategy != "none":
            expected = (image.shape[0], self.n_phases, len(REGIONS), *image.shape[2:])
            if masks is None or tuple(masks.shape) != expected:
                got = None if masks is None else tuple(masks.shape)
                raise ConfigError(f"model expects masks of shape {expected} (regions {REGIONS}), got {got}")
        if self.dims == "2d" and image.shape[2] < self.n_slices:
            raise ConfigError(
                f"2D model takes {self.n_slices} central slices but the crop has depth {image.shape[2]}"
            )

    def central_slices(self, image: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The ``n_slices`` central axial slices.

        ``image (B, P, D, H, W) -> (B, P, k, H, W)``; ``masks (B, P, R, D, H, W) -> (B, P, k, R, H, W)``.
        """
        start = image.shape[2] // 2 - self.n_slices // 2
        image = image[:, :, start : start + self.n_slices]
        if masks is not None:
            masks = masks[:, :, :, start : start + self.n_slices].transpose(2, 3)
        return image, masks

    def prepare(self, image: Tensor, masks: Tensor | None) -> PreparedBatch:
        """Check the inputs and build what stem and pooling read (see :class:`PreparedBatch`).

        ``image (B, P, D, H, W)``, ``masks (B, P, R, D, H, W)`` (None for ``roi="none"``).
        """
        self.check_inputs(image, masks)
        b, p = image.shape[:2]
        if self.dims == "2d":
            image, masks = self.central_slices(image, masks)
        spatial = image.shape[-3:] if self.dims == "3d" else image.shape[-2:]
        flat_image = image.reshape(-1, *spatial)
        flat_masks = None if self.stem.strategy == "none" else masks.reshape(-1, len(REGIONS), *spatial)
        return self._prepare_volumes(flat_image, flat_masks, b, p)

    def _prepare_volumes(self, image: Tensor, masks: Tensor | None, b: int, p: int) -> PreparedBatch:
        """:class:`PreparedBatch` of independent volumes: ``image (N, *S)``, ``masks (N, R, *S)``."""
        image = image.unsqueeze(1)
        if self.formulation == "reference":
            return PreparedBatch(b, p, image, region_masks_reference(masks, self.stem.strategy, image))
        if self.stem.strategy == "none":
            # one branch on the raw crop: the masked CT is the CT (times ones), the region the whole crop
            return PreparedBatch(b, p, image, region_masks(None, "none", image), image)
        masked, regions = masked_regions(image, masks, self.stem.strategy)
        return PreparedBatch(b, p, image, regions, masked)

    def encode(self, image: Tensor, masks: Tensor | None) -> Tensor:
        """Features of independent single-phase samples.

        Args:
            image: ``(N, *S)`` CT of one phase (or one slice) each.
            masks: ``(N, R, *S)`` region masks (unused for ``roi="none"``).

        Returns:
            ``(N, out_features_per_phase)``.
        """
        return self._features(self._prepare_volumes(image, masks, image.shape[0], 1))

    def _features(self, prepared: PreparedBatch) -> Tensor:
        """``(N, out_features_per_phase)``: stem, encoder and pooling of every volume of ``prepared``."""
        if self.formulation == "reference":
            feature_map = self.encoder.features(self.stem(prepared.image, prepared.regions))
            if self.pooling == "global":
                return self.encoder.pool(feature_map)
            return region_average_reference(feature_map, prepared.regions)
        feature_map = self.encoder.features(self.stem.forward_masked(prepared.masked))
        if self.pooling == "global":
            return feature_map.flatten(2).mean(dim=-1)  # = adaptive average pooling to 1
        return weighted_average(feature_map, prepared.weights(feature_map))

    def forward_prepared(self, prepared: PreparedBatch) -> Tensor:
        """:meth:`forward` of a :meth:`prepare` d batch: ``(B, P * out_features_per_phase)``."""
        features = self._features(prepared)
        if self.dims == "2d":
            features = features.reshape(prepared.b * prepared.p, self.n_slices, -1).mean(dim=1)
        return features.reshape(prepared.b, prepared.p * self.out_features_per_phase)

    def forward(self, image: Tensor, masks: Tensor | None) -> Tensor:
        return self.forward_prepared(self.prepare(image, masks))


class PreparedBatch:
    """A batch made ready for the stem and the region pooling, once for every network that reads it.

    The momentum method runs the online and the target network on the same batch; the masked
    CT, the branch regions and their shares of the feature-map cells depend on the batch
    only, so :class:`~hcc_exp.training.momentum.MultiTaskMomentum` prepares it once.

    Attributes:
        b, p: patients and phases of the batch.
        image: ``(B * P [* n_slices], 1, *S)`` CT of independent single-phase volumes.
        regions: ``(N, n_branches, *S)`` branch regions (binary bytes for the fast
            formulation, floats for the reference one and for ``roi="none"``).
        masked: ``(N, n_branches, *S)`` CT times each region (fast formulation), else None.
    """

    def __init__(self, b: int, p: int, image: Tensor, regions: Tensor, masked: Tensor | None = None) -> None:
        self.b, self.p = b, p
        self.image = image
        self.regions = regions
        self.masked = masked
        self._weights: dict[tuple, Tensor] = {}

    def weights(self, feature_map: Tensor) -> Tensor:
        """``(N, K, cells)`` region shares of ``feature_map``'s cells (:func:`region_weights`), computed once per grid."""
        key = (tuple(feature_map.shape[2:]), feature_map.dtype, feature_map.device)
        if key not in self._weights:
            self._weights[key] = region_weights(self.regions, feature_map)
        return self._weights[key]
