"""Epipolar sampling: where each pixel's viewing ray lands in the other views, and what lies there.

For pixel p of view a, the points of its ray are X(t) = t · K_a⁻¹ (p, 1) in a's camera frame, t being the
camera-z depth in a. In another view b the same points are o + t·d (o = a's centre in b's frame, d the ray
direction rotated into b), and their homogeneous pixel coordinates K_b (o + t·d) are *affine in t*. So every
clipping condition — z_b ≥ ε (in front of b), 0 ≤ u ≤ w, 0 ≤ v ≤ h (inside b, multiplied through by z_b > 0),
near ≤ t ≤ far — is a linear inequality α + β·t ≥ 0, and the visible part of the segment is one interval
[t_lo, t_hi] found in closed form. This handles points behind b (they are clipped away before any division;
0 ≤ x ≤ w·z alone already rules out z < 0, and z ≥ ε keeps clear of b's camera plane), an epipole inside b's
image (the interval simply starts or ends at the clipping bound) and rays that run
parallel to b's image plane, with no case analysis and no triangulation.

Samples are spread uniformly in b's *image space* along the clipped 2D segment (as pixelSplat does: the
features being read are a pixel grid, so image-space spacing neither skips nor repeats pixels), at fractions
(i + 0.5)/S. The depth each sample implies is obtained exactly by perspective-correct interpolation: image
fraction λ between endpoints with b-depths z₀, z₁ corresponds to 3D fraction μ = λz₀ / (λz₀ + (1 − λ)z₁)
along the segment, so t = t_lo + μ (t_hi − t_lo); the sample's pixel position is then computed *from* t,
so position and depth agree to rounding. The geometry runs in float64 (float32 on MPS) without gradient: it
depends only on the cameras, which are data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from gs3.cameras import invert_rigid, pixel_centers, unproject

# Points closer than this to b's image plane (metres, b's camera z) are treated as behind b.
MIN_DEPTH_IN_OTHER_VIEW = 1e-3


@dataclass
class EpipolarSegments:
    """The part of each pixel's [near, far] ray that is in front of and inside each other view."""

    t_near: Float[Tensor, "b v ov r"]  # depth in view a (camera z) where the visible part starts
    t_far: Float[Tensor, "b v ov r"]  # ... and where it ends (t_near < t_far where valid)
    valid: Bool[Tensor, "b v ov r"]  # False: the ray never appears inside view b between near and far
    origin: Float[Tensor, "b v ov 3"]  # a's camera centre in b's camera frame
    direction: Float[Tensor, "b v ov r 3"]  # the ray direction (camera-z = 1 in a) in b's camera frame


@dataclass
class EpipolarSamples:
    """S samples along the epipolar segment of every pixel of every view in every other view.

    Slot j of view a refers to view `other_view[a, j]`; pixels r are row-major at the feature resolution.
    """

    features: Float[Tensor, "b v ov r s c"]  # bilinear features of view b at the samples (0 where invalid)
    depths: Float[Tensor, "b v ov r s"]  # camera-z depth in view a that each sample implies
    valid: Bool[Tensor, "b v ov r s"]  # False: no segment inside b (features are zero, depth is `near`)
    xy: Float[Tensor, "b v ov r s 2"]  # continuous pixel coordinates in view b (centres at +0.5)
    other_view: Int[Tensor, "v ov"]  # which view each slot samples


def other_views(num_views: int, device: torch.device | str | None = None) -> Int[Tensor, "v ov"]:
    """For each view a, the indices of all other views in increasing order: row a = [0..V) without a."""
    index = torch.arange(num_views, device=device)
    rows = [torch.cat([index[:a], index[a + 1 :]]) for a in range(num_views)]
    return torch.stack(rows) if rows else index.new_zeros(0, 0)


