"""GS3 model: gradients reach every encoder, transformer and head parameter, for all three paper setups."""

from __future__ import annotations

import pytest
import torch

from gs3.cameras import Cameras
from gs3.config import load_config
from gs3.data.collate import collate
from gs3.gaussians import Gaussians
from gs3.gaussians.heads import sample_index
from gs3.model import GS3
from gs3.render import rasterize
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


# --- source views and the cross-view term (loss.cross_view_weight) ---------------------------------------


def landing_pixels(model: GS3, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per sample: (view, flat pixel) where each Gaussian's mean lands in the view `source_views` names."""
    h, w = batch["image"].shape[2:4]
    with torch.no_grad():
        gaussians = model.eval().predict(batch)
    cameras = Cameras(batch["K"], batch["cam_to_world"], w, h)
    views = model.source_views(batch)
    flats = []
    for index, (sample_gaussians, view) in enumerate(zip(gaussians, views)):
        assert len(view) == len(sample_gaussians)
        pixels, z = cameras[index, view].world_to_pixels(sample_gaussians.means[:, None])
        assert (z > 0).all()
        column, row = pixels[:, 0].floor().long().unbind(-1)
        flats.append(row * w + column)
    return views, flats


@pytest.mark.parametrize("name", ["spunet", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_depth_bin_gaussians_sit_on_the_rays_of_their_source_view(scenes, name):
    """Each depth-bin Gaussian lies on the ray of a visible pixel of the view `source_views` names."""
    config = tiny_config(name, scenes, ["model.head=depth_bin", "model.gaussians_per_pixel=2"])
    batch = tiny_batch(config)
    model = GS3(config)
    visible = model.visible_pixels(batch)
    views, flats = landing_pixels(model, batch)
    for index, (view, flat) in enumerate(zip(views, flats)):
        expected = visible[index].flatten(1).nonzero()  # (view, pixel), views in order, row-major
        torch.testing.assert_close(torch.stack([view, flat], -1), expected.repeat_interleave(2, dim=0))


def test_point_offset_gaussians_land_on_the_pixel_of_their_point(scenes):
    config = tiny_config("spunet", scenes, ["model.head_kwargs={max_scale: 3.0, max_offset: 1.0e-5}"])
    batch = tiny_batch(config)
    views, flats = landing_pixels(GS3(config), batch)
    sample = sample_index(batch["offset"], batch["coord"].shape[0])
    for index, (view, flat) in enumerate(zip(views, flats)):
        points = batch["point_visible"] & (sample == index)
        torch.testing.assert_close(view, batch["point_view"][points])
        torch.testing.assert_close(flat, batch["point_pixel"][points])


def test_cross_view_mse_renders_each_view_from_the_others_only(scenes):
    """Against renders of hand-split Gaussians: view 0 sees only view 1's, view 1 only view 0's."""
    config = tiny_config("spunet", scenes)
    model = GS3(config)
    batch = tiny_batch(config)
    b, v, h, w, _ = batch["image"].shape
    generator = torch.Generator().manual_seed(0)
    cameras = Cameras(batch["K"][0], batch["cam_to_world"][0], w, h)

    def blob(view: int, count: int) -> Gaussians:
        """Gaussians 1–3 m in front of camera `view`, inside its image."""
        pixels = torch.rand(count, 2, generator=generator) * torch.tensor([w, h])
        depth = 1 + 2 * torch.rand(count, generator=generator)
        means = cameras[view].pixels_to_world(pixels, depth)
        return Gaussians(
            means,
            torch.full((count, 3), 0.1),
            torch.tensor([1.0, 0, 0, 0]).expand(count, 4),
            0.2 + 0.7 * torch.rand(count, generator=generator),
            torch.rand(count, 1, 3, generator=generator),
        )

    from_view = [blob(0, 30), blob(1, 20)]
    gaussians = [Gaussians.cat(from_view)] * b
    source = [torch.cat([torch.zeros(30), torch.ones(20)]).long()] * b
    expected = 0.0
    for index in range(b):
        sample_cameras = Cameras(batch["K"][index], batch["cam_to_world"][index], w, h)
        for view, other in ((0, 1), (1, 0)):
            out = rasterize(from_view[other], sample_cameras[view : view + 1], model.background)
            expected += (out.alpha * (out.color - batch["image"][index, view : view + 1]).square()).mean()
    actual = model.cross_view_mse(gaussians, source, batch)
    torch.testing.assert_close(actual, expected / (b * v))
    assert actual > 0


def test_cross_view_weight_adds_the_term_to_the_loss(scenes):
    config = tiny_config("spunet", scenes, ["loss.cross_view_weight=0.5"])
    batch = tiny_batch(config)
    model = GS3(config)
    torch.manual_seed(0)
    output = model(batch)
    mse = (output.color - batch["image"]).square().mean()
    cross = output.terms["cross_view_mse"]
    assert cross > 0
    torch.testing.assert_close(output.loss, mse + 0.5 * cross)
    cross.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


def test_rasterizer_key_chooses_the_backend_and_backends_agree(scenes, monkeypatch):
    import gs3.model
    from gs3.errors import ConfigError
    from gs3.render import BACKENDS

    used: list[str] = []
    original = gs3.model.rasterize

    def spy(*args, backend: str = "auto", **kwargs):
        used.append(backend)
        return original(*args, backend=backend, **kwargs)

    monkeypatch.setattr(gs3.model, "rasterize", spy)
    renders = {}
    for backend in ("torch", "numba"):
        config = tiny_config("spunet", scenes, [f"model.rasterizer={backend}", "loss.cross_view_weight=0.5"])
        batch = tiny_batch(config)
        torch.manual_seed(0)
        model = GS3(config).eval()
        used.clear()
        with torch.no_grad():
            renders[backend] = model(batch).color
        assert used and set(used) == {backend}  # the main render and the cross-view renders
    torch.testing.assert_close(renders["numba"], renders["torch"], rtol=1e-4, atol=1e-5)
    for backend in BACKENDS:  # config accepts exactly the renderer's backends
        tiny_config("spunet", scenes, [f"model.rasterizer={backend}"])
    with pytest.raises(ConfigError, match=r"model\.rasterizer"):
        tiny_config("spunet", scenes, ["model.rasterizer=cuda"])
