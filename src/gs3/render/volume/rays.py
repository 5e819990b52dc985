"""Rays through pixels, and where they cross an axis-aligned box.

Directions are unit vectors, so a ray parameter t is a distance along the ray in metres (as in NeRF/NeuS
and PonderV2), not a depth. `pixel_rays` also returns each ray's `z_per_t` (the cosine between the ray and
the optical axis): camera-space depth z = t · z_per_t, which turns a rendered distance into the depth the
rasterizer and the sensor report, and a sensor depth into the distance a depth loss compares.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from gs3.cameras import unproject


def pixel_rays(
    K: Float[Tensor, "*batch 3 3"],
    cam_to_world: Float[Tensor, "*batch 4 4"],
    pixels: Float[Tensor, "*batch r 2"],
) -> tuple[Float[Tensor, "*batch r 3"], Float[Tensor, "*batch r 3"], Float[Tensor, "*batch r"]]:
    """World-space rays through continuous pixel coordinates (pixel (u, v)'s centre is (u + 0.5, v + 0.5)).

    Returns origins (the camera centres), unit directions, and z_per_t (depth per unit of distance)."""
    ones = torch.ones(pixels.shape[:-1], dtype=pixels.dtype, device=pixels.device)
    direction_cam = unproject(K, pixels, ones)  # camera-space z = 1
    length = direction_cam.norm(dim=-1)
    direction_cam = direction_cam / length[..., None]
    directions = direction_cam @ cam_to_world[..., :3, :3].transpose(-1, -2)
    origins = cam_to_world[..., None, :3, 3].expand_as(directions)
    return origins, directions, 1.0 / length


def ray_box_intersection(
    origins: Float[Tensor, "*rays 3"],
    directions: Float[Tensor, "*rays 3"],
    box_min: Float[Tensor, "*rays 3"],
    box_max: Float[Tensor, "*rays 3"],
) -> tuple[Float[Tensor, "*rays"], Float[Tensor, "*rays"], Bool[Tensor, "*rays"]]:
    """Slab test: the ray parameters where each ray enters and leaves its box, and whether it crosses it
    at all (t_exit > max(t_enter, 0)). A ray starting inside its box has t_enter < 0."""
    tiny = torch.finfo(directions.dtype).tiny
    safe = torch.where(directions.abs() < tiny, torch.full_like(directions, tiny), directions)
    inverse = 1.0 / safe
    t_low = (box_min - origins) * inverse
    t_high = (box_max - origins) * inverse
    t_enter = torch.minimum(t_low, t_high).amax(dim=-1)
    t_exit = torch.maximum(t_low, t_high).amin(dim=-1)
    return t_enter, t_exit, t_exit > t_enter.clamp_min(0.0)
