"""Where to evaluate a field along rays: stratified uniform sections, then importance samples.

A ray's samples are *sections* between sorted edges t_0 < t_1 < … < t_S (distances along the ray); the
field is evaluated once per section, at its midpoint, and a section's length is its δ in the quadrature.

- `uniform_edges`: S sections between near and far; in training the S − 1 interior edges are jittered
  uniformly within ±½ section of their regular place (stratified sampling), the ends stay at near and far.
- `importance_positions`: positions drawn from the piecewise-constant density that puts mass w_i uniformly
  on section i (inverse transform sampling of its CDF). Stratified: one uniform draw in each of n equal
  strata of [0, 1) (lower variance than n independent draws, same distribution per draw); deterministic:
  the strata's centres.
- `hierarchical_edges`: uniform sections, then `steps` rounds of importance sampling, each round's new
  positions merged into the edges (PonderV2 / NeuS: 96 uniform + 36 importance in one round gives 132
  sections). The weights come from a caller-supplied function of the current edges and the round, so
  this module knows nothing about the field it samples.

Positions are never differentiated: the edges returned are detached (as in NeRF/NeuS).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

# Added to the weights so that a ray with (almost) no weight samples uniformly instead of dividing by zero.
WEIGHT_PADDING = 1e-5


def uniform_edges(
    near: Float[Tensor, " r"],
    far: Float[Tensor, " r"],
    num_sections: int,
    stratified: bool,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "r s1"]:
    """S + 1 sorted edges from near to far (S = num_sections), interior ones jittered when stratified."""
    if num_sections < 1:
        raise ValueError(f"uniform_edges: num_sections must be >= 1, got {num_sections}")
    steps = torch.arange(num_sections + 1, dtype=near.dtype, device=near.device).expand(near.shape[0], -1)
    if stratified and num_sections > 1:
        jitter = torch.rand(
            (near.shape[0], num_sections - 1), generator=generator, dtype=near.dtype, device=near.device
        )
        interior = steps[:, 1:-1] + jitter - 0.5
        steps = torch.cat([steps[:, :1], interior, steps[:, -1:]], dim=-1)
    fraction = steps / num_sections
    return near[:, None] + fraction * (far - near)[:, None]


def importance_positions(
    edges: Float[Tensor, "r s1"],
    weights: Float[Tensor, "r s"],
    num: int,
    stratified: bool,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "r n"]:
    """`num` sorted positions per ray drawn from the density proportional to `weights` (uniform within a
    section). Weights must be >= 0; a small padding keeps all-zero rays uniform."""
    edges, weights = edges.detach(), weights.detach()
    rays = edges.shape[0]
    weights = weights + WEIGHT_PADDING / weights.shape[-1]
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    cdf[:, -1] = 1.0  # exactly, despite rounding
    strata = torch.arange(num, dtype=edges.dtype, device=edges.device).expand(rays, -1)
    if stratified:
        offset = torch.rand((rays, num), generator=generator, dtype=edges.dtype, device=edges.device)
    else:
        offset = torch.full((rays, num), 0.5, dtype=edges.dtype, device=edges.device)
    u = ((strata + offset) / num).contiguous()
    section = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, weights.shape[-1] - 1)
    cdf_low, cdf_high = cdf.gather(-1, section), cdf.gather(-1, section + 1)
    t_low, t_high = edges.gather(-1, section), edges.gather(-1, section + 1)
    fraction = ((u - cdf_low) / (cdf_high - cdf_low).clamp_min(1e-12)).clamp(0.0, 1.0)
    return t_low + fraction * (t_high - t_low)


def merge_edges(edges: Float[Tensor, "r s1"], positions: Float[Tensor, "r n"]) -> Float[Tensor, "r m"]:
    """The sorted union of a ray's edges and new positions (every new position splits a section)."""
    return torch.sort(torch.cat([edges, positions], dim=-1), dim=-1).values


def hierarchical_edges(
    near: Float[Tensor, " r"],
    far: Float[Tensor, " r"],
    num_uniform: int,
    num_importance: int,
    steps: int,
    section_weights: Callable[[Tensor, int], Tensor],
    stratified: bool,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "r m"]:
    """Edges of num_uniform + num_importance sections per ray (see the module docstring).

    `section_weights(edges, round)` returns the (R, S) compositing weights of the current sections; it
    runs without gradient. The importance samples are split as evenly as possible over the rounds."""
    edges = uniform_edges(near, far, num_uniform, stratified, generator)
    if num_importance == 0:
        return edges
    if steps < 1:
        raise ValueError(f"hierarchical_edges: steps must be >= 1 when sampling by importance, got {steps}")
    per_round = [num_importance // steps + (1 if i < num_importance % steps else 0) for i in range(steps)]
    for round_index, count in enumerate(per_round):
        if count == 0:
            continue
        with torch.no_grad():
            weights = section_weights(edges, round_index)
        edges = merge_edges(edges, importance_positions(edges, weights, count, stratified, generator))
    return edges.detach()


def section_midpoints(edges: Float[Tensor, "r s1"]) -> tuple[Float[Tensor, "r s"], Float[Tensor, "r s"]]:
    """Midpoint and length δ of every section."""
    return 0.5 * (edges[:, 1:] + edges[:, :-1]), edges[:, 1:] - edges[:, :-1]