def _geometry_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _near_far(value: float | Tensor, batch: int, views: int, like: Tensor) -> Float[Tensor, "b v"]:
    """A scalar or (B,)/(B, V) tensor of depths broadcast to (B, V)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() == 1:
        value = value[:, None]
    return value.expand(batch, views)


def epipolar_segments(
    K: Float[Tensor, "b v 3 3"],
    cam_to_world: Float[Tensor, "b v 4 4"],
    height: int,
    width: int,
    near: float | Tensor,
    far: float | Tensor,
    min_depth_in_other_view: float = MIN_DEPTH_IN_OTHER_VIEW,
) -> EpipolarSegments:
    """Clip each pixel's ray segment [near, far] to the other views' frusta (see the module docstring).

    K is at the resolution height × width for which the pixel grid is made; near/far are camera-z depths of
    the ray's own view (float, (B,) or (B, V)). Returned tensors are in the geometry dtype (float64 except on
    MPS).
    """
    batch, views = K.shape[:2]
    near_t, far_t = torch.as_tensor(near), torch.as_tensor(far)
    if not (near_t > 0).all() or not (far_t > near_t).all():
        raise ValueError(f"epipolar_segments: need 0 < near < far, got near={near}, far={far}")
    dtype = _geometry_dtype(K.device)
    K = K.detach().to(dtype)
    cam_to_world = cam_to_world.detach().to(dtype)
    others = other_views(views, K.device)

    # Rays of view a, camera-z = 1, in a's frame: (B, V, R, 3).
    pixels = pixel_centers(height, width, K.device, dtype).reshape(1, 1, -1, 2).expand(batch, views, -1, -1)
    ray_cam = unproject(K, pixels, torch.ones_like(pixels[..., 0]))

    # a-to-b transforms for every (a, slot): (B, V, OV, 4, 4).
    a_to_b = invert_rigid(cam_to_world)[:, others] @ cam_to_world[:, :, None]
    origin = a_to_b[..., :3, 3]
    direction = ray_cam[:, :, None] @ a_to_b[..., :3, :3].transpose(-1, -2)
    K_b = K[:, others]  # (B, V, OV, 3, 3)

    # Homogeneous pixel coordinates q(t) = q0 + t·q1 with q[2] = z_b.
    q0 = (K_b @ origin[..., None]).squeeze(-1)[..., None, :].expand_as(direction)
    q1 = direction @ K_b.transpose(-1, -2)
    near_bv = _near_far(near, batch, views, K)[:, :, None, None].expand_as(q0[..., 0])
    far_bv = _near_far(far, batch, views, K)[:, :, None, None].expand_as(q0[..., 0])
    ones = torch.ones_like(near_bv)
    # Each constraint alpha + beta·t ≥ 0.
    alpha = torch.stack(
        [
            q0[..., 2] - min_depth_in_other_view,  # in front of b
            q0[..., 0],  # u ≥ 0
            width * q0[..., 2] - q0[..., 0],  # u ≤ w
            q0[..., 1],  # v ≥ 0
            height * q0[..., 2] - q0[..., 1],  # v ≤ h
            -near_bv,  # t ≥ near
            far_bv,  # t ≤ far
        ],
        dim=-1,
    )
    beta = torch.stack(
        [
            q1[..., 2],
            q1[..., 0],
            width * q1[..., 2] - q1[..., 0],
            q1[..., 1],
            height * q1[..., 2] - q1[..., 1],
            ones,
            -ones,
        ],
        dim=-1,
    )
    # Coefficients this small relative to the constraint's scale mean "independent of t".
    scale = alpha.abs() + beta.abs() * far_bv[..., None].abs() + torch.finfo(dtype).tiny
    flat = beta.abs() <= 1e-12 * scale
    bound = -alpha / torch.where(flat, ones[..., None], beta)
    t_near = torch.where(~flat & (beta > 0), bound, -torch.inf).amax(dim=-1)
    t_far = torch.where(~flat & (beta < 0), bound, torch.inf).amin(dim=-1)
    constant_ok = torch.where(flat, alpha >= 0, True).all(dim=-1)
    valid = constant_ok & (t_far > t_near)
    t_near = torch.where(valid, t_near, near_bv)
    t_far = torch.where(valid, t_far, near_bv)
    return EpipolarSegments(t_near, t_far, valid, origin, direction)


def _project_in_other_view(
    K_b: Float[Tensor, "b v ov 3 3"],
    origin: Float[Tensor, "b v ov 3"],
    direction: Float[Tensor, "b v ov r 3"],
    depths: Float[Tensor, "b v ov r s"],
) -> Float[Tensor, "b v ov r s 2"]:
    """Pixel coordinates in b of the points at depth t on a's rays (all in front of b where valid)."""
    points = origin[..., None, None, :] + depths[..., None] * direction[..., None, :]
    homogeneous = points @ K_b[..., None, :, :].transpose(-1, -2)
    return homogeneous[..., :2] / homogeneous[..., 2:]


