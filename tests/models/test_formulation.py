"""The fast formulation computes the network of commit fd7cd16: same outputs, gradients and BatchNorm statistics.

The reference formulation (``model.formulation: reference``) runs the operators of commit
fd7cd16 (per-branch convolutions and ``cat``, max pooling in the default layout, float mask
arithmetic, adaptive pooling and ``einsum``); the fast one must give the same function of
the same parameters, in train mode (batch statistics, running-stat updates, dropout) and in
eval mode. Under bf16 autocast the heads still return float32.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hcc_exp.config import PHASES, ExperimentConfig, ModelConfig
from hcc_exp.errors import ConfigError
from hcc_exp.models import build_model
from hcc_exp.models.backbone import cell_shares, region_average, region_average_reference
from hcc_exp.models.roi_stem import (
    ROI_BRANCHES,
    RoiEnhancementStem,
    masked_regions,
    region_masks,
    region_masks_reference,
)
from tests.models.test_multitask import combined_loss, make_batch

SIZE = 24


def pair(
    roi: str = "full", dims: str = "3d", pooling: str = "regions", dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fast, reference) networks with identical parameters and buffers."""
    torch.manual_seed(3)
    fast = build_model(ExperimentConfig(roi=roi, model=ModelConfig(preset="tiny", dims=dims, pooling=pooling)))
    reference = build_model(
        ExperimentConfig(roi=roi, model=ModelConfig(preset="tiny", dims=dims, pooling=pooling, formulation="reference"))
    )
    reference.load_state_dict(fast.state_dict())
    fast.to(dtype)
    reference.to(dtype)
    assert fast.backbone.formulation == "fast" and reference.backbone.formulation == "reference"
    return fast, reference


