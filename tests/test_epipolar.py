"""Epipolar sampler (geometry against real poses, analytic cases and brute force) and transformer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gs3.cameras import pixel_centers, project, scale_intrinsics, transform_points, unproject
from gs3.epipolar import (
    EpipolarTransformer,
    MaskedCrossAttention,
    epipolar_segments,
    other_views,
    sample_epipolar,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCENE = DATA / "scannet_format" / "redkitchen_a"
K_FULL = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])


def rotation(axis: str, degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "x":
        return torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)
    if axis == "y":
        return torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]], dtype=torch.float64)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]], dtype=torch.float64)


def pose(rot: torch.Tensor, position: tuple[float, float, float]) -> torch.Tensor:
    transform = torch.eye(4, dtype=torch.float64)
    transform[:3, :3] = rot
    transform[:3, 3] = torch.tensor(position, dtype=torch.float64)
    return transform


def small_K(width: int, height: int, focal: float) -> torch.Tensor:
    return torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float64)


def batch_of(K: torch.Tensor, poses: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, V, 3, 3) intrinsics and (1, V, 4, 4) poses."""
    return K.expand(1, len(poses), 3, 3).clone(), torch.stack(poses)[None]


def random_pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two cameras looking at roughly the same region, a few degrees and decimetres apart."""
    generator = torch.Generator().manual_seed(seed)
    angles = (torch.rand(3, generator=generator) - 0.5) * 40.0
    rot = rotation("x", angles[0].item()) @ rotation("y", angles[1].item()) @ rotation("z", angles[2].item())
    position = ((torch.rand(3, generator=generator) - 0.5) * 0.8).tolist()
    return pose(torch.eye(3, dtype=torch.float64), (0, 0, 0)), pose(rot, tuple(position))


def reproject_into_b(
    K: torch.Tensor, poses: torch.Tensor, a: int, b: int, height: int, width: int, depths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent float64 reference: pixel centres of a at `depths` (r, s) → pixel coords and z in b."""
    pixels = (
        pixel_centers(height, width, dtype=torch.float64).reshape(-1, 1, 2).expand(-1, depths.shape[1], 2)
    )
    points_a = unproject(K[0, a].double(), pixels.reshape(-1, 2), depths.double().reshape(-1))
    a_to_b = torch.linalg.inv(poses[0, b].double()) @ poses[0, a].double()
    xy, z = project(K[0, b].double(), transform_points(a_to_b, points_a))
    return xy.reshape(*depths.shape, 2), z.reshape(depths.shape)


# ----------------------------------------------------------------------------------------------------------
# Real poses and depth


def read_frame(index: int) -> tuple[np.ndarray, np.ndarray]:
    cam_to_world = np.loadtxt(SCENE / "pose" / f"{index}.txt")
    depth = np.asarray(Image.open(SCENE / "depth" / f"{index}.png")).astype(np.float64)
    depth[depth >= 65535] = 0
    return cam_to_world, depth / 1000.0