def sample_epipolar(
    features: Float[Tensor, "b v c h w"],
    K: Float[Tensor, "b v 3 3"],
    cam_to_world: Float[Tensor, "b v 4 4"],
    near: float | Tensor,
    far: float | Tensor,
    num_samples: int = 32,
    min_depth_in_other_view: float = MIN_DEPTH_IN_OTHER_VIEW,
) -> EpipolarSamples:
    """Sample every other view's features along each pixel's epipolar segment (K at the features' h × w)."""
    batch, views, channels, height, width = features.shape
    if views < 2:
        raise ValueError(f"sample_epipolar: needs at least 2 views, got {views}")
    if num_samples < 1:
        raise ValueError(f"sample_epipolar: num_samples must be >= 1, got {num_samples}")
    segments = epipolar_segments(K, cam_to_world, height, width, near, far, min_depth_in_other_view)
    dtype = segments.t_near.dtype
    others = other_views(views, features.device)

    with torch.no_grad():
        K_b = K.detach().to(dtype)[:, others]  # (B, V, OV, 3, 3)
        # b-depths of the segment ends (K's last row is [0, 0, 1], so z_b = o_z + t·d_z).
        z0 = segments.origin[..., None, 2] + segments.t_near * segments.direction[..., 2]
        z1 = segments.origin[..., None, 2] + segments.t_far * segments.direction[..., 2]
        z0, z1 = z0[..., None], z1[..., None]

        # Image-space fractions → 3D fractions (perspective-correct) → depths along a's ray.
        fraction = (torch.arange(num_samples, device=features.device, dtype=dtype) + 0.5) / num_samples
        mu = fraction * z0 / (fraction * z0 + (1 - fraction) * z1)
        mu = torch.where(segments.valid[..., None], mu, 0.0)
        depths = segments.t_near[..., None] + mu * (segments.t_far - segments.t_near)[..., None]

        xy = _project_in_other_view(K_b, segments.origin, segments.direction, depths)
        valid = segments.valid[..., None] & torch.isfinite(xy).all(-1) & torch.isfinite(depths)
        xy = torch.where(valid[..., None], xy, 0.0)
        # Keep rounding from stepping outside [0, w] × [0, h].
        xy = torch.minimum(xy.clamp_min(0.0), xy.new_tensor([width, height]))
        depths = torch.where(valid, depths, segments.t_near[..., None])

        # grid_sample, align_corners=False: the image spans [-1, 1] edge to edge, so x_norm = 2u/w − 1.
        grid = 2.0 * xy / xy.new_tensor([width, height]) - 1.0
        grid = grid.to(features.dtype).reshape(batch * views * (views - 1), -1, num_samples, 2)

    source = features[:, others].reshape(batch * views * (views - 1), channels, height, width)
    # "border": a sample within half a pixel of the edge reads the edge pixel rather than fading to zero.
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sampled = sampled.reshape(batch, views, views - 1, channels, height * width, num_samples)
    sampled = sampled.permute(0, 1, 2, 4, 5, 3) * valid[..., None].to(features.dtype)
    return EpipolarSamples(
        features=sampled,
        depths=depths.to(features.dtype),
        valid=valid,
        xy=xy.to(features.dtype),
        other_view=others,
    )
