"""The NeRF-rendering baseline (gs3.ponder): feature volumes against brute force, gradients everywhere,
config validation, checkpoints → export / render, and a short training run with exact resumption."""

from __future__ import annotations

import json

import pytest
import torch

from gs3.cameras import Cameras
from gs3.config import load_config
from gs3.data.collate import collate
from gs3.errors import ConfigError
from gs3.model import GS3, build_model
from gs3.ponder import PonderModel
from gs3.ponder.volume import VolumeBox, frustum_box, lift_images, points_box, pool_points
from gs3.train import checkpoint as ckpt
from gs3.train.data import build_dataset, prepare_synthetic

SPUNET = (
    "model.encoder={type: SpUNet-v1m1, base_channels: 8, channels: [8, 16, 16, 8], layers: [1, 1, 1, 1],"
    " voxel_size: 0.1, out_channels: 16}"
)
RESNET50 = "model.encoder={type: ResNet50, out_channels: 16, full_resolution_channels: 8}"
TINY = [
    "data.source=synthetic",
    "data.width=24",
    "data.height=16",
    "data.frame_interval=2",
    "data.synthetic_scenes=2",
    "data.synthetic_frames=8",
    "data.batch_size=1",
    "data.num_workers=0",
    "data.extra={samples_per_scene: 2}",
    "model.volume={grid_shape: [8, 8, 4], channels: 8, unet_channels: [4, 8], hidden_channels: 16,"
    " geometry_channels: 4, rays_per_view: 32, num_samples: 12, num_importance: 4, render_chunk: 100}",
    "optim.lr=1e-3",
    "optim.max_steps=4",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.checkpoint_every=2",
    "trainer.keep_checkpoints=10",
    "trainer.log_every=1",
    "trainer.image_every=2",
    "trainer.progress_bar=false",
]


def tiny_config(cache, encoder: str = SPUNET, config: str = "ponder_rgbd_spunet", extra=()):
    return load_config(config, [*TINY, encoder, f"data.cache_dir={cache}", *extra])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def tiny_batch(config, size: int = 2) -> dict:
    prepare_synthetic(config)
    dataset = build_dataset(config)
    return collate([dataset[i % len(dataset)] for i in range(size)])


# --- the feature volume ------------------------------------------------------------------------------------
def test_pool_points_is_the_mean_of_each_cells_points():
    generator = torch.Generator().manual_seed(0)
    coord = torch.rand(300, 3, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5])
    sample = torch.randint(0, 2, (300,), generator=generator)
    features = torch.randn(300, 5, generator=generator, dtype=torch.float64)
    box = points_box(coord, sample, 2, (4, 3, 2), padding=0.1)
    volume = pool_points(features, coord, sample, box)
    assert volume.shape == (2, 5, 4, 3, 2)
    for s in range(2):
        low, size = box.low[s], box.cell_size[s]
        mine = coord[sample == s]
        assert (mine.amin(0) > low).all() and (mine.amax(0) < box.high[s]).all()
        for x in range(4):
            for y in range(3):
                for z in range(2):
                    lo = low + torch.tensor([x, y, z]) * size
                    inside = ((coord >= lo) & (coord < lo + size)).all(-1) & (sample == s)
                    expected = (
                        features[inside].mean(0) if inside.any() else torch.zeros(5, dtype=torch.float64)
                    )
                    torch.testing.assert_close(volume[s, :, x, y, z], expected)


