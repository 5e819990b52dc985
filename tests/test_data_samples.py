"""Samples: resizing, back-projection, augmentation, masking, overlap, pair lists, datasets, collate."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gs3.cli import main as gs3_main
from gs3.data import (
    Frame,
    GS3Dataset,
    MaskGenerator,
    PairDataset,
    RandomViewSampler,
    SampleConfig,
    backproject,
    batch_sample_slices,
    build_sample,
    collate,
    compute_pair_list,
    open_scene,
    random_rotation,
    read_pair_list,
    resize_depth,
    view_overlap,
    write_pair_list,
)
from gs3.data.exported import write_frame, write_intrinsics
from gs3.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SCENE = DATA / "scannet_format" / "redkitchen_a"
needs_data = pytest.mark.skipif(not REAL_SCENE.is_dir(), reason=f"real sample data absent ({DATA})")


def wall_scene(
    root: Path, name: str, num_frames: int, step: float, width: int = 32, height: int = 24
) -> Path:
    """A wall 2 m in front of a camera (f = 40 px) sliding along x by ``step`` metres per frame."""
    scene = root / name
    write_intrinsics(scene, np.array([[40.0, 0, width / 2], [0, 40.0, height / 2], [0, 0, 1]]))
    rng = np.random.default_rng(len(name))
    for index in range(num_frames):
        pose = np.eye(4)
        pose[0, 3] = step * index
        color = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        write_frame(scene, index, color, np.full((height, width), 2000, np.uint16), pose, color_format="png")
    return scene


def random_frame(rng: np.random.Generator, height=12, width=16, index=0) -> Frame:
    depth = rng.uniform(0.5, 4.0, size=(height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.2] = 0.0
    angle = rng.uniform(-1, 1, size=3)
    rotation = torch.linalg.matrix_exp(
        torch.tensor([[0, -angle[2], angle[1]], [angle[2], 0, -angle[0]], [-angle[1], angle[0], 0]])
    )
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = rotation
    pose[:3, 3] = torch.from_numpy(rng.normal(size=3))
    K = torch.tensor(
        [[rng.uniform(10, 20), 0, width / 2 + 0.3], [0, rng.uniform(10, 20), height / 2 - 0.2], [0, 0, 1]]
    )
    return Frame(
        image=torch.from_numpy(rng.random((height, width, 3)).astype(np.float32)),
        depth=torch.from_numpy(depth),
        K=K.float(),
        cam_to_world=pose.float(),
        index=index,
    )


# ------------------------------------------------------------------------------------------- resizing
@pytest.mark.parametrize(("size_in", "size_out"), [((640, 480), (320, 240)), ((640, 480), (256, 192)),
                                                  ((640, 480), (512, 384)), ((7, 5), (13, 11))])  # fmt: skip
def test_depth_resize_is_nearest_to_the_pixel_centre(size_in, size_out):
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 5000, size=(size_in[1], size_in[0])).astype(np.uint16)
    depth[rng.random(depth.shape) < 0.3] = 0
    resized = resize_depth(depth, size_out)
    assert resized.shape == (size_out[1], size_out[0]) and resized.dtype == np.uint16
    for y in range(0, size_out[1], 7):
        for x in range(0, size_out[0], 5):
            source_x = min(math.floor((x + 0.5) * size_in[0] / size_out[0]), size_in[0] - 1)
            source_y = min(math.floor((y + 0.5) * size_in[1] / size_out[1]), size_in[1] - 1)
            assert resized[y, x] == depth[source_y, source_x]


# ------------------------------------------------------------------------------------ back-projection
def test_backproject_matches_float64_brute_force():
    rng = np.random.default_rng(1)
    frames = [random_frame(rng, index=i) for i in range(3)]
    depth = torch.stack([f.depth for f in frames])
    coord, color, view, pixel = backproject(
        depth, torch.stack([f.K for f in frames]), torch.stack([f.cam_to_world for f in frames]),
        torch.stack([f.image for f in frames]),
    )  # fmt: skip
    expected = []
    for v, frame in enumerate(frames):
        K, pose = frame.K.double().numpy(), frame.cam_to_world.double().numpy()
        for y in range(frame.height):
            for x in range(frame.width):
                z = float(frame.depth[y, x])
                if z > 0:
                    camera = np.array(
                        [(x + 0.5 - K[0, 2]) / K[0, 0] * z, (y + 0.5 - K[1, 2]) / K[1, 1] * z, z]
                    )
                    expected.append((v, y * frame.width + x, pose[:3, :3] @ camera + pose[:3, 3]))
    assert coord.shape[0] == len(expected) == int((depth > 0).sum())
    assert view.tolist() == [e[0] for e in expected] and pixel.tolist() == [e[1] for e in expected]
    np.testing.assert_allclose(coord.numpy(), np.stack([e[2] for e in expected]), atol=1e-5)
    flat_images = torch.stack([f.image for f in frames]).reshape(3, -1, 3)
    assert torch.equal(color, flat_images[view, pixel])


# ---------------------------------------------------------------------------------------- augmentation
def test_rotated_points_project_with_rotated_cameras_to_same_pixels_and_depths():
    rng = np.random.default_rng(2)
    frames = [random_frame(rng, index=i) for i in range(3)]
    config = SampleConfig(resolution=(16, 12), augment=True, mask_ratio=0.0)
    sample = build_sample(frames, config, np.random.default_rng(7))
    original = torch.stack([f.cam_to_world for f in frames])
    assert not torch.allclose(sample["cam_to_world"], original, atol=1e-3)  # it did rotate
    coord, view, pixel = sample["coord"].double(), sample["point_view"], sample["point_pixel"]
    pose = sample["cam_to_world"].double()[view]
    K = sample["K"].double()[view]
    camera = torch.einsum("nji,nj->ni", pose[:, :3, :3], coord - pose[:, :3, 3])  # Rᵀ (p − t)
    u = K[:, 0, 0] * camera[:, 0] / camera[:, 2] + K[:, 0, 2]
    v = K[:, 1, 1] * camera[:, 1] / camera[:, 2] + K[:, 1, 2]
    width = 16
    torch.testing.assert_close(u, (pixel % width).double() + 0.5, atol=1e-4, rtol=0)
    torch.testing.assert_close(v, (pixel // width).double() + 0.5, atol=1e-4, rtol=0)
    depth = sample["depth"].reshape(3, -1)[view, pixel].double()
    torch.testing.assert_close(camera[:, 2], depth, atol=1e-5, rtol=1e-5)
    rotation = sample["cam_to_world"].double()[:, :3, :3]
    identity = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, identity, atol=1e-6, rtol=0)


def test_rotation_angle_ranges():
    rng = np.random.default_rng(3)
    angles = []
    for _ in range(3000):
        R = random_rotation(rng)[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        # R = Rz Ry Rx  →  recover the angles
        angles.append((math.atan2(R[2, 1], R[2, 2]), -math.asin(R[2, 0]), math.atan2(R[1, 0], R[0, 0])))
    angles = np.array(angles)
    assert np.abs(angles[:, :2]).max() <= math.pi / 64 + 1e-9
    assert np.abs(angles[:, :2]).max() > 0.9 * math.pi / 64
    assert angles[:, 2].min() < -0.95 * math.pi and angles[:, 2].max() > 0.95 * math.pi


# -------------------------------------------------------------------------------------------- masking
def grid_points(views=2, height=12, width=16, drop_every=3):
    view, pixel = torch.meshgrid(torch.arange(views), torch.arange(height * width), indexing="ij")
    keep = (pixel % drop_every) != 0  # some pixels have no point
    return view[keep], pixel[keep]


@pytest.mark.parametrize("unit", ["point", "pixel", "patch"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9])
def test_mask_ratio_seed_and_consistency(unit, ratio):
    view, pixel = grid_points()
    generator = MaskGenerator(ratio, unit, patch_size=4)
    mask = generator(np.random.default_rng(5), 2, 12, 16, view, pixel)
    assert mask.pixel_visible.shape == (2, 12, 16) and mask.point_visible.shape == view.shape
    assert torch.equal(mask.point_visible, mask.pixel_visible.reshape(2, -1)[view, pixel])
    if unit == "point":
        assert int((~mask.point_visible).sum()) == round(ratio * view.numel())
        assert int((~mask.pixel_visible).sum()) == round(ratio * view.numel())
    elif unit == "pixel":
        assert int((~mask.pixel_visible).sum()) == round(ratio * 2 * 12 * 16)
    else:
        blocks = mask.pixel_visible.reshape(2, 3, 4, 4, 4).permute(0, 1, 3, 2, 4).reshape(2, 12, 16)
        assert torch.all(blocks == blocks[..., :1])  # constant within each 4×4 patch
        assert int((~mask.pixel_visible[:, ::4, ::4]).sum()) == round(ratio * 24)
    assert torch.equal(mask.visible_points, torch.nonzero(mask.point_visible).squeeze(1))
    again = generator(np.random.default_rng(5), 2, 12, 16, view, pixel)
    assert torch.equal(again.point_visible, mask.point_visible)
    if 0 < ratio:
        other = generator(np.random.default_rng(6), 2, 12, 16, view, pixel)
        assert not torch.equal(other.pixel_visible, mask.pixel_visible)


def test_patch_mask_crops_edge_patches():
    view, pixel = grid_points(height=10, width=13)
    mask = MaskGenerator(0.5, "patch", patch_size=4)(np.random.default_rng(0), 2, 10, 13, view, pixel)
    assert mask.pixel_visible.shape == (2, 10, 13)
    assert int((~mask.pixel_visible[:, ::4, ::4]).sum()) == round(0.5 * 2 * 3 * 4)


def test_sample_config_is_checked():
    assert SampleConfig(resolution="256x192").resolution == (256, 192)
    assert SampleConfig(resolution=[512, 384]).resolution == (512, 384)
    with pytest.raises(ConfigError, match="num_views"):
        SampleConfig(num_views=1)
    with pytest.raises(ConfigError, match="mask ratio"):
        SampleConfig(mask_ratio=0.95)


def test_dataset_from_root_and_split(tmp_path):
    wall_scene(tmp_path, "scene0000_00", 8, step=0.01)  # train
    wall_scene(tmp_path, "scene0568_00", 8, step=0.01)  # val
    config = SampleConfig(resolution=(16, 12))
    assert GS3Dataset.from_root(tmp_path, "val", config).scenes == [str(tmp_path / "scene0568_00")]
    assert len(GS3Dataset.from_root(tmp_path, None, config, samples_per_scene=3)) == 6
    with pytest.raises(DataError, match="no scenes found for split 'test'"):
        GS3Dataset.from_root(tmp_path, "test", config)


def test_mask_settings_are_checked():
    with pytest.raises(ConfigError, match="ratio"):
        MaskGenerator(0.95)
    with pytest.raises(ConfigError, match="unit"):
        MaskGenerator(0.5, "voxel")
    with pytest.raises(ConfigError, match="patch size"):
        MaskGenerator(0.5, "patch", 0)


# -------------------------------------------------------------------------------------------- overlap
def wall_frame(x: float, width: int = 16, height: int = 12, yaw_pi: bool = False) -> Frame:
    pose = torch.eye(4)
    pose[0, 3] = x
    if yaw_pi:
        pose[:3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))
    K = torch.tensor([[20.0, 0, width / 2], [0, 20.0, height / 2], [0, 0, 1]])
    return Frame(torch.zeros(height, width, 3), torch.full((height, width), 2.0), K, pose, 0)


def test_view_overlap_analytic():
    assert view_overlap(wall_frame(0.0), wall_frame(0.0)) == 1.0
    # b is 0.5 m to the right: a's pixel x lands at x + 0.5 − 20 · 0.5 / 2 = x − 4.5 → columns 5..15 stay
    assert view_overlap(wall_frame(0.0), wall_frame(0.5)) == pytest.approx(11 / 16)
    assert view_overlap(wall_frame(0.0), wall_frame(0.0, yaw_pi=True)) == 0.0  # looking away
    closer = wall_frame(0.0)
    closer.depth = closer.depth * 0.8  # b sees something 40 cm nearer: inconsistent depth
    assert view_overlap(wall_frame(0.0), closer) == 0.0
    assert view_overlap(wall_frame(0.0), closer, relative_tolerance=0.3) == 1.0


@needs_data
def test_real_overlap_at_interval_5_is_high():
    scene = open_scene(REAL_SCENE)
    assert view_overlap(scene.frame(100, (160, 120)), scene.frame(105, (160, 120))) > 0.7
    assert view_overlap(scene.frame(0, (160, 120)), scene.frame(299, (160, 120))) < 0.5


def test_pair_lists(tmp_path, capsys):
    root = tmp_path / "root"
    wall_scene(root, "slow", 12, step=0.01)
    wall_scene(root, "fast", 12, step=0.1)  # 5 frames = 0.5 m → overlap 11/16 at 16 px, 0.6875
    (root / "slow" / "pose" / "5.txt").write_text("nan " * 16)
    pairs = compute_pair_list(sorted(root.iterdir()), interval=5, resolution=(16, 12))
    records = {(r["scene"], tuple(r["frames"])): r["overlap"] for r in pairs["samples"]}
    assert set(records) == {("fast", (0, 5)), ("fast", (5, 10)), ("slow", (0, 5))} - {("slow", (0, 5))}
    assert records[("fast", (0, 5))] == pytest.approx(11 / 16)
    assert pairs["skipped"] == {"non-finite pose": 1}
    out = tmp_path / "pairs.json"
    write_pair_list(out, pairs)
    assert [s.frames for s in read_pair_list(out)] == [(0, 5), (5, 10)]
    assert gs3_main(["data", "pairs", str(root), "--out", str(out), "--min-overlap", "0.9", "--quiet",
                     "--resolution", "16x12"]) == 0  # fmt: skip
    assert json.loads(out.read_text())["samples"] == []
    assert "wrote 0 samples" in capsys.readouterr().out
    assert gs3_main(["data", "pairs", str(root), "--out", str(out), "--views", "3", "--interval", "2",
                     "--stride", "3", "--quiet"]) == 0  # fmt: skip
    samples = read_pair_list(out)
    assert {s.frames for s in samples} >= {(0, 2, 4), (3, 5, 7), (6, 8, 10)}
    assert all(5 not in s.frames for s in samples if "slow" in s.scene)
    dataset = PairDataset(out, SampleConfig(num_views=3, interval=2, resolution=(16, 12)))
    assert len(dataset) == len(samples) and dataset[0]["image"].shape == (3, 12, 16, 3)


def test_overlap_filter_in_dataset(tmp_path):
    scene = wall_scene(tmp_path, "fast", 12, step=0.1)
    config = SampleConfig(resolution=(16, 12), min_overlap=0.6)
    assert GS3Dataset([scene], config)[0]["frames"].tolist() in ([i, i + 5] for i in range(7))
    strict = GS3Dataset([scene], SampleConfig(resolution=(16, 12), min_overlap=0.9, max_tries=5))
    with pytest.raises(DataError, match=r"no valid views after 5 tries.*low view overlap"):
        strict[0]
    assert strict.skipped == {"low view overlap": 5}


# ------------------------------------------------------------------------------- datasets and collate
def test_sampler_windows_and_seeds():
    sampler = RandomViewSampler(3, 4, seed=0)
    draws = [sampler.sample(20) for _ in range(200)]
    assert all(d[1] - d[0] == 4 and d[2] - d[1] == 4 and 0 <= d[0] and d[2] < 20 for d in draws)
    assert {d[0] for d in draws} == set(range(12))
    replay = RandomViewSampler(3, 4, seed=0)
    assert draws == [replay.sample(20) for _ in range(200)]
    assert sampler.sample(8) is None
    assert sampler.sample(13, exclude={4, 5, 6, 7, 8}) is None
    assert sampler.sample(13, exclude={0, 4, 8}) != (0, 4, 8)
    with pytest.raises(DataError):
        RandomViewSampler(1)


def test_collate_offsets(tmp_path):
    scene = wall_scene(tmp_path, "wall", 12, step=0.01)
    config = SampleConfig(resolution=(16, 12), num_views=2)
    dataset = GS3Dataset([scene], config, samples_per_scene=3)
    samples = [dataset[i] for i in range(3)]
    samples[1]["depth"][0, :4] = 0.0  # (only changes the stored depth; points stay as built)
    samples[1]["coord"] = samples[1]["coord"][:100]
    for key in ("color", "point_view", "point_pixel", "point_visible"):
        samples[1][key] = samples[1][key][:100]
    batch = collate(samples)
    counts = [s["coord"].shape[0] for s in samples]
    assert batch["offset"].tolist() == np.cumsum(counts).tolist()
    for b, part in enumerate(batch_sample_slices(batch["offset"])):
        assert torch.equal(batch["coord"][part], samples[b]["coord"])
        assert torch.equal(batch["point_pixel"][part], samples[b]["point_pixel"])
    assert batch["image"].shape == (3, 2, 12, 16, 3) and batch["K"].shape == (3, 2, 3, 3)
    assert batch["pixel_visible"].dtype == torch.bool and batch["frames"].shape == (3, 2)
    assert batch["scene"] == ["wall"] * 3 and batch["offset"].dtype == torch.long


def test_samples_reproducible_from_seed_epoch_index(tmp_path):
    scene = wall_scene(tmp_path, "wall", 30, step=0.01)
    config = SampleConfig(resolution=(16, 12))
    first = GS3Dataset([scene], config, seed=1, samples_per_scene=4)
    second = GS3Dataset([scene], config, seed=1, samples_per_scene=4)
    a, b = first[2], second[2]
    for key in ("coord", "cam_to_world", "point_visible", "frames"):
        assert torch.equal(a[key], b[key])
    second.set_epoch(1)
    assert not torch.equal(second[2]["cam_to_world"], a["cam_to_world"])


def test_dataloader_workers_give_identical_batches(tmp_path):
    scenes = [wall_scene(tmp_path, f"s{i}", 14, step=0.02) for i in range(2)]
    for index in (5, 6, 7, 8):  # most windows of s0 hold a bad frame: skips must not depend on the worker
        (scenes[0] / "pose" / f"{index}.txt").write_text("-inf " * 16)
    config = SampleConfig(resolution=(32, 24), mask_unit="patch", mask_patch_size=8)
    dataset = GS3Dataset(scenes, config, seed=4, samples_per_scene=4)
    dataset.set_epoch(3)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate)
        batches[workers] = list(loader)
    assert len(batches[0]) == len(batches[2]) == 3
    assert sum(batch["skipped"].get("non-finite pose", 0) for batch in batches[0]) > 0
    for serial, parallel in zip(batches[0], batches[2]):
        assert serial.keys() == parallel.keys()
        for key, value in serial.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, parallel[key]), key
            else:
                assert value == parallel[key], key


@needs_data
def test_real_sample_matches_batch_contract():
    config = SampleConfig()
    batch = collate([GS3Dataset([REAL_SCENE], config, seed=0, samples_per_scene=2)[i] for i in range(2)])
    assert batch["image"].shape == (2, 2, 240, 320, 3) and batch["depth"].shape == (2, 2, 240, 320)
    assert batch["K"].dtype == torch.float32 and batch["coord"].dtype == torch.float32
    valid = int((batch["depth"] > 0).sum())
    assert batch["coord"].shape == (valid, 3) and int(batch["offset"][-1]) == valid
    assert abs(batch["point_visible"].float().mean().item() - 0.5) < 1e-3
    assert (batch["frames"][:, 1] - batch["frames"][:, 0]).tolist() == [5, 5]


# ------------------------------------------------------------------------------- synthetic subcommand
def test_synthetic_subcommand_hook(monkeypatch):
    module = types.ModuleType("gs3.data.synthetic_command")
    calls = []
    module.add_arguments = lambda parser: parser.add_argument("--scenes", type=int, default=1)
    module.run = lambda args: calls.append(args.scenes) or 0
    monkeypatch.setitem(sys.modules, "gs3.data.synthetic_command", module)
    assert gs3_main(["data", "synthetic", "--scenes", "3"]) == 0
    assert calls == [3]
