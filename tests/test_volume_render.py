"""Volume rendering of the NeRF baseline (gs3.render.volume) against closed forms and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from gs3.cameras import Cameras
from gs3.render.volume import (
    composite,
    compositing_weights,
    density_alphas,
    hierarchical_edges,
    importance_positions,
    neus_alphas,
    neus_edge_alphas,
    pixel_rays,
    ray_box_intersection,
    section_midpoints,
    trilinear_lookup,
    uniform_edges,
)

D = torch.float64


# --- compositing: closed forms -----------------------------------------------------------------------------
def slab_render(edges: torch.Tensor, a: float, b: float, sigma: float, color: torch.Tensor, background):
    """Density sigma between distances a and b, zero elsewhere, sampled at section midpoints."""
    t, deltas = section_midpoints(edges)
    density = ((t > a) & (t < b)).to(D) * sigma
    weights, final = compositing_weights(density_alphas(density, deltas))
    colors = color.expand(*t.shape, 3)
    return t, weights, final, composite(weights, colors, final, background)


def test_constant_density_slab_gives_exp_transmittance_and_the_expected_colour():
    a, b, sigma = 1.0, 2.5, 1.7
    color, background = torch.tensor([0.2, 0.6, 0.9], dtype=D), torch.tensor([1.0, 0.5, 0.0], dtype=D)
    # 400 sections of 0.01 on [0, 4]: the slab's ends fall on edges, so the quadrature is exact
    edges = torch.linspace(0.0, 4.0, 401, dtype=D)[None]
    t, weights, final, rendered = slab_render(edges, a, b, sigma, color, background)
    opacity = 1 - np.exp(-sigma * (b - a))
    torch.testing.assert_close(final, torch.tensor([1 - opacity], dtype=D), rtol=1e-12, atol=0)
    torch.testing.assert_close(rendered[0], color * opacity + background * (1 - opacity), rtol=1e-12, atol=0)
    # the transmittance in front of every section: exp(−σ · (length of slab crossed so far))
    alphas = density_alphas(((t > a) & (t < b)).to(D) * sigma, edges[:, 1:] - edges[:, :-1])
    inside = alphas > 0
    crossed = (edges[:, :-1].clamp(a, b) - a)[inside]
    torch.testing.assert_close(
        weights[inside] / alphas[inside], torch.exp(-sigma * crossed), rtol=1e-12, atol=0
    )
    # expected distance: ∫ t σ e^{−σ(t−a)} dt over [a, b], evaluated at midpoints (error O(δ²))
    expected = a - b * np.exp(-sigma * (b - a)) + opacity / sigma
    distance = float((weights * t).sum())
    assert distance == pytest.approx(expected, abs=1e-4)


def test_slab_with_jittered_sections_stays_close_to_the_closed_form():
    a, b, sigma = 0.7, 1.9, 3.0
    generator = torch.Generator().manual_seed(0)
    near, far = torch.zeros(64, dtype=D), torch.full((64,), 3.0, dtype=D)
    edges = uniform_edges(near, far, 600, stratified=True, generator=generator)
    _, _, final, rendered = slab_render(edges, a, b, sigma, torch.ones(3, dtype=D), torch.zeros(3, dtype=D))
    # a section straddling an end of the slab is all in or all out: error ≤ σ·δ_max per end
    tolerance = 2 * sigma * float((edges[:, 1:] - edges[:, :-1]).max())
    assert (final - np.exp(-sigma * (b - a))).abs().max() < tolerance
    assert (rendered[:, 0] - (1 - np.exp(-sigma * (b - a)))).abs().max() < tolerance


def test_weights_sum_to_the_accumulated_alpha():
    alphas = torch.rand(50, 40, generator=torch.Generator().manual_seed(1), dtype=D)
    alphas[:5] *= 1e-3  # nearly empty rays
    alphas[5:10, 7] = 1.0  # fully opaque section
    weights, final = compositing_weights(alphas)
    torch.testing.assert_close(weights.sum(-1), 1 - torch.prod(1 - alphas, dim=-1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(weights.sum(-1) + final, torch.ones(50, dtype=D), rtol=0, atol=1e-14)
    assert (weights[5:10, 8:] == 0).all()  # nothing behind an opaque section
    # colour of a constant field = its accumulated alpha times the colour, plus T · background
    rendered = composite(weights, torch.full((50, 40, 1), 0.3, dtype=D), final, torch.ones(1, dtype=D))
    torch.testing.assert_close(rendered[:, 0], 0.3 * weights.sum(-1) + final, rtol=1e-12, atol=0)


def sphere_sdf(points: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    return (points - centre).norm(dim=-1) - radius


def test_neus_sphere_renders_its_depth_at_the_surface():
    """PonderV2's sampling (96 uniform + 36 importance, one round) and NeuS's α of a unit sphere 3 m away,
    sharpness 200/m: the expected distance Σwt/Σw lies within 1 mm of the analytic hit (5 rays, 4 of them
    off-centre), every ray is opaque, and a ray that misses the sphere renders (almost) nothing."""
    centre, radius = torch.tensor([0.1, -0.2, 3.0], dtype=D), 1.0
    directions = torch.tensor(
        [[0, 0, 1], [0.1, 0, 1], [0, -0.2, 1], [0.2, -0.1, 1], [0.0, -0.3, 1], [1.0, 0.0, 0.2]], dtype=D
    )
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = torch.zeros_like(directions)
    b = (directions * (origins - centre)).sum(-1)
    c = ((origins - centre) ** 2).sum(-1) - radius**2
    hits = -b - torch.sqrt(b * b - c)  # NaN for the last ray (it misses)

    def weights_at(edges, round_index):
        sdf = sphere_sdf(origins[:, None] + directions[:, None] * edges[..., None], centre, radius)
        return compositing_weights(neus_edge_alphas(sdf, 64.0 * 2**round_index))[0]

    near, far = torch.full((6,), 0.5, dtype=D), torch.full((6,), 6.0, dtype=D)
    edges = hierarchical_edges(near, far, 96, 36, 1, weights_at, stratified=False)
    assert edges.shape == (6, 133)
    t, deltas = section_midpoints(edges)
    points = origins[:, None] + directions[:, None] * t[..., None]
    normals = (points - centre) / (points - centre).norm(dim=-1, keepdim=True)
    slope = (normals * directions[:, None]).sum(-1)
    weights, _ = compositing_weights(neus_alphas(sphere_sdf(points, centre, radius), slope, deltas, 200.0))
    depth = (weights * t).sum(-1) / weights.sum(-1)
    assert (depth[:5] - hits[:5]).abs().max() < 1e-3
    assert weights[:5].sum(-1).min() > 0.999
    assert weights[5].sum() < 0.01  # only NeuS's ε per section


def test_neus_alpha_matches_the_exact_edge_form_on_a_plane():
    """For a plane (linear SDF along the ray) the midpoint estimate f ± slope·δ/2 is exact, so both forms
    agree: α = (Φ(f_i) − Φ(f_{i+1}) + ε) / (Φ(f_i) + ε)."""
    edges = torch.linspace(0.0, 4.0, 81, dtype=D)[None].expand(3, -1)
    slopes = torch.tensor([-1.0, -0.4, 0.5], dtype=D)[:, None]  # the last one faces away: clamped to 0
    sdf_edges = 2.0 + slopes * edges
    t, deltas = section_midpoints(edges)
    from_mid = neus_alphas(2.0 + slopes * t, slopes.expand_as(t), deltas, 30.0)
    from_edges = neus_edge_alphas(sdf_edges, 30.0)
    torch.testing.assert_close(from_mid[:2], from_edges[:2], rtol=1e-12, atol=1e-15)
    assert from_mid[2].max() < 2e-5  # seen from behind: nothing but ε


# --- sampling ----------------------------------------------------------------------------------------------
def test_uniform_edges_cover_near_to_far_in_jittered_strata():
    near, far = torch.tensor([0.5, 1.0], dtype=D), torch.tensor([2.5, 4.0], dtype=D)
    edges = uniform_edges(near, far, 10, stratified=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(edges[:, 0], near) and torch.equal(edges[:, -1], far)
    assert (edges[:, 1:] > edges[:, :-1]).all()
    regular = uniform_edges(near, far, 10, stratified=False)
    step = ((far - near) / 10)[:, None]
    assert ((edges - regular).abs() <= step / 2 + 1e-12).all()
    torch.testing.assert_close(regular[:, 1:] - regular[:, :-1], step.expand(-1, 10), rtol=1e-12, atol=0)


def piecewise_cdf(edges: np.ndarray, weights: np.ndarray):
    cdf = np.concatenate([[0.0], np.cumsum(weights / weights.sum())])
    return lambda x: np.interp(x, edges, cdf)


def test_importance_samples_are_drawn_in_proportion_to_the_weights():
    """Chi-square test of the counts per section and Kolmogorov–Smirnov test of the positions against the
    piecewise-uniform density, fixed seed; the same tests reject uniform sampling (they have power)."""
    generator = torch.Generator().manual_seed(0)
    edges = torch.sort(torch.rand(1, 21, generator=generator, dtype=D) * 3.0, dim=-1).values
    weights = torch.rand(1, 20, generator=generator, dtype=D) ** 3
    rays, per_ray = 400, 32
    samples = importance_positions(
        edges.expand(rays, -1), weights.expand(rays, -1), per_ray, stratified=True, generator=generator
    )
    assert (samples[:, 1:] >= samples[:, :-1]).all()
    flat = samples.flatten().numpy()
    e, w = edges[0].numpy(), weights[0].numpy()
    w_padded = w + 1e-5 / len(w)  # the padding importance_positions adds
    counts = np.histogram(flat, bins=e)[0]
    expected = w_padded / w_padded.sum() * flat.size
    keep = expected > 5
    chi2 = stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum())
    assert chi2.pvalue > 1e-3
    assert stats.kstest(flat, piecewise_cdf(e, w_padded)).pvalue > 1e-3
    uniform = np.random.default_rng(0).uniform(e[0], e[-1], flat.size)
    assert stats.kstest(uniform, piecewise_cdf(e, w_padded)).pvalue < 1e-6


def test_deterministic_importance_samples_invert_the_cdf_at_strata_centres():
    edges = torch.tensor([[0.0, 1.0, 1.5, 4.0]], dtype=D)
    weights = torch.tensor([[1.0, 3.0, 0.5]], dtype=D)
    samples = importance_positions(edges, weights, 8, stratified=False)[0].numpy()
    w = weights[0].numpy() + 1e-5 / 3
    cdf = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    expected = np.interp((np.arange(8) + 0.5) / 8, cdf, edges[0].numpy())  # inverse CDF by brute force
    np.testing.assert_allclose(samples, expected, rtol=1e-12, atol=1e-12)


def test_zero_weight_rays_sample_uniformly():
    edges = torch.linspace(1.0, 3.0, 5, dtype=D)[None]
    samples = importance_positions(edges, torch.zeros(1, 4, dtype=D), 4, stratified=False)
    torch.testing.assert_close(samples, torch.tensor([[1.25, 1.75, 2.25, 2.75]], dtype=D))


# --- rays --------------------------------------------------------------------------------------------------
def test_pixel_rays_pass_through_their_pixels_and_report_depth_per_distance():
    K = torch.tensor([[50.0, 0, 40], [0, 55.0, 30], [0, 0, 1]], dtype=D)
    angle = 0.4
    pose = torch.eye(4, dtype=D)
    pose[:3, :3] = torch.tensor(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]], dtype=D
    )
    pose[:3, 3] = torch.tensor([0.3, -1.0, 2.0], dtype=D)
    pixels = torch.tensor([[0.5, 0.5], [40.0, 30.0], [79.5, 12.25]], dtype=D)
    origins, directions, z_per_t = pixel_rays(K, pose, pixels)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(3, dtype=D))
    points = origins + 2.7 * directions
    projected, depth = Cameras(K, pose, 80, 60).world_to_pixels(points)
    torch.testing.assert_close(projected, pixels)
    torch.testing.assert_close(depth, 2.7 * z_per_t)


def test_ray_box_intersection_against_dense_point_tests():
    generator = torch.Generator().manual_seed(3)
    origins = torch.randn(200, 3, generator=generator, dtype=D) * 2
    directions = torch.randn(200, 3, generator=generator, dtype=D)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    directions[:10, 0] = 0.0  # parallel to a pair of faces
    low, high = torch.tensor([-1.0, -0.5, 0.0], dtype=D), torch.tensor([1.0, 0.5, 1.5], dtype=D)
    t_enter, t_exit, hit = ray_box_intersection(origins, directions, low.expand(200, 3), high.expand(200, 3))
    t = torch.linspace(0.0, 8.0, 8001, dtype=D)
    points = origins[:, None] + directions[:, None] * t[:, None]
    inside = ((points >= low) & (points <= high)).all(-1)
    brute_hit = inside.any(-1)
    assert torch.equal(hit, brute_hit)
    first = torch.where(inside, t, np.inf).amin(-1)
    last = torch.where(inside, t, -np.inf).amax(-1)
    assert (first[hit] - t_enter[hit].clamp_min(0)).abs().max() <= 1e-3 + 1e-9
    assert (last[hit] - t_exit[hit]).abs().max() <= 1e-3 + 1e-9


# --- trilinear lookup --------------------------------------------------------------------------------------
def test_trilinear_lookup_matches_grid_sample_and_its_gradients():
    generator = torch.Generator().manual_seed(0)
    shape, channels = (4, 5, 3), 6
    volume = torch.randn(2, *shape, channels, generator=generator, dtype=D, requires_grad=True)
    points = torch.rand(50, 3, generator=generator, dtype=D) * torch.tensor(shape, dtype=D) - 0.5
    points[:5] = points[:5] * 3 - 2  # some outside: the border's value
    points.requires_grad_(True)
    sample = torch.randint(0, 2, (50,), generator=generator)
    base = sample * (shape[0] * shape[1] * shape[2])
    ours = trilinear_lookup(volume.reshape(-1, channels), points, shape, base)
    # grid_sample: (N, C, D, H, W) with grid (x → W, y → H, z → D); our axes (x, y, z) are (D, H, W)
    sizes = torch.tensor(shape, dtype=D) - 1
    normalised = (points / sizes * 2 - 1).flip(-1)
    reference = torch.cat(
        [
            F.grid_sample(
                volume[s].permute(3, 0, 1, 2)[None],
                normalised[sample == s][None, None, None],
                align_corners=True,
                padding_mode="border",
            )[0, :, 0, 0].T
            for s in range(2)
        ]
    )
    order = torch.cat([torch.nonzero(sample == s)[:, 0] for s in range(2)])
    torch.testing.assert_close(ours[order], reference, rtol=1e-12, atol=1e-12)
    weights = torch.randn(50, channels, generator=generator, dtype=D)
    ours_grads = torch.autograd.grad((ours[order] * weights).sum(), [volume, points])
    reference_grads = torch.autograd.grad((reference * weights).sum(), [volume, points])
    for a, b in zip(ours_grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_trilinear_lookup_is_twice_differentiable():
    """gradcheck and gradgradcheck (finite differences, float64): the eikonal term differentiates the
    lookup's gradient with respect to the points again, with respect to the volume and the points."""
    generator = torch.Generator().manual_seed(1)
    shape = (3, 4, 3)
    volume = torch.randn(shape[0] * shape[1] * shape[2], 2, generator=generator, dtype=D, requires_grad=True)
    # strictly inside cells (trilinear interpolation is not differentiable across cell faces)
    points = (
        torch.rand(6, 3, generator=generator, dtype=D) * 0.8 + 0.1 + torch.tensor([0.0, 1.0, 1.0])
    ).requires_grad_(True)

    def lookup(v, p):
        return trilinear_lookup(v, p, shape)

    assert torch.autograd.gradcheck(lookup, (volume, points))
    assert torch.autograd.gradgradcheck(lookup, (volume, points))