def test_lift_images_averages_the_views_that_see_each_cell():
    """Brute force: project every cell centre with Cameras, read the feature of the pixel it falls in
    (constant per pixel here, so bilinear sampling reads that value away from pixel borders)."""
    generator = torch.Generator().manual_seed(1)
    width, height = 8, 6
    K = torch.tensor([[6.0, 0, 4], [0, 6.0, 3], [0, 0, 1]], dtype=torch.float64).expand(1, 2, 3, 3)
    poses = torch.eye(4, dtype=torch.float64).repeat(1, 2, 1, 1)
    poses[0, 1, 0, 3] = 0.7  # second camera shifted right
    box = frustum_box(K, poses, width, height, 0.5, 3.0, (5, 4, 6), padding=0.0)
    features = torch.randn(1, 2, 3, height, width, generator=generator, dtype=torch.float64)
    # nearest-pixel features: upsample each pixel to a 9×9 block so bilinear = the pixel's value inside it
    fine = features.repeat_interleave(9, dim=-1).repeat_interleave(9, dim=-2)
    volume = lift_images(fine, K, poses, width, height, box, near=0.5)
    centres = box.cell_centres()[0]
    total, count = torch.zeros(centres.shape[0], 3, dtype=torch.float64), torch.zeros(centres.shape[0], 1)
    checked = torch.ones(centres.shape[0], dtype=torch.bool)
    for view in range(2):
        pixels, depth = Cameras(K[0, view], poses[0, view], width, height).world_to_pixels(centres)
        seen = (depth > 0.5) & (pixels >= 0).all(-1) & (pixels[:, 0] <= width) & (pixels[:, 1] <= height)
        column, row = (
            pixels[:, 0].floor().long().clamp(0, width - 1),
            pixels[:, 1].floor().long().clamp(0, height - 1),
        )
        distance_to_border = torch.minimum((pixels - pixels.floor()), (pixels.floor() + 1 - pixels)).amin(-1)
        checked &= ~seen | (distance_to_border > 1 / 9)  # away from pixel borders (bilinear blends there)
        total += features[0, view][:, row, column].T * seen[:, None]
        count += seen[:, None]
    expected = (total / count.clamp_min(1)).T.reshape(3, 5, 4, 6)
    assert count.max() == 2 and (count == 0).any()  # some cells seen twice, some by no view
    assert checked.sum() > 60  # of 120 cells
    flat_expected, flat_volume = expected.reshape(3, -1)[:, checked], volume[0].reshape(3, -1)[:, checked]
    torch.testing.assert_close(flat_volume, flat_expected)


def test_box_coordinates_put_cell_centres_at_integers():
    box = VolumeBox(torch.tensor([[0.0, 1.0, -1.0]]), torch.tensor([[2.0, 2.0, 1.0]]), (4, 2, 8))
    centres = box.cell_centres()[0]
    coords = box.cell_coords(centres, torch.zeros(len(centres), dtype=torch.long))
    torch.testing.assert_close(coords, coords.round())
    assert coords.amin(0).tolist() == [0, 0, 0] and coords.amax(0).tolist() == [3, 1, 7]
    unit = box.normalized(centres, torch.zeros(len(centres), dtype=torch.long))
    assert unit.abs().max() <= 1.0 and unit[:, 2].abs().max() > unit[:, 0].abs().max() - 1e-6


# --- the model ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoder", "config", "extra"),
    [
        pytest.param(SPUNET, "ponder_rgbd_spunet", [], id="spunet-sdf"),
        pytest.param(SPUNET, "ponder_rgbd_spunet", ["model.volume.geometry=density"], id="spunet-density"),
        pytest.param(RESNET50, "ponder_rgb_resnet50", [], id="resnet50-sdf"),
        pytest.param(
            SPUNET,
            "ponder_rgbd_spunet",
            ["loss.depth_weight=1", "loss.sdf_weight=10", "loss.free_space_weight=1"],
            id="spunet-depth-supervised",
        ),
    ],
)
def test_gradients_reach_the_encoder_the_volume_network_and_the_field(cache, encoder, config, extra):
    config = tiny_config(cache, encoder, config, extra)
    torch.manual_seed(0)
    model = build_model(config)
    assert isinstance(model, PonderModel)
    output = model(tiny_batch(config))
    assert torch.isfinite(output.loss)
    expected_terms = {"color"} | ({"eikonal"} if config.model.volume.geometry == "sdf" else set())
    if config.loss.depth_weight > 0:
        expected_terms |= {"depth", "sdf", "free_space"}
    assert set(output.terms) == expected_terms
    output.loss.backward()
    for part in ("encoder", "volume_net", "field"):
        for name, parameter in getattr(model, part).named_parameters():
            assert parameter.grad is not None, f"{part}.{name}: no gradient"
            assert parameter.grad.abs().sum() > 0, f"{part}.{name}: zero gradient"
    assert output.metrics["rays"] == 2 * 2 * 32  # batch 2 × 2 views × rays_per_view
    assert 0 < float(output.metrics["psnr"]) < 60


def test_eval_renders_whole_views_the_same_in_any_chunk_size(cache):
    config = tiny_config(cache)
    torch.manual_seed(0)
    model = build_model(config).eval()
    batch = tiny_batch(config, size=1)
    with torch.no_grad():
        output = model(batch)
        model.config.model.volume.render_chunk = 7
        again = model(batch)
    assert output.color.shape == (1, 2, 16, 24, 3) and output.depth.shape == (1, 2, 16, 24)
    torch.testing.assert_close(output.color, again.color, rtol=1e-5, atol=1e-6)
    assert ((output.alpha >= 0) & (output.alpha <= 1 + 1e-6)).all()
    assert torch.isfinite(output.metrics["psnr"])


def test_build_model_picks_by_renderer(cache):
    assert isinstance(build_model(load_config("demo", [*TINY[:9], SPUNET])), GS3)
    assert isinstance(build_model(tiny_config(cache)), PonderModel)