@pytest.mark.skipif(not SCENE.is_dir(), reason=f"real RGB-D data not found at {SCENE}")
@pytest.mark.parametrize(("frame_a", "frame_b"), [(60, 70), (100, 105)])
def test_real_point_lies_on_its_segment_and_nearest_sample_has_its_depth(frame_a: int, frame_b: int) -> None:
    # Feature grid = 640×480 / 5: low-res pixel (x, y) has its centre exactly on full-res pixel (5x+2, 5y+2),
    # so back-projecting that sensor pixel gives a point exactly on the low-res pixel's ray.
    factor, width, height = 5, 128, 96
    near, far = 0.5, 5.0
    # Baselines here are 4–10 cm, so at ~3 m one pixel of disparity spans 15–30 % of depth: the nearest of
    # S samples is off by up to half a sample spacing. With a ~10–20 px segment, S = 256 puts samples
    # < 0.1 px apart, bounding that error to ~1 % (S = 32 would allow ~10 %), so ±2 % tests the geometry.
    num_samples = 256
    pose_a, depth_a = read_frame(frame_a)
    pose_b, depth_b = read_frame(frame_b)
    K = torch.from_numpy(scale_intrinsics(torch.from_numpy(K_FULL), 1 / factor, 1 / factor).numpy())
    Ks, poses = batch_of(K, [torch.from_numpy(pose_a), torch.from_numpy(pose_b)])

    # Candidate points: valid sensor depth in a, inside b, and not occluded in b (b's depth agrees).
    rng = np.random.default_rng(0)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    true_depth = depth_a[factor * ys + 2, factor * xs + 2]
    flat = np.flatnonzero((true_depth > near) & (true_depth < far))
    pixel_index = torch.from_numpy(rng.choice(flat, size=400, replace=False))
    depth_true = torch.from_numpy(true_depth.reshape(-1))[pixel_index]
    centres = pixel_centers(height, width, dtype=torch.float64).reshape(-1, 2)[pixel_index]
    points_a = unproject(K, centres, depth_true)
    xy_b, z_b = project(K, transform_points(torch.linalg.inv(poses[0, 1]) @ poses[0, 0], points_a))
    inside = (xy_b[:, 0] > 1) & (xy_b[:, 0] < width - 1) & (xy_b[:, 1] > 1) & (xy_b[:, 1] < height - 1)
    full_res = (xy_b * factor).long().clamp(max=torch.tensor([639, 479]))
    sensor_b = torch.from_numpy(depth_b[full_res[:, 1], full_res[:, 0]])
    seen = inside & (sensor_b > 0) & ((sensor_b - z_b).abs() < 0.05 * z_b)
    assert seen.sum() >= 100, "too few co-visible points to test"
    pixel_index, depth_true, xy_b = pixel_index[seen], depth_true[seen], xy_b[seen]

    features = torch.zeros(1, 2, 1, height, width)
    samples = sample_epipolar(features, Ks.float(), poses.float(), near, far, num_samples)
    sample_xy = samples.xy[0, 0, 0, pixel_index].double()  # (n, S, 2)
    sample_depth = samples.depths[0, 0, 0, pixel_index].double()
    assert samples.valid[0, 0, 0, pixel_index].all()

    # Distance from the projected point to the sampled 2D segment (first to last sample).
    start, end = sample_xy[:, 0], sample_xy[:, -1]
    direction = end - start
    along = ((xy_b - start) * direction).sum(-1) / direction.square().sum(-1)
    closest = start + along.clamp(0, 1)[:, None] * direction
    assert ((xy_b - closest).norm(dim=-1) < 0.5).all()
    assert (along > -0.01).all() and (along < 1.01).all()

    # The sample nearest the projected point carries the point's depth.
    nearest = (sample_xy - xy_b[:, None]).norm(dim=-1).argmin(dim=-1)
    depth_nearest = sample_depth.gather(1, nearest[:, None]).squeeze(1)
    relative_error = (depth_nearest - depth_true).abs() / depth_true
    assert relative_error.max() < 0.02, f"max relative depth error {relative_error.max():.4f}"
    # The segment covers a wide depth range, so a wrong sample would not pass by chance.
    assert (sample_depth[:, -1] / sample_depth[:, 0] > 2).all()


# ----------------------------------------------------------------------------------------------------------
# Hand-built cameras


def test_sideways_translation_gives_horizontal_lines_and_disparity_depths() -> None:
    width, height, focal, baseline = 40, 30, 30.0, 0.2
    near, far, num_samples = 0.5, 8.0, 16
    K = small_K(width, height, focal)
    Ks, poses = batch_of(K, [pose(torch.eye(3), (0, 0, 0)), pose(torch.eye(3), (baseline, 0, 0))])
    samples = sample_epipolar(
        torch.zeros(1, 2, 1, height, width), Ks.float(), poses.float(), near, far, num_samples
    )
    centres = pixel_centers(height, width, dtype=torch.float64).reshape(-1, 2)

    # b sits to the right of a: a point at depth z in a appears f·B/z pixels further left in b.
    valid, xy, depth = samples.valid[0, 0, 0], samples.xy[0, 0, 0].double(), samples.depths[0, 0, 0].double()
    u_a, v_a = centres[:, 0:1], centres[:, 1:2]
    torch.testing.assert_close(xy[..., 1][valid], v_a.expand_as(valid)[valid], atol=1e-4, rtol=0)
    disparity = u_a - xy[..., 0]
    torch.testing.assert_close(depth[valid], (focal * baseline / disparity)[valid], atol=0, rtol=1e-4)

    # Analytic clipping: the segment runs from u − fB/near to u − fB/far, cut at the image edges.
    start = (u_a - focal * baseline / near).clamp(min=0)
    end = (u_a - focal * baseline / far).clamp(max=width)
    expected_valid = (end > start).squeeze(1)
    assert torch.equal(valid.all(dim=1), expected_valid) and torch.equal(valid.any(dim=1), expected_valid)
    fractions = (torch.arange(num_samples, dtype=torch.float64) + 0.5) / num_samples
    expected_u = start + fractions * (end - start)
    torch.testing.assert_close(xy[..., 0][valid], expected_u[valid], atol=1e-4, rtol=0)
    # In the other direction (b → a) every ray reaches a; depths are the same formula.
    depth_ba, xy_ba = samples.depths[0, 1, 0].double(), samples.xy[0, 1, 0].double()
    valid_ba = samples.valid[0, 1, 0]
    torch.testing.assert_close(
        depth_ba[valid_ba], (focal * baseline / (xy_ba[..., 0] - u_a))[valid_ba], atol=0, rtol=1e-4
    )


