"""EWA projection of 3D Gaussians to the image plane, exactly as gsplat 1.5.3 (`persp_proj`, eps2d, culling).

For camera-space mean (x, y, z) and covariance Σc = W Σ Wᵀ:
    mean2d = (fx·x/z + cx, fy·y/z + cy)
    J = [[fx/z, 0, −fx·tx/z²], [0, fy/z, −fy·ty/z²]] with tx = z·clamp(x/z, −lim_x_neg, lim_x_pos),
        lim_x_pos = (W − cx)/fx + 0.3·tan_fovx, lim_x_neg = cx/fx + 0.3·tan_fovx, tan_fovx = W/(2 fx)
        (likewise in y),
        i.e. x/z is clamped to 1.3× the half field of view so that off-screen Gaussians do not blow up;
    cov2d = J Σc Jᵀ + 0.3·I,  conic = cov2d⁻¹ stored as (a, b, c) = (inv00, inv01, inv11).
A Gaussian is culled in a camera when z < 0.01, its opacity is below 1/255, or its bounding box
(extend = min(3.33, √(2 ln(255·o))) standard deviations per axis) misses the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from gs3.gaussians.container import covariances

EPS2D = 0.3
NEAR_PLANE = 0.01
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33


@dataclass
class Projected:
    """Per camera and Gaussian (C, N, ...): differentiable image-plane quantities plus the culling mask."""

    means2d: Float[Tensor, "c n 2"]
    conics: Float[Tensor, "c n 3"]
    depths: Float[Tensor, "c n"]
    cov2d: Float[Tensor, "c n 3"]  # (Σxx, Σxy, Σyy) including the 0.3 blur
    visible: Bool[Tensor, "c n"]


def project_gaussians(
    means: Float[Tensor, "n 3"],
    scales: Float[Tensor, "n 3"],
    quats: Float[Tensor, "n 4"],
    opacities: Float[Tensor, " n"],
    K: Float[Tensor, "c 3 3"],
    world_to_cam: Float[Tensor, "c 4 4"],
    width: int,
    height: int,
) -> Projected:
    cov_world = covariances(scales, quats)  # (N, 3, 3); quats normalised inside (part of the graph)
    rotation = world_to_cam[:, None, :3, :3]  # (C, 1, 3, 3)
    means_cam = camera_space_means(means, world_to_cam)
    cov_cam = rotation @ cov_world[None] @ rotation.transpose(-1, -2)  # (C, N, 3, 3)

    x, y, z = means_cam.unbind(-1)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    # Culled Gaussians (z < near) still flow through here; a safe z keeps their (unused) values finite.
    z_safe = torch.where(z >= NEAR_PLANE, z, torch.ones_like(z))
    rz = 1.0 / z_safe
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zeros = torch.zeros_like(z)
    jacobian = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(*z.shape, 2, 3)
    cov2d = jacobian @ cov_cam @ jacobian.transpose(-1, -2)
    sxx = cov2d[..., 0, 0] + EPS2D
    sxy = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    syy = cov2d[..., 1, 1] + EPS2D
    det = sxx * syy - sxy * sxy
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([syy / det_safe, -sxy / det_safe, sxx / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():
        o = opacities.detach()[None].expand_as(z)
        extend = bbox_extend(o)
        radius_x = torch.ceil(extend * sxx.clamp_min(0).sqrt())
        radius_y = torch.ceil(extend * syy.clamp_min(0).sqrt())
        mx, my = means2d[..., 0], means2d[..., 1]
        on_screen = (
            (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        )
        visible = (z >= NEAR_PLANE) & (det > 0) & (o >= ALPHA_THRESHOLD) & on_screen
        visible &= torch.isfinite(means2d).all(-1) & torch.isfinite(conics).all(-1)
    return Projected(means2d, conics, z, torch.stack([sxx, sxy, syy], dim=-1), visible)


def camera_space_means(
    means: Float[Tensor, "n 3"], world_to_cam: Float[Tensor, "c 4 4"]
) -> Float[Tensor, "c n 3"]:
    """Means in every camera's frame, one coordinate at a time (`camera_space_coordinate`)."""
    return torch.stack([camera_space_coordinate(means, world_to_cam, axis) for axis in range(3)], dim=-1)


def camera_space_coordinate(
    means: Float[Tensor, "n 3"], world_to_cam: Float[Tensor, "c 4 4"], axis: int
) -> Float[Tensor, "c n"]:
    """One camera-space coordinate, r·x + r·y + r·z + t in that order, elementwise (no matmul, whose
    rounding depends on the BLAS kernel chosen). Its z is the depth both CPU backends sort by (the numba
    backend takes its sort keys from here), so that near-equal depths, which real depth maps quantised to
    the millimetre hold by the thousand, come out in the same order in both, bit for bit."""
    row = world_to_cam[:, None, axis, :]  # (C, 1, 4)
    x, y, z = means[None].unbind(-1)  # (1, N)
    return row[..., 0] * x + row[..., 1] * y + row[..., 2] * z + row[..., 3]


def bbox_extend(opacities: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """Standard deviations beyond which α = o·exp(−½ d²) < 1/255: min(3.33, √(2 ln(255·o)))."""
    ratio = (opacities / ALPHA_THRESHOLD).clamp_min(1.0)
    return torch.clamp_max(torch.sqrt(2.0 * torch.log(ratio)), MAX_EXTEND)


LOG_T_MIN = math.log(1e-4)  # compositing stops before the Gaussian that would bring T to ≤ 1e-4
