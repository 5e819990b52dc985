"""Volume rendering: per-section opacities α from a density or a signed distance, weights, compositing.

Quadrature (NeRF): with sections of length δ_i along a ray and opacity α_i each,
    T_i = Π_{j<i} (1 − α_j),   w_i = α_i T_i,   colour = Σ w_i c_i + T_S · background,
so Σ w_i = 1 − T_S, the ray's accumulated alpha. Depth is Σ w_i t_i (un-normalised expected distance, the
rasterizer's convention; divide by the accumulated alpha for the depth of the visible surface).

- Density σ (NeRF): α_i = 1 − exp(−σ_i δ_i), exact for σ constant over the section.
- Signed distance f (NeuS, as PonderV2): with Φ_s the logistic sigmoid of slope s (s = 1/standard
  deviation, learned), α = max(0, (Φ_s(f_prev) − Φ_s(f_next)) / Φ_s(f_prev)); f at the section's ends is
  estimated from f at its midpoint and the directional derivative d·∇f there, f ± (d·∇f)·δ/2, where d·∇f is
  first clamped to ≤ 0 (PonderV2's cos_anneal_ratio = 1: a surface seen from behind renders nothing).
  `neus_edge_alphas` is the same rule with f known at the edges, for importance sampling (no gradient).
  A 1e-5 is added to numerator and denominator (NeuS/PonderV2) so that deep inside (Φ → 0) α stays finite.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

NEUS_EPS = 1e-5


def density_alphas(density: Float[Tensor, "r s"], deltas: Float[Tensor, "r s"]) -> Float[Tensor, "r s"]:
    """α = 1 − exp(−σ δ) (−expm1 for accuracy at small optical depth)."""
    return -torch.expm1(-density * deltas)


def neus_alphas(
    sdf: Float[Tensor, "r s"],
    slope: Float[Tensor, "r s"],
    deltas: Float[Tensor, "r s"],
    inv_s: Float[Tensor, ""] | float,
) -> Float[Tensor, "r s"]:
    """NeuS opacity of every section from the SDF at its midpoint and the SDF's slope d·∇f along the ray."""
    descent = -torch.relu(-slope)
    previous = torch.sigmoid((sdf - descent * deltas * 0.5) * inv_s)
    following = torch.sigmoid((sdf + descent * deltas * 0.5) * inv_s)
    return ((previous - following + NEUS_EPS) / (previous + NEUS_EPS)).clamp(0.0, 1.0)


def neus_edge_alphas(sdf_edges: Float[Tensor, "r s1"], inv_s: float) -> Float[Tensor, "r s"]:
    """NeuS opacity of every section from the SDF at its two ends (importance sampling)."""
    cdf = torch.sigmoid(sdf_edges * inv_s)
    previous, following = cdf[:, :-1], cdf[:, 1:]
    return ((previous - following + NEUS_EPS) / (previous + NEUS_EPS)).clamp(0.0, 1.0)


def compositing_weights(alphas: Float[Tensor, "r s"]) -> tuple[Float[Tensor, "r s"], Float[Tensor, " r"]]:
    """w_i = α_i Π_{j<i}(1 − α_j), and the transmittance T_S left after the last section."""
    survive = 1.0 - alphas
    transmittance = torch.cumprod(torch.cat([torch.ones_like(survive[:, :1]), survive], dim=-1), dim=-1)
    return alphas * transmittance[:, :-1], transmittance[:, -1]


def composite(
    weights: Float[Tensor, "r s"],
    values: Float[Tensor, "r s c"],
    final_transmittance: Float[Tensor, " r"] | None = None,
    background: Float[Tensor, "*r c"] | None = None,
) -> Float[Tensor, "r c"]:
    """Σ w_i v_i, plus T_S · background when both are given."""
    out = torch.einsum("rs,rsc->rc", weights, values)
    if background is not None and final_transmittance is not None:
        out = out + final_transmittance[:, None] * background
    return out
