"""Pictures of a training step: depth colourised; the real | rendered | rendered depth | sensor depth grid."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

# Anchor colours of a perceptually ordered dark-blue → teal → yellow ramp, interpolated linearly.
_RAMP = torch.tensor(
    [
        [0.05, 0.03, 0.25],
        [0.15, 0.25, 0.55],
        [0.10, 0.50, 0.55],
        [0.30, 0.70, 0.40],
        [0.75, 0.85, 0.20],
        [1.00, 0.95, 0.35],
    ]
)


def colorize_depth(
    depth: Float[Tensor, "*batch h w"], max_depth: float | None = None, invalid_color: float = 0.0
) -> Float[Tensor, "*batch h w 3"]:
    """Depth in metres → RGB in [0, 1] (near = dark, far = bright); depth 0 (invalid) gets `invalid_color`."""
    depth = depth.detach().float()
    valid = depth > 0
    if max_depth is None:
        max_depth = float(depth[valid].max()) if bool(valid.any()) else 1.0
    t = (depth / max(max_depth, 1e-6)).clamp(0, 1) * (len(_RAMP) - 1)
    low = t.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (t - low)[..., None]
    ramp = _RAMP.to(depth.device)
    color = ramp[low] * (1 - frac) + ramp[low + 1] * frac
    return torch.where(valid[..., None], color, torch.full_like(color, invalid_color))


def render_grid(
    real: Float[Tensor, "v h w 3"],
    rendered: Float[Tensor, "v h w 3"],
    rendered_depth: Float[Tensor, "v h w"],
    sensor_depth: Float[Tensor, "v h w"],
) -> Float[Tensor, "gh gw 3"]:
    """One row per view: real | rendered | rendered depth | sensor depth (both depths on one scale)."""
    valid = sensor_depth > 0
    max_depth = (
        float(sensor_depth[valid].max()) if bool(valid.any()) else float(rendered_depth.max().clamp(min=1))
    )
    rows = [
        torch.cat(
            [
                real[v].float().clamp(0, 1),
                rendered[v].detach().float().clamp(0, 1),
                colorize_depth(rendered_depth[v], max_depth),
                colorize_depth(sensor_depth[v], max_depth),
            ],
            dim=1,
        )
        for v in range(real.shape[0])
    ]
    return torch.cat(rows, dim=0).cpu()