# --- config validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.renderer=nerf", "model.renderer"),
        ("loss.lpips_weight=0.05", "loss.lpips_weight"),
        ("model.volume.geometry=occupancy", "model.volume.geometry"),
        ("model.volume.grid_shape=[8, 8]", "model.volume.grid_shape"),
        ("model.volume.grid_shape=[8, 1, 8]", "model.volume.grid_shape"),
        ("model.volume.rays_per_view=100000", "model.volume.rays_per_view"),
        ("model.volume.upsample_steps=0", "model.volume.upsample_steps"),
        ("model.volume.frustum_far=0.1", "model.volume.frustum_far"),
        ("loss.color=huber", "loss.color"),
        ("loss.depth_weight=-1", "loss.depth_weight"),
        ("loss.sdf_truncation=0", "loss.sdf_truncation"),
    ],
)
def test_config_validation_names_the_key_in_one_line(cache, override, key):
    with pytest.raises(ConfigError) as error:
        tiny_config(cache, extra=[override])
    assert key in str(error.value) and "\n" not in str(error.value)


def test_sdf_terms_need_an_sdf_field(cache):
    with pytest.raises(ConfigError, match=r"loss\.sdf_weight.*geometry=sdf"):
        tiny_config(cache, extra=["model.volume.geometry=density", "loss.sdf_weight=1"])
    tiny_config(cache, extra=["model.volume.geometry=density"])  # eikonal (sdf only) is simply unused


def test_gaussian_configs_ignore_the_volume_section():
    config = load_config("gs3_rgbd_spunet", ["model.volume.rays_per_view=10000000"])
    assert config.model.renderer == "gaussians"


# --- checkpoints: export and render ------------------------------------------------------------------------
def module_checkpoint(config, path):
    from gs3.train.module import GS3Module

    module = GS3Module(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn(tensor.shape, generator=generator))
    checkpoint = {"state_dict": module.state_dict(), "global_step": 3}
    module.on_save_checkpoint(checkpoint)
    ckpt.atomic_torch_save(checkpoint, path)
    return checkpoint


def test_export_of_a_ponder_checkpoint_holds_its_encoder(cache, tmp_path):
    from gs3.encoders import build_encoder
    from gs3.train.export import backbone_from_export, export_checkpoint, load_export

    config = tiny_config(cache)
    checkpoint = module_checkpoint(config, tmp_path / "run.ckpt")
    assert any(k.startswith("model.volume_net.") for k in checkpoint["state_dict"])
    sidecar = export_checkpoint(tmp_path / "run.ckpt", "pointcept", tmp_path / "encoder.pth")
    fresh = build_encoder(dict(config.model.encoder))
    fresh.load_backbone_state_dict(backbone_from_export(load_export(tmp_path / "encoder.pth"), "pointcept"))
    for key, value in fresh.backbone_state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][f"model.encoder.{key}"])
    assert json.loads(sidecar.read_text())["config"]["model"]["renderer"] == "volume"


def test_render_command_renders_a_ponder_checkpoint(cache, tmp_path):
    from PIL import Image

    from gs3.train.data import synthetic_root
    from gs3.train.rendering import render_frames

    config = tiny_config(cache)
    prepare_synthetic(config)
    module_checkpoint(config, tmp_path / "run.ckpt")
    line = render_frames(
        tmp_path / "run.ckpt", synthetic_root(config) / "synthetic_0000", [0, 2], tmp_path / "out"
    )
    assert "PSNR" in line and "no gaussians.ply" in line
    assert Image.open(tmp_path / "out" / "render_0.png").size == (24, 16)
    assert not (tmp_path / "out" / "gaussians.ply").exists()


# --- a short run -------------------------------------------------------------------------------------------
def test_short_run_trains_checkpoints_and_resumes_exactly(cache, tmp_path):
    from gs3.train.runner import pretrain

    config = tiny_config(cache, extra=["optim.max_steps=6", "trainer.checkpoint_every=3"])
    summary = pretrain(config, out_dir=tmp_path / "a")
    assert summary.steps == 6 and summary.nonfinite_skipped == 0
    straight = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=False)
    resumed_summary = pretrain(
        config, out_dir=tmp_path / "b", resume=str(tmp_path / "a/checkpoints/step-00000003.ckpt")
    )
    assert resumed_summary.steps == 6
    resumed = torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=False)
    for key, value in straight["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(resumed["state_dict"][key], value), key
    assert any(
        not torch.equal(straight["state_dict"][k], v)
        for k, v in torch.load(tmp_path / "a/checkpoints/step-00000003.ckpt", weights_only=False)[
            "state_dict"
        ].items()
    )