def test_points_behind_the_other_camera_are_masked() -> None:
    width, height, focal = 40, 30, 30.0
    K = small_K(width, height, focal)
    # b stands 3 m ahead of a, looking the same way: a's rays up to 3 m are behind b.
    Ks, poses = batch_of(K, [pose(torch.eye(3), (0, 0, 0)), pose(torch.eye(3), (0.1, 0.05, 3.0))])
    features = torch.ones(1, 2, 2, height, width)
    samples = sample_epipolar(features, Ks.float(), poses.float(), 0.5, 2.0, 8)
    assert not samples.valid[:, 0].any()
    assert (samples.features[:, 0] == 0).all() and torch.isfinite(samples.depths).all()
    # A naive projection (divide by a negative z) would have put many of those points inside b's image.
    depth_grid = torch.linspace(0.5, 2.0, 8, dtype=torch.float64).expand(height * width, 8)
    xy, z = reproject_into_b(Ks, poses, 0, 1, height, width, depth_grid)
    naive_inside = (xy[..., 0] >= 0) & (xy[..., 0] <= width) & (xy[..., 1] >= 0) & (xy[..., 1] <= height)
    assert (z < 0).all() and naive_inside.float().mean() > 0.5

    # With far beyond b, only the part of each ray in front of b survives.
    samples = sample_epipolar(features, Ks.float(), poses.float(), 0.5, 8.0, 8)
    valid = samples.valid[0, 0, 0]
    assert valid.any()
    _, z = reproject_into_b(Ks, poses, 0, 1, height, width, samples.depths[0, 0, 0])
    assert (z[valid] > 0).all() and (samples.depths[0, 0, 0][valid] > 3.0).all()


