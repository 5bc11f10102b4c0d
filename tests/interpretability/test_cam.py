"""3D Grad-CAM on a tiny randomly initialised network, region table and overlay PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.image import imread

from hcc_exp.config import ExperimentConfig
from hcc_exp.errors import ConfigError
from hcc_exp.interpretability.gradcam import HEADS, grad_cams
from hcc_exp.interpretability.overlay import plot_cam_overlay
from hcc_exp.interpretability.regions import ANALYSIS_REGIONS, cam_region_table
from hcc_exp.models import build_model
from tests.factories import sphere

SIZE = 32  # 32^3 -> 2^3 feature maps at the last dense block of the tiny preset


@pytest.fixture(scope="module")
def tiny_network():
    torch.manual_seed(0)
    return build_model(ExperimentConfig(model={"preset": "tiny"})).eval()


@pytest.fixture(scope="module")
def batch():
    """(image (2, 3, S, S, S), masks (2, 3, 3, S, S, S)) with a spherical liver and tumour."""
    g = torch.Generator().manual_seed(1)
    shape = (SIZE,) * 3
    centre = (SIZE / 2,) * 3
    liver = torch.from_numpy(sphere(shape, centre, 13.0, (1, 1, 1)))
    tumour = torch.from_numpy(sphere(shape, (12, 14, 16), 5.0, (1, 1, 1)))
    margin = torch.from_numpy(sphere(shape, (12, 14, 16), 7.0, (1, 1, 1))) * (1 - torch.from_numpy(sphere(shape, (12, 14, 16), 3.0, (1, 1, 1))))
    masks = torch.stack([liver, margin, tumour]).float()
    masks = masks[None, None].expand(2, 3, 3, *shape).contiguous()
    image = 0.3 * torch.rand(2, 3, *shape, generator=g) + 0.4 * masks[:, :, 0] + 0.2 * masks[:, :, 2]
    return image, masks


def _manual_grad_cam(network, image, masks, column):
    """Grad-CAM by hand with forward/backward hooks on the target layer, per (patient, phase) sample."""
    layer = dict(network.named_modules())[network.target_layer_name]
    store = {}
    h1 = layer.register_forward_hook(lambda m, i, o: store.__setitem__("acti", o))
    h2 = layer.register_full_backward_hook(lambda m, gi, go: store.__setitem__("grad", go[0]))
    try:
        with torch.enable_grad():
            out = network(image, masks)
            scores = torch.cat([out.os_risk[:, None], out.rfs_risk[:, None], out.mvi_logits], dim=1)
            network.zero_grad()
            scores[:, column].sum().backward()
    finally:
        h1.remove()
        h2.remove()
    acti, grad = store["acti"].detach(), store["grad"].detach()
    weights = grad.mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((weights * acti).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[2:], mode="trilinear", align_corners=False)
    return cam.reshape(image.shape)


def test_grad_cam_gives_finite_raw_maps_per_head_and_phase(tiny_network, batch):
    image, masks = batch
    maps = grad_cams(tiny_network, image, masks)
    assert set(maps) == set(HEADS)
    for head, m in maps.items():
        assert m.shape == image.shape, head
        assert torch.isfinite(m).all(), head
        assert (m >= 0).all(), head
        assert m.max() > 0, head
        # Each (patient, phase) map has its own weights: the phases do not share one map.
        assert not torch.allclose(m[0, 0], m[0, 1]), head
    # No hook is left on the caller's network.
    layer = dict(tiny_network.named_modules())[tiny_network.target_layer_name]
    assert not layer._forward_hooks and not layer._backward_hooks


def test_grad_cam_matches_a_hand_computed_grad_cam_for_every_phase(tiny_network, batch):
    image, masks = batch
    maps = grad_cams(tiny_network, image, masks)
    for head, column in (("os", 0), ("mvi", 3)):
        expected = _manual_grad_cam(tiny_network, image, masks, column)
        torch.testing.assert_close(maps[head], expected, rtol=1e-4, atol=1e-7)


def test_maps_are_raw_not_rescaled(tiny_network, batch):
    image, masks = batch
    scaled_net = build_model(ExperimentConfig(model={"preset": "tiny"}))
    scaled_net.load_state_dict(tiny_network.state_dict())
    scaled_net.eval()
    with torch.no_grad():
        scaled_net.os_head.weight.mul_(3.0)
        scaled_net.os_head.bias.mul_(3.0)
    base = grad_cams(tiny_network, image, masks, heads=("os",))["os"]
    scaled = grad_cams(scaled_net, image, masks, heads=("os",))["os"]
    # A 3x steeper OS head triples the raw map (MONAI's default normaliser would hide it) ...
    torch.testing.assert_close(scaled, 3.0 * base, rtol=1e-4, atol=1e-7)
    assert base.amax() < 0.99 or base.amax() > 1.01  # not min-max scaled to [0, 1]
    # ... and leaves the region shares unchanged.
    spacing = (1.0, 1.0, 1.0)
    t_base = cam_region_table({"os": base[0].numpy()}, masks[0].numpy(), ("arterial", "portal", "delayed"), spacing)
    t_scaled = cam_region_table({"os": scaled[0].numpy()}, masks[0].numpy(), ("arterial", "portal", "delayed"), spacing)
    np.testing.assert_allclose(t_base["energy_share"], t_scaled["energy_share"], rtol=1e-5)
    np.testing.assert_allclose(t_base["hit_rate"], t_scaled["hit_rate"], rtol=1e-5)


def test_region_table_has_every_head_phase_and_region(tiny_network, batch):
    image, masks = batch
    maps = {h: m[0].numpy() for h, m in grad_cams(tiny_network, image[:1], masks[:1]).items()}
    table = cam_region_table(maps, masks[0].numpy(), ("arterial", "portal", "delayed"), (2.0, 2.0, 2.0))
    assert len(table) == len(HEADS) * 3 * len(ANALYSIS_REGIONS)
    partition = table[table["region"].isin(["tumour", "margin_1cm", "rest_of_liver", "outside_liver"])]
    np.testing.assert_allclose(partition.groupby(["head", "phase"])["volume_share"].sum(), 1.0, rtol=1e-9)
    # A random network's Grad-CAM can be all zero for some head and phase (ReLU of negative
    # evidence): its shares are undefined, every other map's partition adds up to 1.
    defined = partition.dropna(subset=["energy_share"])
    assert len(defined) >= len(partition) / 2
    sums = defined.groupby(["head", "phase"])[["energy_share", "hit_rate"]].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-9)


def test_two_dimensional_models_are_refused(batch):
    image, masks = batch
    net2d = build_model(ExperimentConfig(model={"preset": "tiny", "dims": "2d"})).eval()
    with pytest.raises(ConfigError, match="3D"):
        grad_cams(net2d, image, masks)


def test_overlay_png_is_written(tiny_network, batch, tmp_path):
    image, masks = batch
    maps = grad_cams(tiny_network, image[:1], masks[:1], heads=("mvi",))["mvi"][0].numpy()
    path = plot_cam_overlay(
        image[0].numpy(), maps, masks[0].numpy(), ("arterial", "portal", "delayed"), (2.0, 2.0, 2.0),
        tmp_path / "P000" / "mvi.png", title="Patient P000: MVI",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[0] > 600 and pixels.shape[1] > 600
    # Not a blank canvas: the CT, the colour map and the contours put many colours on it.
    codes = np.ascontiguousarray((pixels[..., :3] * 255).round().astype(np.uint32))
    colours = codes[..., 0] << 16 | codes[..., 1] << 8 | codes[..., 2]
    assert len(np.unique(colours)) > 500