def step(model: torch.nn.Module, image: torch.Tensor, masks: torch.Tensor) -> tuple[tuple, dict, dict]:
    """One train-mode forward + backward with a fixed dropout seed: outputs, gradients, buffers."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    out = model(image, masks)
    combined_loss(out, image.shape[0]).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return tuple(t.detach() for t in out), grads, buffers


def assert_gradients_close(fast: dict, reference: dict, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert fast.keys() == reference.keys()
    # Tolerance relative to the largest gradient: parameters whose gradient cancels to ~1e-7
    # (BatchNorm biases in front of a max pool) differ by float rounding only.
    scale = max(float(g.abs().max()) for g in reference.values())
    for name, value in reference.items():
        torch.testing.assert_close(fast[name], value, rtol=rtol, atol=atol * scale, msg=name)


@pytest.mark.parametrize("roi", sorted(ROI_BRANCHES))
@pytest.mark.parametrize("pooling", ["regions", "global"])
def test_fast_equals_reference_in_train_mode(roi: str, pooling: str) -> None:
    """In float64 the two formulations agree to ~1e-12: the same function, not an approximation."""
    fast, reference = pair(roi=roi, pooling=pooling, dtype=torch.float64)
    image, masks = make_batch(4, len(PHASES), SIZE, seed=1)
    image = image.double()
    out_f, grads_f, buffers_f = step(fast, image, masks)
    out_r, grads_r, buffers_r = step(reference, image, masks)
    for a, b in zip(out_f, out_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert_gradients_close(grads_f, grads_r, rtol=1e-8, atol=1e-9)
    assert buffers_f.keys() == buffers_r.keys()
    for name, value in buffers_r.items():  # running statistics and num_batches_tracked of every BatchNorm
        torch.testing.assert_close(buffers_f[name], value, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pooling_before_the_stem_norm_holds_for_negative_and_zero_gammas(mode: str) -> None:
    """MaxPool commutes with BatchNorm + ELU only for increasing maps: gamma < 0 must still match.

    The fast stem pools before normalising, flipping the kernel of every channel whose BatchNorm
    gamma is negative; with mixed signs outputs, gradients and running statistics still equal
    the reference order ``BatchNorm -> ELU -> MaxPool``.
    """
    fast, reference = pair(dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for model in (fast, reference):
            for i, branch in enumerate(model.backbone.stem.branches.values()):
                gamma = torch.randn(branch.norm.weight.shape, generator=torch.Generator().manual_seed(i),
                                    dtype=torch.float64)
                branch.norm.weight.copy_(gamma)
                branch.norm.bias.copy_(torch.linspace(-0.5, 0.5, gamma.numel(), dtype=torch.float64))
    assert any(float(b.norm.weight.detach().min()) < 0 for b in fast.backbone.stem.branches.values())
    image, masks = make_batch(4, len(PHASES), SIZE, seed=int(torch.randint(100, (1,), generator=generator)))
    image = image.double()
    if mode == "eval":
        for model in (fast, reference):
            step(model, image, masks)  # running statistics away from their initial values
            model.eval()
        with torch.no_grad():
            for a, b in zip(fast(image, masks), reference(image, masks), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        return
    out_f, grads_f, buffers_f = step(fast, image, masks)
    out_r, grads_r, buffers_r = step(reference, image, masks)
    for a, b in zip(out_f, out_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert_gradients_close(grads_f, grads_r, rtol=1e-8, atol=1e-9)
    for name, value in buffers_r.items():
        torch.testing.assert_close(buffers_f[name], value, rtol=1e-9, atol=1e-10, msg=name)


def test_fast_equals_reference_in_float32_to_rounding() -> None:
    fast, reference = pair()
    image, masks = make_batch(4, len(PHASES), SIZE, seed=1)
    out_f, grads_f, _ = step(fast, image, masks)
    out_r, grads_r, _ = step(reference, image, masks)
    for a, b in zip(out_f, out_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert_gradients_close(grads_f, grads_r, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dims", ["3d", "2d"])
def test_fast_equals_reference_in_eval_mode(dims: str) -> None:
    fast, reference = pair(dims=dims, dtype=torch.float64)
    image, masks = make_batch(4, len(PHASES), SIZE, seed=2)
    image = image.double()
    # a few train steps first, so that the running statistics are not the initial ones
    for _ in range(2):
        step(fast, image, masks)
        step(reference, image, masks)
    fast.eval()
    reference.eval()
    with torch.no_grad():
        for a, b in zip(fast(image, masks), reference(image, masks), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_2d_gradients_match() -> None:
    fast, reference = pair(dims="2d", dtype=torch.float64)
    image, masks = make_batch(4, len(PHASES), SIZE, seed=4)
    out_f, grads_f, _ = step(fast, image.double(), masks)
    out_r, grads_r, _ = step(reference, image.double(), masks)
    torch.testing.assert_close(out_f[0], out_r[0], rtol=1e-9, atol=1e-10)
    assert_gradients_close(grads_f, grads_r, rtol=1e-8, atol=1e-9)


def test_checkpoints_are_interchangeable() -> None:
    fast, reference = pair()
    assert list(fast.state_dict()) == list(reference.state_dict())


def test_region_masks_equal_the_float_arithmetic() -> None:
    _, masks = make_batch(2, 1, 12)
    masks = masks[:, 0]
    masks[:, 1, :6] = 1  # margin overlapping the liver and the tumour
    like = torch.zeros(2, 1, 12, 12, 12)
    for roi in ROI_BRANCHES:
        fast = region_masks(masks, roi, like)
        assert torch.equal(fast, region_masks_reference(masks, roi, like)), roi
    assert region_masks(masks, "full", like).is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float32])
def test_masked_regions_equal_the_ct_times_the_float_region_masks(dtype: torch.dtype) -> None:
    _, masks = make_batch(2, 1, 12)
    masks = masks[:, 0].to(dtype)
    masks[:, 1, :6] = 1  # margin overlapping the liver and the tumour
    image = torch.rand(2, 1, 12, 12, 12)
    for roi in set(ROI_BRANCHES) - {"none"}:
        masked, regions = masked_regions(image, masks, roi)
        reference = region_masks_reference(masks.float(), roi, image)
        assert torch.equal(masked, image * reference), roi
        assert torch.equal(regions.float(), reference), roi
        assert not regions.is_floating_point()
        assert masked.is_contiguous(memory_format=torch.channels_last_3d)
        # integer regions are counted exactly: the shares equal the float masks' block means
        torch.testing.assert_close(cell_shares(regions, (3, 3, 3)), cell_shares(reference, (3, 3, 3)))


@pytest.mark.parametrize("shape", [(8, 8, 8), (9, 7, 12)])
def test_cell_shares_equal_adaptive_average_pooling(shape: tuple[int, int, int]) -> None:
    regions = (torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.testing.assert_close(cell_shares(regions, (2, 2, 2)), F.adaptive_avg_pool3d(regions, (2, 2, 2)))
    torch.testing.assert_close(cell_shares(regions[:, :, 0], (4, 2)), F.adaptive_avg_pool2d(regions[:, :, 0], (4, 2)))


def test_region_average_equals_reference() -> None:
    g = torch.Generator().manual_seed(0)
    feature_map = torch.randn(2, 5, 3, 3, 3, generator=g)
    regions = (torch.rand(2, 3, 12, 12, 12, generator=g) > 0.6).float()
    regions[1, 2] = 0  # an absent region pools to zero in both
    torch.testing.assert_close(region_average(feature_map, regions), region_average_reference(feature_map, regions))


def test_channels_last_max_pool_keeps_the_first_argmax_on_ties() -> None:
    # The stem's maps are constant wherever a branch's mask is empty: many exact ties.
    x = torch.zeros(2, 3, 8, 8, 8)
    x[:, :, :3] = torch.randn(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        y = x.clone().contiguous(memory_format=layout).requires_grad_()
        F.max_pool3d(y, 3, 2, 1).backward(grad.contiguous(memory_format=layout))
        grads.append(y.grad)
    assert torch.equal(grads[0], grads[1])


def test_unknown_formulation_is_refused() -> None:
    with pytest.raises(ConfigError, match="formulation"):
        RoiEnhancementStem("full", 4, 8, formulation="quick")  # type: ignore[arg-type]


def test_bf16_autocast_keeps_heads_in_float32_and_close_to_float32() -> None:
    fast, _ = pair()
    fast.eval()
    image, masks = make_batch(2, len(PHASES), SIZE, seed=5)
    with torch.no_grad():
        exact = fast(image, masks)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = fast(image, masks)
    assert all(t.dtype == torch.float32 for t in mixed)
    # bf16 keeps 8 bits of mantissa through ~20 layers: close, not equal.
    for a, b in zip(mixed, exact, strict=True):
        torch.testing.assert_close(a, b, rtol=0.1, atol=0.1)
    assert not torch.equal(mixed.os_risk, exact.os_risk)


def test_fast_model_trains_in_reference_copy() -> None:
    """A fast model's weights after a few optimiser steps equal the reference's after the same steps."""
    fast, reference = pair(dtype=torch.float64)
    image, masks = make_batch(4, len(PHASES), SIZE, seed=6)
    image = image.double()
    models = {"fast": fast, "reference": reference}
    optimisers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    for _ in range(3):
        for key, model in models.items():
            step(model, image, masks)
            optimisers[key].step()
    ref_state = copy.deepcopy(reference.state_dict())
    for name, value in fast.state_dict().items():
        torch.testing.assert_close(value, ref_state[name], rtol=1e-7, atol=1e-8, msg=name)
