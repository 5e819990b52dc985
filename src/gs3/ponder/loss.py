"""The NeRF baseline's loss on its rendered rays (PonderV2's terms; weights from gs3.config.LossConfig).

    colour     MSE (as GS³) or L1 (PonderV2) of the ray colours against the real pixels, over every ray.
    depth      L1 of the rendered expected distance Σ wᵢtᵢ against the sensor's distance along the ray, on
               rays with valid sensor depth (depth supervision: off unless loss.depth_weight > 0).
    sdf        |tᵢ + f(tᵢ) − d| for samples within ±truncation of the sensor distance d (a near-surface
               sample's SDF should be the distance left to the surface).
    free_space relu(truncation − f(tᵢ)) for samples in front of that band (empty space keeps f ≥ truncation).
    eikonal    (|∇f| − 1)² at every sample (needs no depth).

The sdf and free-space terms read sensor depth too, so "depth supervision off" means all three depth
weights are 0; each term is averaged over the samples/rays it applies to (0 where none does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from gs3.config import LossConfig


@dataclass
class RayRender:
    """Per ray: colour, expected distance Σ wᵢtᵢ (un-normalised), accumulated alpha Σ wᵢ; per sample:
    weights, midpoints tᵢ, and for an SDF field the signed distance and its gradient."""

    color: Float[Tensor, "n 3"]
    distance: Float[Tensor, " n"]
    alpha: Float[Tensor, " n"]
    weights: Float[Tensor, "n s"]
    midpoints: Float[Tensor, "n s"]
    sdf: Float[Tensor, "n s"] | None = None
    gradients: Float[Tensor, "n s 3"] | None = None


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1)


def volume_loss(
    render: RayRender,
    target_color: Float[Tensor, "n 3"],
    target_distance: Float[Tensor, " n"],
    loss: LossConfig,
) -> tuple[Float[Tensor, ""], dict[str, Tensor]]:
    """The weighted sum and every term (unweighted); `target_distance` is 0 where depth is invalid."""
    difference = render.color - target_color
    color = difference.square().mean() if loss.color == "mse" else difference.abs().mean()
    terms = {"color": color}
    total = loss.color_weight * color
    valid = target_distance > 0
    if loss.depth_weight > 0:
        terms["depth"] = _masked_mean((render.distance - target_distance).abs(), valid)
        total = total + loss.depth_weight * terms["depth"]
    if render.sdf is not None and (loss.sdf_weight > 0 or loss.free_space_weight > 0):
        t, d, truncation = render.midpoints, target_distance[:, None], loss.sdf_truncation
        front = valid[:, None] & (t < d - truncation)
        band = valid[:, None] & (t <= d + truncation) & ~front
        terms["sdf"] = _masked_mean((t + render.sdf - d).abs(), band)
        terms["free_space"] = _masked_mean(torch.relu(truncation - render.sdf), front)
        total = total + loss.sdf_weight * terms["sdf"] + loss.free_space_weight * terms["free_space"]
    if render.gradients is not None and loss.eikonal_weight > 0:
        terms["eikonal"] = (render.gradients.norm(dim=-1) - 1.0).square().mean()
        total = total + loss.eikonal_weight * terms["eikonal"]
    return total, terms