def brute_force_interval(
    K: torch.Tensor, poses: torch.Tensor, height: int, width: int, near: float, far: float, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense float64 scan of t ∈ [near, far] for every pixel of view 0 into view 1: first/last visible t."""
    t = torch.linspace(near, far, steps, dtype=torch.float64).expand(height * width, steps)
    xy, z = reproject_into_b(K, poses, 0, 1, height, width, t)
    visible = (
        (z > 1e-3) & (xy[..., 0] >= 0) & (xy[..., 0] <= width) & (xy[..., 1] >= 0) & (xy[..., 1] <= height)
    )
    first = torch.where(visible, t, torch.inf).amin(dim=1)
    last = torch.where(visible, t, -torch.inf).amax(dim=1)
    return visible.any(dim=1), first, last


def pair_for_scan(case: str) -> list[torch.Tensor]:
    if case == "perpendicular":
        # b looks along a's +x from 1 m to the left: a's central rays run parallel to b's image plane
        # (their b-depth is constant), the case where the z constraint has no t term.
        return [pose(torch.eye(3), (0, 0, 0)), pose(rotation("y", 90.0), (-1.0, 0.0, 2.0))]
    return list(random_pair(int(case)))


@pytest.mark.parametrize("case", ["0", "1", "2", "perpendicular"])
def test_segments_match_a_dense_scan(case: str) -> None:
    # Odd width: the middle column's rays have x = 0 exactly (parallel to b's image plane when perpendicular).
    width, height, focal, near, far, steps = 25, 18, 20.0, 0.3, 6.0, 4001
    K = small_K(width, height, focal)
    Ks, poses = batch_of(K, pair_for_scan(case))
    segments = epipolar_segments(Ks, poses, height, width, near, far)
    seen, first, last = brute_force_interval(Ks, poses, height, width, near, far, steps)
    step = (far - near) / (steps - 1)
    valid = segments.valid[0, 0, 0]
    both = valid & seen
    assert both.sum() > 0.3 * valid.numel()
    # The scan sees a subset of the true interval, at most one step short at each end.
    assert (segments.t_near[0, 0, 0][both] <= first[both] + 1e-9).all()
    assert (segments.t_near[0, 0, 0][both] >= first[both] - step - 1e-9).all()
    assert (segments.t_far[0, 0, 0][both] >= last[both] - 1e-9).all()
    assert (segments.t_far[0, 0, 0][both] <= last[both] + step + 1e-9).all()
    # A ray the scan sees must be valid; a valid ray the scan misses must be shorter than a step.
    assert not (seen & ~valid).any()
    missed = valid & ~seen
    assert ((segments.t_far - segments.t_near)[0, 0, 0][missed] < step).all()


def test_epipole_inside_the_other_image() -> None:
    # b moves forward and a little sideways: the epipole lies inside b's image and every epipolar line
    # radiates from it; the centre pixels' rays pass close to b's centre.
    width, height, focal, near, far, steps = 24, 18, 20.0, 0.2, 5.0, 4001
    K = small_K(width, height, focal)
    Ks, poses = batch_of(K, [pose(torch.eye(3), (0, 0, 0)), pose(rotation("y", 3.0), (0.05, -0.02, 0.6))])
    a_to_b = torch.linalg.inv(poses[0, 1]) @ poses[0, 0]
    epipole, _ = project(K, a_to_b[:3, 3][None])
    assert 0 < epipole[0, 0] < width and 0 < epipole[0, 1] < height
    segments = epipolar_segments(Ks, poses, height, width, near, far)
    seen, first, last = brute_force_interval(Ks, poses, height, width, near, far, steps)
    step = (far - near) / (steps - 1)
    valid = segments.valid[0, 0, 0]
    assert not (seen & ~valid).any() and seen.sum() > 0.5 * seen.numel()
    both = valid & seen
    torch.testing.assert_close(segments.t_near[0, 0, 0][both], first[both], atol=step, rtol=0)
    torch.testing.assert_close(segments.t_far[0, 0, 0][both], last[both], atol=step, rtol=0)

    samples = sample_epipolar(torch.zeros(1, 2, 1, height, width), Ks.float(), poses.float(), near, far, 16)
    check_samples_reproject(samples, Ks, poses, height, width, near, far)
    # Each sampled line is radial: the samples are collinear with the epipole.
    xy = samples.xy[0, 0, 0].double()
    ok = samples.valid[0, 0, 0].all(dim=1) & ((xy[:, -1] - xy[:, 0]).norm(dim=-1) > 1.0)
    direction = xy[ok, -1] - xy[ok, 0]
    offset = epipole[0] - xy[ok, 0]
    cross = direction[:, 0] * offset[:, 1] - direction[:, 1] * offset[:, 0]
    assert (cross.abs() / direction.norm(dim=-1) < 1e-3).all()


def check_samples_reproject(samples, Ks, poses, height, width, near, far) -> None:
    """Every valid sample's depth, put on a's ray and projected into b, lands on the sample's xy."""
    views = Ks.shape[1]
    for a in range(views):
        for slot, b in enumerate(samples.other_view[a].tolist()):
            valid = samples.valid[0, a, slot]
            depth = samples.depths[0, a, slot]
            xy, z = reproject_into_b(Ks, poses, a, b, height, width, depth)
            assert (z[valid] > 0).all()
            torch.testing.assert_close(samples.xy[0, a, slot][valid].double(), xy[valid], atol=2e-3, rtol=0)
            assert (depth[valid] >= near * (1 - 1e-5)).all() and (depth[valid] <= far * (1 + 1e-5)).all()
            sample_xy = samples.xy[0, a, slot][valid]
            assert (
                (sample_xy >= 0).all()
                and (sample_xy[:, 0] <= width).all()
                and (sample_xy[:, 1] <= height).all()
            )


@pytest.mark.parametrize("seed", [3, 4])
def test_sample_depths_reproject_onto_sample_positions(seed: int) -> None:
    width, height = 32, 24
    K = small_K(width, height, 26.0)
    first, second = random_pair(seed)
    third = pose(rotation("z", 10.0) @ rotation("x", 5.0), (-0.2, 0.1, 0.15))
    Ks, poses = batch_of(K, [first, second, third])
    samples = sample_epipolar(torch.zeros(1, 3, 1, height, width), Ks.float(), poses.float(), 0.4, 7.0, 12)
    assert samples.valid.float().mean() > 0.3
    check_samples_reproject(samples, Ks, poses, height, width, 0.4, 7.0)


def test_bilinear_sampling_reads_a_ramp_at_the_sample_location() -> None:
    width, height = 32, 24
    K = small_K(width, height, 26.0)
    Ks, poses = batch_of(K, list(random_pair(5)))
    centres = pixel_centers(height, width).permute(2, 0, 1)  # channel 0: u + 0.5, channel 1: v + 0.5
    features = torch.stack([torch.full((2, height, width), -7.0), centres])[None]  # view a: constant
    samples = sample_epipolar(features, Ks.float(), poses.float(), 0.4, 7.0, 20)
    valid = samples.valid[0, 0, 0]
    assert valid.float().mean() > 0.3
    # Bilinear interpolation of a linear ramp is exact; outside the outer pixel centres the border is held.
    expected = torch.stack(
        [samples.xy[..., 0].clamp(0.5, width - 0.5), samples.xy[..., 1].clamp(0.5, height - 0.5)], dim=-1
    )[0, 0, 0]
    torch.testing.assert_close(samples.features[0, 0, 0][valid], expected[valid], atol=1e-4, rtol=0)
    assert (samples.features[0, 0, 0][~valid] == 0).all()


def test_other_views_index() -> None:
    assert other_views(3).tolist() == [[1, 2], [0, 2], [0, 1]]
    assert other_views(2).tolist() == [[1], [0]]


# ----------------------------------------------------------------------------------------------------------
# Transformer


def transformer_inputs(views: int, height: int = 24, width: int = 32, channels: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    K = small_K(width, height, 26.0).float()
    poses = [pose(torch.eye(3), (0, 0, 0))]
    poses += [
        pose(rotation("y", 4.0 * v) @ rotation("x", -2.0 * v), (0.15 * v, 0.03, -0.05))
        for v in range(1, views)
    ]
    Ks, cam_to_world = batch_of(K, [p.float() for p in poses])
    Ks, cam_to_world = Ks.expand(2, -1, -1, -1).clone(), cam_to_world.expand(2, -1, -1, -1).clone()
    features = torch.randn(2, views, channels, height, width)
    return features, Ks, cam_to_world


@pytest.mark.parametrize("views", [2, 3])
def test_transformer_shape_and_gradients_reach_every_parameter(views: int) -> None:
    features, K, cam_to_world = transformer_inputs(views)
    model = EpipolarTransformer(channels=16, num_layers=2, num_heads=4, num_samples=8, downscale=4)
    features.requires_grad_(True)
    output = model(features, K, cam_to_world, 0.5, 6.0)
    assert output.shape == features.shape and torch.isfinite(output).all()
    (output * torch.randn_like(output)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert features.grad.abs().sum() > 0


def test_transformer_with_every_sample_masked_is_finite() -> None:
    features, K, _ = transformer_inputs(2)
    # Second camera 5 m ahead, looking the same way: every sample of both views is invalid.
    cam_to_world = torch.stack([pose(torch.eye(3), (0, 0, 0)), pose(torch.eye(3), (0, 0, 5.0))]).float()
    cam_to_world = cam_to_world.expand(2, -1, -1, -1).clone()
    model = EpipolarTransformer(channels=16, num_layers=2, num_heads=4, num_samples=8, downscale=2)
    samples = sample_epipolar(features, K, cam_to_world, 0.5, 4.0, 8)
    assert not samples.valid[:, 0].any()
    output = model(features.requires_grad_(True), K, cam_to_world, 0.5, 4.0)
    assert torch.isfinite(output).all()
    output.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(features.grad).all()


def test_transformer_is_invariant_to_the_order_of_the_other_views() -> None:
    features, K, cam_to_world = transformer_inputs(3, seed=1)
    model = EpipolarTransformer(channels=16, num_layers=2, num_heads=4, num_samples=8, downscale=4).eval()
    order = [0, 2, 1]
    with torch.no_grad():
        output = model(features, K, cam_to_world, 0.5, 6.0)
        swapped = model(features[:, order], K[:, order], cam_to_world[:, order], 0.5, 6.0)
    torch.testing.assert_close(swapped[:, 0], output[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(swapped[:, 1], output[:, 2], atol=1e-5, rtol=1e-5)
    # The other views do matter: changing view 2 changes view 0's output. (A per-pixel constant over all
    # channels would not: the keys' LayerNorm removes it.)
    with torch.no_grad():
        perturbed = torch.cat([features[:, :2], torch.randn_like(features[:, 2:])], 1)
        changed = model(perturbed, K, cam_to_world, 0.5, 6.0)
    assert (changed[:, 0] - output[:, 0]).abs().max() > 1e-3


def test_masked_attention_equals_attention_over_the_valid_keys_only() -> None:
    torch.manual_seed(0)
    attention = MaskedCrossAttention(channels=8, num_heads=2)
    query, keys = torch.randn(5, 8), torch.randn(5, 7, 8)
    valid = torch.rand(5, 7) > 0.4
    valid[0] = False  # a query with nothing to attend to
    valid[1, 3] = True
    output = attention(query, keys, valid)
    assert (output[0] == 0).all()
    for row in range(1, 5):
        kept = keys[row, valid[row]]
        q = attention.to_q(query[row]).reshape(2, 4)
        k = attention.to_k(kept).reshape(-1, 2, 4)
        v = attention.to_v(kept).reshape(-1, 2, 4)
        weights = torch.softmax(torch.einsum("hd,lhd->hl", q, k) / 2.0, dim=-1)
        expected = attention.to_out(torch.einsum("hl,lhd->hd", weights, v).reshape(8))
        torch.testing.assert_close(output[row], expected, atol=1e-5, rtol=1e-5)


def test_transformer_handles_sizes_not_divisible_by_downscale() -> None:
    features, K, cam_to_world = transformer_inputs(2, height=30, width=38)
    model = EpipolarTransformer(channels=16, num_layers=1, num_heads=2, num_samples=4, downscale=4)
    output = model(
        features, K, cam_to_world, torch.tensor([0.5, 0.6]), torch.tensor([[6.0, 5.0], [6.0, 6.0]])
    )
    assert output.shape == features.shape and torch.isfinite(output).all()


def test_checkpointing_gives_the_same_output_and_gradients_and_keeps_one_key_sized_tensor() -> None:
    features, K, cam_to_world = transformer_inputs(3)
    grads, saved = [], []
    for checkpoint in (False, True):
        torch.manual_seed(1)
        model = EpipolarTransformer(channels=16, num_layers=2, num_heads=4, num_samples=8, downscale=2)
        model.checkpoint = checkpoint
        x = features.clone().requires_grad_(True)
        sizes: list[tuple[int, int]] = []

        def keep(tensor: torch.Tensor, sizes: list[tuple[int, int]] = sizes) -> torch.Tensor:
            sizes.append((tensor.numel(), tensor.untyped_storage().data_ptr()))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            output = model(x, K, cam_to_world, 0.5, 6.0)
        (output * torch.linspace(-1, 1, output.numel()).reshape(output.shape)).sum().backward()
        grads.append([x.grad, *(p.grad for p in model.parameters())])
        saved.append(sizes)
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, plain, rtol=1e-5, atol=1e-6)
    key_sized = 2 * 3 * (12 * 16) * 2 * 8 * 16  # B·V·(h·w)·(V − 1)·S·C at downscale 2
    kept = [{storage for numel, storage in sizes if numel >= key_sized} for sizes in saved]
    # Without checkpointing sampled features, depth encodings, keys and projections are kept for the
    # backward pass; with it only the normalised keys (the blocks' shared input).
    assert len(kept[0]) >= 4
    assert len(kept[1]) == 1
