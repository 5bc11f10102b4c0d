"""Shapes, gradients, phase batching, ROI masking and a short overfit of the multi-task network."""

from __future__ import annotations

import pytest
import torch

from hcc_exp.config import PHASES, ExperimentConfig, ModelConfig
from hcc_exp.errors import ConfigError
from hcc_exp.models import MultiTaskOutput, build_model
from hcc_exp.models.backbone import PhaseSharedBackbone, region_average
from hcc_exp.models.roi_stem import ROI_BRANCHES
from hcc_exp.training.losses import cox_nll, mvi_cross_entropy

SIZE = 24


def make_config(
    roi: str = "full", phases: tuple[str, ...] = PHASES, dims: str = "3d", pooling: str = "regions"
) -> ExperimentConfig:
    return ExperimentConfig(roi=roi, phases=phases, model=ModelConfig(preset="tiny", dims=dims, pooling=pooling))


def make_batch(
    batch: int, n_phases: int, size: int = SIZE, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random CT and nested masks: liver ball, tumour ball inside it, margin band around the tumour."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, n_phases, size, size, size, generator=g)
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    radius = torch.sqrt(zz**2 + yy**2 + xx**2)
    liver = radius <= size * 0.45
    tumour = radius <= size * 0.2
    margin = (radius > size * 0.2 - 1.5) & (radius <= size * 0.2 + 1.5) & liver
    masks = torch.stack([liver, margin, tumour]).to(torch.uint8)
    masks = masks.expand(batch, n_phases, 3, size, size, size).clone()
    return image, masks


def combined_loss(out: MultiTaskOutput, batch: int) -> torch.Tensor:
    event = torch.tensor([1, 0] * (batch // 2), dtype=torch.bool)
    time = torch.arange(1, batch + 1, dtype=torch.float32) * 30
    mvi = torch.tensor([0, 1] * (batch // 2))
    return (
        cox_nll(out.os_risk, event, time)
        + cox_nll(out.rfs_risk, event, time.flip(0))
        + mvi_cross_entropy(out.mvi_logits, mvi, None)
    )


@pytest.mark.parametrize("roi", sorted(ROI_BRANCHES))
def test_output_shapes_for_every_roi_strategy(roi: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_config(roi=roi))
    assert list(model.backbone.stem.branches) == list(ROI_BRANCHES[roi])
    image, masks = make_batch(2, 3)
    out = model(image, masks)
    assert isinstance(out, MultiTaskOutput)
    assert out.os_risk.shape == (2,) and out.rfs_risk.shape == (2,) and out.mvi_logits.shape == (2, 2)
    assert all(torch.isfinite(t).all() for t in out)


@pytest.mark.parametrize("phases", [("portal",), ("arterial", "delayed"), PHASES])
@pytest.mark.parametrize("dims", ["3d", "2d"])
def test_phase_subsets_and_2d(phases: tuple[str, ...], dims: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_config(phases=phases, dims=dims))
    image, masks = make_batch(2, len(phases))
    features = model.backbone_features(image, masks)
    assert features.shape == (2, len(phases) * model.backbone.out_features_per_phase)
    out = model(image, masks)
    assert out.os_risk.shape == (2,) and out.mvi_logits.shape == (2, 2)


def test_wrong_number_of_phases_is_refused() -> None:
    model = build_model(make_config(phases=("arterial", "portal")))
    image, masks = make_batch(2, 3)
    with pytest.raises(ConfigError, match="P=2"):
        model(image, masks)
    with pytest.raises(ConfigError, match="masks"):
        model(image[:, :2], None)


@pytest.mark.parametrize("dims", ["3d", "2d"])
@pytest.mark.parametrize("roi", ["full", "none"])
def test_every_parameter_gets_a_finite_gradient(dims: str, roi: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_config(roi=roi, dims=dims))
    image, masks = make_batch(4, 3)
    combined_loss(model(image, masks.float()), 4).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.backbone.stem.parameters())


@pytest.mark.parametrize("dims", ["3d", "2d"])
def test_phase_batched_backbone_equals_per_phase_loop(dims: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_config(dims=dims)).eval()
    # Move BatchNorm running statistics away from (0, 1) so the check is not trivial.
    model.train()
    with torch.no_grad():
        model(*make_batch(4, 3, seed=1))
    model.eval()
    image, masks = make_batch(3, 3, seed=2)
    with torch.no_grad():
        batched = model.backbone_features(image, masks)
        backbone = model.backbone
        per_phase = []
        for p in range(3):
            img_p, masks_p = image[:, p], masks[:, p]
            if dims == "2d":
                mid = SIZE // 2
                img_p, masks_p = img_p[:, mid], masks_p[:, :, mid]
            per_phase.append(backbone.encode(img_p, masks_p))
        looped = torch.cat(per_phase, dim=1)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("roi", "visible"), [("tumour", "tumour"), ("full", "liver"), ("liver", "liver")])
def test_roi_strategy_hides_ct_outside_its_regions(roi: str, visible: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_config(roi=roi)).eval()
    image, masks = make_batch(2, 3)
    region = masks[:, :, 0 if visible == "liver" else 2].bool()
    changed = torch.where(region, image, torch.rand_like(image))
    assert not torch.equal(changed, image)
    with torch.no_grad():
        torch.testing.assert_close(model(changed, masks), model(image, masks), atol=0, rtol=0)
        # ... whereas the raw-crop model sees the change.
        raw = build_model(make_config(roi="none")).eval()
        assert not torch.allclose(raw(changed, masks).os_risk, raw(image, masks).os_risk)


def test_2d_model_sees_only_the_central_slice() -> None:
    torch.manual_seed(0)
    model = build_model(make_config(dims="2d")).eval()
    image, masks = make_batch(2, 3)
    changed = torch.rand_like(image)
    changed[:, :, SIZE // 2] = image[:, :, SIZE // 2]
    with torch.no_grad():
        torch.testing.assert_close(model(changed, masks), model(image, masks), atol=0, rtol=0)


def test_target_layer_name_points_at_the_last_dense_block() -> None:
    model = build_model(make_config())
    layer = model.get_submodule(model.target_layer_name)
    assert type(layer).__name__ == "_DenseBlock"
    activations = {}
    layer.register_forward_hook(lambda _m, _i, out: activations.setdefault("a", out))
    model.eval()(*make_batch(2, 3))
    assert activations["a"].shape[0] == 2 * 3  # B * P, patient-major


def test_tiny_model_overfits_eight_patients() -> None:
    torch.manual_seed(0)
    model = build_model(make_config())
    image, masks = make_batch(8, 3, size=16, seed=3)
    # Planted signal: tumour brightness drives risk and MVI.
    signal = torch.linspace(0, 1, 8)
    tumour = masks[:, :, 2].bool()
    image = torch.where(tumour, signal.view(8, 1, 1, 1, 1).expand_as(image), image)
    os_time = (1 - signal) * 1000 + 10
    event = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    mvi = (signal > 0.5).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_now() -> torch.Tensor:
        out = model(image, masks)
        return (
            cox_nll(out.os_risk, event, os_time)
            + cox_nll(out.rfs_risk, event, os_time)
            + mvi_cross_entropy(out.mvi_logits, mvi, None)
        )

    losses = []
    for _ in range(20):
        loss = loss_now()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # Mean of the last three steps against the first three (dropout makes single steps noisy).
    assert sum(losses[-3:]) < 0.35 * sum(losses[:3]), losses


# --------------------------------------------------------------------------- region pooling
def test_region_average_equals_masked_mean_on_the_feature_grid() -> None:
    g = torch.Generator().manual_seed(3)
    feature_map = torch.randn(2, 5, 3, 3, 3, generator=g)
    # Regions on a 12^3 input grid: cell (i, j, k) of the 3^3 map covers a 4^3 block.
    regions = torch.zeros(2, 2, 12, 12, 12)
    regions[:, 0, :4, :4, :4] = 1.0  # exactly cell (0, 0, 0)
    regions[:, 1, 4:8, :, :] = 1.0  # the whole middle slab, cells (1, *, *)
    regions[1, 1, 4:8, :, :2] = 0.0  # half of cells (1, *, 0) on sample 1
    pooled = region_average(feature_map, regions)
    assert pooled.shape == (2, 2 * 5)
    torch.testing.assert_close(pooled[:, :5], feature_map[:, :, 0, 0, 0])
    torch.testing.assert_close(pooled[0, 5:], feature_map[0, :, 1].mean(dim=(1, 2)), atol=1e-5, rtol=1e-5)
    weights = torch.ones(3, 3)
    weights[:, 0] = 0.5
    expected = (feature_map[1, :, 1] * weights).sum(dim=(1, 2)) / weights.sum()
    torch.testing.assert_close(pooled[1, 5:], expected, atol=1e-5, rtol=1e-5)


def test_region_average_of_an_empty_region_is_zero() -> None:
    pooled = region_average(torch.randn(1, 4, 2, 2, 2), torch.zeros(1, 1, 8, 8, 8))
    assert torch.equal(pooled, torch.zeros(1, 4))


@pytest.mark.parametrize("roi", sorted(ROI_BRANCHES))
def test_region_pooling_has_one_average_per_roi_region(roi: str) -> None:
    torch.manual_seed(0)
    model = build_model(make_config(roi=roi, pooling="regions")).eval()
    channels = model.backbone.encoder.out_features
    assert model.backbone.out_features_per_phase == channels * len(ROI_BRANCHES[roi])
    image, masks = make_batch(2, 3)
    out = model(image, masks)
    assert all(torch.isfinite(t).all() for t in out)
    if roi == "none":
        # One region, the whole crop: the paper's global average.
        torch.manual_seed(0)
        reference = build_model(make_config(roi=roi, pooling="global")).eval()
        reference.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(image, masks).os_risk, reference(image, masks).os_risk)


def test_region_pooling_reads_the_tumour_without_the_volume_dilution() -> None:
    # A feature present only inside the tumour: the global average scales with the tumour's
    # share of the crop, the tumour-region average does not.
    feature_map = torch.zeros(2, 1, 4, 4, 4)
    tumour = torch.zeros(2, 1, 4, 4, 4)
    tumour[0, :, :1, :1, :1] = 1.0  # 1 cell
    tumour[1, :, :2, :2, :2] = 1.0  # 8 cells
    feature_map[tumour.bool()] = 2.0
    global_avg = feature_map.mean(dim=(2, 3, 4)).squeeze(1)
    assert global_avg[1] == 8 * global_avg[0]
    torch.testing.assert_close(region_average(feature_map, tumour), torch.tensor([[2.0], [2.0]]))


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ConfigError, match="pooling"):
        PhaseSharedBackbone(3, "full", "3d", 8, 16, 8, (2,), 2, 0.0, pooling="max")  # type: ignore[arg-type]
