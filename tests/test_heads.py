"""Gaussian heads and adapter: geometry against float64 re-projection, bins by hand, opacity = bin
probability, gradients into the depth logits, bounds, masking counts, rotations against matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gs3.cameras import Cameras
from gs3.errors import ConfigError
from gs3.gaussians import HEADS, DepthBinHead, GaussianAdapter, Gaussians, PointOffsetHead, quat_to_rotmat
from gs3.gaussians.adapter import (
    focal_pixels,
    quat_multiply,
    quats_from_raw,
    rotmat_to_quat,
    scales_from_raw,
    sh_from_raw,
)
from gs3.gaussians.heads import pdf_to_opacity, point_footprints, sample_index


def random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quat_to_rotmat(q / q.norm(dim=-1, keepdim=True))


def make_cameras(b: int, v: int, h: int, w: int, seed: int = 0) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    K = torch.zeros(b, v, 3, 3, dtype=torch.float64)
    K[..., 0, 0] = 18.0 + 4 * torch.rand(b, v, generator=g, dtype=torch.float64)
    K[..., 1, 1] = 20.0 + 4 * torch.rand(b, v, generator=g, dtype=torch.float64)
    K[..., 0, 2] = w / 2 + torch.rand(b, v, generator=g, dtype=torch.float64) - 0.5
    K[..., 1, 2] = h / 2 + torch.rand(b, v, generator=g, dtype=torch.float64) - 0.5
    K[..., 2, 2] = 1.0
    c2w = torch.eye(4, dtype=torch.float64).repeat(b, v, 1, 1)
    c2w[..., :3, :3] = random_rotations(b * v, g).reshape(b, v, 3, 3)
    c2w[..., :3, 3] = 3 * torch.randn(b, v, 3, generator=g, dtype=torch.float64)
    return Cameras(K, c2w, w, h)


B, V, C, H, W = 2, 2, 8, 6, 7


@pytest.fixture
def setup():
    torch.manual_seed(0)
    cameras64 = make_cameras(B, V, H, W)
    features = torch.randn(B, V, C, H, W)
    visible = torch.rand(B, V, H, W, generator=torch.Generator().manual_seed(1)) < 0.5
    return cameras64, features, visible


def make_head(k: int = 2, spacing: str = "disparity", **kwargs) -> DepthBinHead:
    torch.manual_seed(2)
    head = DepthBinHead(C, near=0.5, far=10.0, num_bins=16, k=k, spacing=spacing, **kwargs)
    with torch.no_grad():  # spread the logits and offsets so bins and offsets differ from pixel to pixel
        head.mlp[2].weight.mul_(30.0)
    return head.eval()  # top-k bins; drawing them in training is tested on its own


# ------------------------------------------------------------------------------------------ adapter


def test_rotmat_to_quat_round_trip_at_every_angle():
    g = torch.Generator().manual_seed(3)
    rotations = [random_rotations(200, g)]
    for axis in torch.eye(3, dtype=torch.float64):  # 180° turns: w = 0, the fragile case
        x, y, z = axis.tolist()
        rotations.append(quat_to_rotmat(torch.tensor([[0.0, x, y, z]], dtype=torch.float64)))
    rotations.append(torch.eye(3, dtype=torch.float64)[None])
    rotations = torch.cat(rotations)
    quats = rotmat_to_quat(rotations)
    torch.testing.assert_close(quats.norm(dim=-1), torch.ones(len(quats), dtype=torch.float64))
    torch.testing.assert_close(quat_to_rotmat(quats), rotations, atol=1e-12, rtol=0)


def test_quat_multiply_composes_rotations():
    g = torch.Generator().manual_seed(4)
    a, b = (rotmat_to_quat(random_rotations(50, g)) for _ in range(2))
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b))


def test_adapter_maps_raw_numbers():
    adapter = GaussianAdapter(sh_degree=2, min_scale=0.5, max_scale=15.0, sh_decay=0.25)
    raw = torch.zeros(5, adapter.raw_channels(with_opacity=True))
    raw[:, 0] = torch.tensor([-50.0, -1.0, 0.0, 1.0, 50.0])  # first scale axis: through the whole sigmoid
    raw[:, 7] = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.0])  # opacity
    raw[:, 8:] = 1.0  # all SH coefficients 1
    footprint = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05])
    out = adapter(raw, footprint, with_opacity=True)
    sigmoid = 1 / (1 + np.exp(-np.array([-50.0, -1.0, 0.0, 1.0, 50.0])))
    expected = footprint.numpy() * (0.5 + 14.5 * sigmoid)
    np.testing.assert_allclose(out["scales"][:, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(out["scales"][:, 1].numpy(), footprint.numpy() * 7.75, rtol=1e-6)
    assert bool((out["scales"] >= 0.5 * footprint[:, None] - 1e-9).all())
    assert bool((out["scales"] <= 15.0 * footprint[:, None] + 1e-9).all())
    torch.testing.assert_close(out["quats"], torch.tensor([[1.0, 0, 0, 0]]).expand(5, 4))  # raw 0 = identity
    torch.testing.assert_close(out["opacities"], torch.sigmoid(raw[:, 7]))
    assert out["sh"].shape == (5, 9, 3)
    # degree 0: ×1, degree 1 (3 coefficients): ×0.25, degree 2 (5): ×0.0625
    per_coefficient = torch.tensor([1.0] + [0.25] * 3 + [0.0625] * 5)
    torch.testing.assert_close(out["sh"], per_coefficient[None, :, None].expand(5, 9, 3))


def test_adapter_quaternions_are_unit_and_scales_positive():
    g = torch.Generator().manual_seed(5)
    raw_q = 3 * torch.randn(1000, 4, generator=g)
    torch.testing.assert_close(quats_from_raw(raw_q).norm(dim=-1), torch.ones(1000))
    scales = scales_from_raw(30 * torch.randn(1000, 3, generator=g), torch.full((1000,), 1e-3), 0.5, 15.0)
    assert bool((scales > 0).all())
    with pytest.raises(ValueError, match="needs 48 channels"):
        sh_from_raw(torch.zeros(3, 12), 3, 0.25)
    with pytest.raises(ConfigError, match="sh_degree"):
        GaussianAdapter(sh_degree=4)


def test_pdf_to_opacity_fixes_ends_and_is_monotone():
    p = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.equal(pdf_to_opacity(p, 1.0), p)
    o = pdf_to_opacity(p, 4.0)
    assert abs(float(o[0])) < 1e-2 and abs(float(o[-1]) - 1) < 1e-12
    assert bool((o[1:] > o[:-1]).all()) and bool((o[1:-1] > p[1:-1]).all())
    assert abs(float(o[30]) - 0.5 * (1 - 0.7**4 + 0.3**0.25)) < 1e-12


# ------------------------------------------------------------------------------------------ depth-bin head


@pytest.mark.parametrize("spacing", ["disparity", "depth"])
def test_means_lie_on_pixel_rays_inside_their_bins(setup, spacing):
    cameras64, features, _ = setup
    head = make_head(k=2, spacing=spacing)
    with torch.no_grad():
        dense = head.dense(features, cameras64.to(torch.float32))
    # Re-project every mean with float64 cameras into the view it came from: it must hit its pixel centre.
    means = dense.means.double().reshape(B, V, H * W * 2, 3)
    pixels, depth = cameras64.world_to_pixels(means)
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    centres = (
        torch.stack([u + 0.5, v + 0.5], dim=-1).double()[:, :, None, :].expand(H, W, 2, 2).reshape(-1, 2)
    )
    assert float((pixels - centres).abs().max()) < 1e-3
    torch.testing.assert_close(depth.reshape(dense.depths.shape), dense.depths.double(), rtol=1e-5, atol=0)
    # depths in [near, far] and inside the chosen bin; bins match the spacing's formula
    edges = head.bin_edges()
    if spacing == "disparity":
        expected = 1 / torch.linspace(1 / 0.5, 1 / 10.0, 17, dtype=torch.float64)
    else:
        expected = torch.linspace(0.5, 10.0, 17, dtype=torch.float64)
    torch.testing.assert_close(edges, expected)
    d = dense.depths.double()
    assert bool(((d >= 0.5 - 1e-6) & (d <= 10.0 + 1e-5)).all())
    lower, upper = edges[dense.bin_index], edges[dense.bin_index + 1]
    assert bool(((d >= lower * (1 - 1e-6)) & (d <= upper * (1 + 1e-6))).all())
    assert len(torch.unique(dense.bin_index)) > 4  # the test sees many different bins
    # top-k: the two bins are distinct and the most probable ones
    assert bool((dense.bin_index[..., 0] != dense.bin_index[..., 1]).all())
    torch.testing.assert_close(dense.opacities[..., 0], dense.probabilities.max(dim=-1).values)


def hand_made_head(k: int) -> DepthBinHead:
    """Every pixel: p = (1, 2, 5, 1) / 9 over bins with disparity edges 1 … 0.2; offsets 0.5."""
    head = DepthBinHead(4, near=1.0, far=5.0, num_bins=4, k=k, adapter=GaussianAdapter(sh_degree=0))
    with torch.no_grad():
        head.mlp[2].weight.zero_()
        bias = torch.zeros_like(head.mlp[2].bias)
        bias[:4] = torch.tensor([0.0, math.log(2.0), math.log(5.0), 0.0])
        head.mlp[2].bias.copy_(bias)  # offsets raw 0 → sigmoid 0.5: bin middles
    return head


def test_training_draws_bins_in_proportion_to_probability():
    head = hand_made_head(k=1).train()
    K = torch.tensor([[10.0, 0, 50.0], [0, 10.0, 50.0], [0, 0, 1]])
    cameras = Cameras(K[None, None], torch.eye(4)[None, None], 100, 100)
    torch.manual_seed(6)
    dense = head.dense(torch.zeros(1, 1, 4, 100, 100), cameras)
    frequency = torch.bincount(dense.bin_index.flatten(), minlength=4).double() / 10_000
    # 10,000 draws: each frequency within 4 standard deviations (≤ 0.02) of p
    probability = torch.tensor([1.0, 2.0, 5.0, 1.0]) / 9
    torch.testing.assert_close(frequency, probability.double(), atol=0.02, rtol=0)
    torch.testing.assert_close(dense.opacities[..., 0], probability[dense.bin_index[..., 0]])
    # k = 3 draws without replacement; sampling off → the top-k even in training
    head3 = hand_made_head(k=3).train()
    index3 = head3.dense(torch.zeros(1, 1, 4, 100, 100), cameras).bin_index.reshape(-1, 3)
    assert bool((index3.sort(dim=-1).values.diff(dim=-1) > 0).all())
    assert len({tuple(row) for row in index3.tolist()}) > 4
    head3.sample_in_training = False
    top = head3.dense(torch.zeros(1, 1, 4, 2, 2), Cameras(K[None, None], torch.eye(4)[None, None], 2, 2))
    for row in top.bin_index.reshape(-1, 3).tolist():  # bins 0 and 3 tie for third
        assert row[:2] == [2, 1] and row[2] in (0, 3)


def test_small_case_by_hand():
    head = hand_made_head(k=2).eval()
    K = torch.tensor([[10.0, 0, 1.0], [0, 10.0, 1.0], [0, 0, 1]])
    cameras = Cameras(K[None, None], torch.eye(4)[None, None], 2, 2)
    dense = head.dense(torch.zeros(1, 1, 4, 2, 2), cameras)
    # disparity edges 1, 0.8, 0.6, 0.4, 0.2: bin 2 middle disparity 0.5 → depth 2; bin 1: 0.7 → 1/0.7
    torch.testing.assert_close(dense.bin_index[0, 0, 0, 0], torch.tensor([2, 1]))
    torch.testing.assert_close(dense.opacities[0, 0, 0, 0], torch.tensor([5 / 9, 2 / 9]))
    torch.testing.assert_close(dense.depths[0, 0, 0, 0], torch.tensor([2.0, 1 / 0.7]))
    # pixel (0, 0) has centre (0.5, 0.5): ray direction ((0.5 − 1)/10, (0.5 − 1)/10, 1)
    torch.testing.assert_close(dense.means[0, 0, 0, 0, 0], torch.tensor([-0.1, -0.1, 2.0]))
    # scale bounds: footprint = depth / f = 0.2 m; raw 0 → (0.5 + 14.5/2) footprints
    torch.testing.assert_close(dense.scales[0, 0, 0, 0, 0], torch.full((3,), 0.2 * 7.75))


def test_gradient_reaches_depth_logits_through_opacity(setup):
    cameras64, features, _ = setup
    head = make_head(k=2)
    cameras = cameras64.to(torch.float32)
    logits_rows = slice(0, head.num_bins)

    def logit_grad(loss_of) -> torch.Tensor:
        head.zero_grad()
        loss_of(head.dense(features, cameras)).backward()
        return head.mlp[2].weight.grad[logits_rows].clone()

    weights = torch.randn(B, V, H, W, 2)
    grad_opacity = logit_grad(lambda d: (d.opacities * weights).sum())
    assert float(grad_opacity.abs().max()) > 1e-4
    # means, scales (through depth) do not depend on the logits: only opacity carries their gradient
    assert float(logit_grad(lambda d: d.means.sum() + d.scales.sum()).abs().max()) == 0.0
    # and the gradient is that of the softmax: d p_i / d l_j = p_i (δ_ij − p_j), checked on the raw logits
    x = features.permute(0, 1, 3, 4, 2)
    logits = head.mlp(x)[..., logits_rows].detach().requires_grad_(True)
    p = torch.softmax(logits, -1)
    top_p, _ = p.topk(2, dim=-1)
    (top_p * weights).sum().backward()
    with torch.no_grad():
        dense = head.dense(features, cameras)
        g_analytic = torch.zeros_like(logits)
        for j in range(2):
            i = dense.bin_index[..., j]
            p_i = torch.gather(p, -1, i[..., None])
            onehot = torch.nn.functional.one_hot(i, head.num_bins).float()
            g_analytic += weights[..., j, None] * p_i * (onehot - p)
    torch.testing.assert_close(logits.grad, g_analytic, rtol=1e-4, atol=1e-7)


def test_learned_opacity_multiplies_bin_probability(setup):
    cameras64, features, _ = setup
    head = make_head(k=1, learned_opacity=True)
    with torch.no_grad():
        dense = head.dense(features, cameras64.to(torch.float32))
    ratio = dense.opacities / dense.probabilities.max(dim=-1).values[..., None]
    assert bool(((ratio > 0) & (ratio < 1)).all()) and float(ratio.std()) > 1e-3


def test_rotations_are_predicted_in_camera_frame(setup):
    cameras64, features, _ = setup
    head = make_head(k=1)
    cameras = cameras64.to(torch.float32)
    dense = head.dense(features, cameras)
    raw = head.mlp(features.permute(0, 1, 3, 4, 2))[..., 2 * head.num_bins :].unflatten(-1, (1, -1))
    local = quat_to_rotmat(quats_from_raw(raw[..., 3:7])).double()
    R = cameras64.cam_to_world[:, :, None, None, None, :3, :3]
    torch.testing.assert_close(quat_to_rotmat(dense.quats).double(), R @ local, atol=1e-5, rtol=0)


def test_masked_pixels_produce_no_gaussians(setup):
    cameras64, features, visible = setup
    head = make_head(k=2)
    cameras = cameras64.to(torch.float32)
    out = head(features, cameras, visible)
    dense = head.dense(features, cameras)
    assert len(out) == B
    for b, gaussians in enumerate(out):
        assert isinstance(gaussians, Gaussians)
        gaussians.check()  # finite, positive scales, opacities in [0, 1], non-zero quaternions
        assert len(gaussians) == 2 * int(visible[b].sum())
        torch.testing.assert_close(gaussians.quats.norm(dim=-1), torch.ones(len(gaussians)))
        torch.testing.assert_close(gaussians.means, dense.means[b][visible[b]].reshape(-1, 3))
        assert gaussians.sh.shape[1:] == (16, 3)
    full = head(features, cameras)
    assert [len(g) for g in full] == [2 * V * H * W] * B
    none = head(features, cameras, torch.zeros_like(visible))
    assert [len(g) for g in none] == [0, 0]


def test_gradient_reaches_every_head_parameter(setup):
    cameras64, features, visible = setup
    head = make_head(k=2, learned_opacity=True)
    out = head(features.requires_grad_(True), cameras64.to(torch.float32), visible)
    loss = sum(
        (g.means.sum() + g.scales.sum() + g.quats[:, 1:].sum() + g.opacities.sum() + g.sh.sum()) for g in out
    )
    loss.backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name
    assert float(features.grad.abs().sum()) > 0


def test_head_registry_and_config_errors():
    assert {"depth_bin", "point_offset"} <= set(HEADS.names())
    head = HEADS.build({"type": "depth_bin", "in_channels": 4, "near": 0.1, "far": 8.0})
    assert isinstance(head, DepthBinHead) and head.k == 1 and head.spacing == "disparity"
    with pytest.raises(ConfigError, match="near"):
        DepthBinHead(4, near=2.0, far=1.0)
    with pytest.raises(ConfigError, match="spacing"):
        DepthBinHead(4, near=1.0, far=2.0, spacing="log")
    with pytest.raises(ConfigError, match="initial_prior"):
        DepthBinHead(4, near=1.0, far=2.0, initial_prior="flat")


def test_log_uniform_prior_before_training():
    head = DepthBinHead(4, near=0.2, far=10.0, num_bins=64, initial_prior="log_uniform_depth")
    with torch.no_grad():  # the last layer's weights start small: its bias is the starting distribution
        head.mlp[2].weight.zero_()
        p = head.dense(torch.randn(1, 1, 4, 1, 1), make_cameras(1, 1, 1, 1).to(torch.float32)).probabilities
    p = p.reshape(-1).double()
    edges = head.bin_edges()
    # mass of each bin = its share of log(far / near); half of it below sqrt(near · far) = 1.414 m
    torch.testing.assert_close(p, (edges[1:] / edges[:-1]).log() / math.log(50.0), rtol=1e-5, atol=0)
    assert abs(float(p[edges[1:] <= math.sqrt(2.0)].sum()) - 0.5) < float(p.max())


# ------------------------------------------------------------------------------------------ point-offset head


def make_points(seed: int = 6):
    g = torch.Generator().manual_seed(seed)
    offset = torch.tensor([30, 75])
    coord = torch.randn(75, 3, generator=g)
    features = torch.randn(75, C, generator=g)
    visible = torch.rand(75, generator=g) < 0.5
    return coord, features, offset, visible


def test_point_offsets_are_bounded_and_masked():
    coord, features, offset, visible = make_points()
    head = PointOffsetHead(C, k=3, max_offset=0.04, adapter=GaussianAdapter(sh_degree=1))
    with torch.no_grad():
        head.mlp[2].weight.mul_(1000.0)  # saturate tanh: offsets at the bound, never beyond
    dense = head.dense(features, coord, 0.01)
    delta = (dense["means"] - coord[:, None, :]).detach()
    assert float(delta.abs().max()) <= 0.04 + 1e-6 and float(delta.abs().max()) > 0.039
    out = head(features, coord, offset, visible, footprint=0.01)
    sample = sample_index(offset, len(coord))
    for b, gaussians in enumerate(out):
        gaussians.check()
        mask = (sample == b) & visible
        assert len(gaussians) == 3 * int(mask.sum())
        torch.testing.assert_close(gaussians.means, dense["means"][mask].reshape(-1, 3))
        assert (
            float((gaussians.means.detach() - coord[mask].repeat_interleave(3, 0)).abs().max()) <= 0.04 + 1e-6
        )
        assert bool(((gaussians.opacities >= 0) & (gaussians.opacities <= 1)).all())  # saturated here
        torch.testing.assert_close(gaussians.quats.norm(dim=-1), torch.ones(len(gaussians)))
        assert bool((gaussians.scales >= 0.5 * 0.01 - 1e-7).all() and (gaussians.scales <= 0.15 + 1e-6).all())


def test_point_head_gradients_and_counts_without_mask():
    coord, features, offset, _ = make_points(7)
    head = PointOffsetHead(C)
    out = head(features, coord, offset)
    assert [len(g) for g in out] == [30, 45]
    sum(
        g.means.sum() + g.scales.sum() + g.opacities.sum() + g.sh.sum() + g.quats[:, 1:].sum() for g in out
    ).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name
    with pytest.raises(ValueError, match="offset"):
        head(features, coord, torch.tensor([30, 70]))


def test_point_footprints_match_float64_geometry():
    cameras = make_cameras(2, 2, 6, 7, seed=8)
    g = torch.Generator().manual_seed(9)
    offset = torch.tensor([4, 10])
    point_view = torch.randint(0, 2, (10,), generator=g)
    depth = 1 + 3 * torch.rand(10, generator=g, dtype=torch.float64)
    pixels = torch.rand(10, 2, generator=g, dtype=torch.float64) * 6
    sample = torch.tensor([0] * 4 + [1] * 6)
    coord = torch.stack(
        [
            cameras[int(s), int(v)].pixels_to_world(p[None], d[None])[0]
            for s, v, p, d in zip(sample, point_view, pixels, depth)
        ]
    )
    footprint = point_footprints(coord, point_view, offset, cameras.K, cameras.cam_to_world)
    focal = torch.sqrt(cameras.K[sample, point_view, 0, 0] * cameras.K[sample, point_view, 1, 1])
    torch.testing.assert_close(footprint, depth / focal)
    torch.testing.assert_close(focal_pixels(cameras.K)[sample, point_view], focal)