def naive_trilinear(values, coords, shape):
    """Plain autograd reference: gather the 8 corners, weight and sum (twice differentiable by autograd)."""
    from gs3.render.volume import trilinear_corners

    index, weights = trilinear_corners(coords, shape)
    return (values[index] * weights[..., None]).sum(dim=1)


def test_eikonal_style_second_order_gradients_through_a_computed_volume():
    """The NeRF's loss differentiates ∇_p f again: L = Σ (|∇_p f| − 1)² + Σ f with f = MLP(lookup(V(θ), p)),
    V computed from a parameter θ (not a leaf, as in the model). θ's and the MLP's gradients equal those of
    the naive lookup (which autograd differentiates by itself), so the skipped ∂/∂V inside autograd.grad
    is never one that was needed."""
    generator = torch.Generator().manual_seed(4)
    shape, channels = (4, 3, 5), 6
    theta = torch.randn(
        shape[0] * shape[1] * shape[2], channels, generator=generator, dtype=D, requires_grad=True
    )
    mlp = torch.nn.Sequential(
        torch.nn.Linear(channels, 8), torch.nn.Softplus(beta=10), torch.nn.Linear(8, 1)
    ).to(D)
    coords = torch.rand(40, 3, generator=generator, dtype=D) * (torch.tensor(shape, dtype=D) - 1)

    def loss_and_grads(lookup):
        points = coords.clone().requires_grad_(True)
        sdf = mlp(lookup(torch.tanh(theta) * 2.0, points, shape))[:, 0]
        (gradient,) = torch.autograd.grad(sdf, points, torch.ones_like(sdf), create_graph=True)
        loss = (gradient.norm(dim=-1) - 1).square().sum() + sdf.sum()
        return torch.autograd.grad(loss, [theta, *mlp.parameters()])

    ours = loss_and_grads(lambda v, p, s: trilinear_lookup(v, p, s))
    reference = loss_and_grads(naive_trilinear)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
