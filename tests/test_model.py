"""GS3 model: gradients reach every encoder, transformer and head parameter, for all three paper setups."""

from __future__ import annotations

import pytest
import torch

from gs3.config import load_config
from gs3.data.collate import collate
from gs3.model import GS3
from gs3.train.data import build_dataset

TINY = [
    "data.source=synthetic",
    "data.width=24",
    "data.height=16",
    "data.frame_interval=2",
    "data.synthetic_scenes=1",
    "data.synthetic_frames=6",
    "model.sh_degree=1",
    "model.num_depth_bins=8",
    "model.head_kwargs={max_scale: 3.0}",
    "model.epipolar={num_layers: 1, num_heads: 2, num_samples: 4, downscale: 2}",
    "loss.lpips_weight=0",
]
ENCODERS = {
    "spunet": (
        "gs3_rgbd_spunet",
        [
            "model.encoder={type: SpUNet-v1m1, base_channels: 8, channels: [8, 16, 16, 8],"
            " layers: [1, 1, 1, 1], voxel_size: 0.1, out_channels: 16}"
        ],
    ),
    "pointnet2": (
        "gs3_rgbd_pointnet2",
        [
            "model.encoder={type: PointNet2SASSG, out_channels: 16, num_points: [64, 32],"
            " radius: [0.3, 0.6], num_samples: [8, 8], sa_channels: [[16, 16], [16, 16]],"
            " fp_channels: [[16]], point_fp_channels: [[16]]}"
        ],
    ),
    "resnet50": (
        "gs3_rgb_resnet50",
        ["model.encoder={type: ResNet50, out_channels: 16, full_resolution_channels: 8}"],
    ),
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("synthetic")
    return str(root)


def tiny_config(name: str, cache_dir: str, extra: list[str] = ()):
    config_name, encoder = ENCODERS[name]
    return load_config(config_name, [*TINY, *encoder, f"data.cache_dir={cache_dir}", *extra])


def tiny_batch(config) -> dict:
    from gs3.train.data import prepare_synthetic

    prepare_synthetic(config)
    dataset = build_dataset(config)
    return collate([dataset[0], dataset[len(dataset) - 1]])


def assert_gradients_everywhere(model: GS3, batch: dict) -> None:
    torch.manual_seed(0)
    output = model(batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    parts = {"encoder": model.encoder, "epipolar": model.epipolar, "head": model.head}
    for part_name, part in parts.items():
        for name, parameter in part.named_parameters():
            assert parameter.grad is not None, f"{part_name}.{name}: no gradient"
            assert torch.isfinite(parameter.grad).all(), f"{part_name}.{name}: non-finite gradient"
            assert parameter.grad.abs().sum() > 0, f"{part_name}.{name}: zero gradient"
    if model.modality == "points":
        assert model.empty_feature.grad is not None and model.empty_feature.grad.abs().sum() > 0


def test_spunet_point_offset_gradients_and_outputs(scenes):
    config = tiny_config("spunet", scenes)
    batch = tiny_batch(config)
    model = GS3(config)
    assert_gradients_everywhere(model, batch)
    output = model(batch)
    b, v, h, w, _ = batch["image"].shape
    assert output.color.shape == (b, v, h, w, 3)
    assert output.alpha.shape == output.depth.shape == (b, v, h, w)
    # one Gaussian (k=1) per visible point of each sample, nothing for hidden points
    visible = batch["point_visible"]
    ends = batch["offset"].tolist()
    starts = [0, *ends[:-1]]
    for gaussians, start, end in zip(output.gaussians, starts, ends):
        assert len(gaussians) == int(visible[start:end].sum())
    # the loss is the MSE of the full real images against the renders
    expected = (output.color - batch["image"]).square().mean()
    torch.testing.assert_close(output.loss, expected)
    assert set(output.metrics) >= {"psnr", "depth_abs_rel", "depth_delta1"}


@pytest.mark.slow
def test_hidden_points_do_not_reach_the_encoder(scenes):
    """Changing the colour of hidden points must not change the prediction (the mask is real)."""
    config = tiny_config("spunet", scenes)
    batch = tiny_batch(config)
    model = GS3(config).eval()
    with torch.no_grad():
        before = model.predict(batch)
        altered = dict(batch)
        altered["color"] = torch.where(batch["point_visible"][:, None], batch["color"], 1 - batch["color"])
        after = model.predict(altered)
    for a, b in zip(before, after):
        torch.testing.assert_close(a.means, b.means)
        torch.testing.assert_close(a.sh, b.sh)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pointnet2", "resnet50"])
def test_gradients_reach_every_parameter(scenes, name):
    config = tiny_config(name, scenes)
    assert_gradients_everywhere(GS3(config), tiny_batch(config))


@pytest.mark.slow
def test_resnet_hidden_pixels_do_not_matter(scenes):
    config = tiny_config("resnet50", scenes)
    batch = tiny_batch(config)
    model = GS3(config).eval()
    with torch.no_grad():
        before = model.predict(batch)
        altered = dict(batch)
        altered["image"] = torch.where(batch["pixel_visible"][..., None], batch["image"], 1 - batch["image"])
        after = model.predict(altered)
    for a, b in zip(before, after):
        torch.testing.assert_close(a.means, b.means)
