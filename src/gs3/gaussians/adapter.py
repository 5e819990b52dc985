"""Raw network outputs → Gaussian parameters (pure functions).

Every Gaussian a head predicts is described by a raw vector laid out as
`[scale (3) | rotation (4) | opacity (1, optional) | SH ((d+1)² × 3, coefficient-major)]` and mapped here:

- scale: `footprint · (min_scale + (max_scale − min_scale) · sigmoid(raw))`, where the footprint is the
  width in metres that one pixel covers at the Gaussian's depth, `depth / f`, f being the focal length in
  pixels at the rendering resolution (`sqrt(fx · fy)`: scales are isotropic bounds, the pixel is not).
  So a Gaussian is between `min_scale` and `max_scale` pixels wide in the view it came from, at any depth.
- rotation: the wxyz quaternion `raw + (1, 0, 0, 0)`, normalised: a raw output near 0 (the heads' init)
  is the identity, and only `raw = (−1, 0, 0, 0)` exactly would have no direction.
- opacity: `sigmoid(raw)`.
- SH: coefficients of degree l multiplied by `sh_decay ** l`, so at init (raw of order 1) view-dependent
  terms are small next to the base colour, and their effective learning rate stays lower. Colour at
  init is `C0 · raw_dc + 0.5` (DESIGN.md), grey for raw ≈ 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from gs3.errors import ConfigError

IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)


def num_sh_coeffs(degree: int) -> int:
    return (degree + 1) ** 2


def focal_pixels(K: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch"]:
    """One focal length per camera, in pixels: the geometric mean of fx and fy."""
    return torch.sqrt(K[..., 0, 0] * K[..., 1, 1])


def pixel_footprint(
    depth: Float[Tensor, "*batch"], focal: Float[Tensor, "*batch"]
) -> Float[Tensor, "*batch"]:
    """Metres covered by one pixel at camera-space depth `depth` for a focal length `focal` in pixels."""
    return depth / focal


def scales_from_raw(
    raw: Float[Tensor, "*batch 3"], footprint: Float[Tensor, "*batch"], min_scale: float, max_scale: float
) -> Float[Tensor, "*batch 3"]:
    """Standard deviations in metres, between min_scale and max_scale pixel footprints."""
    relative = min_scale + (max_scale - min_scale) * torch.sigmoid(raw)
    return relative * footprint[..., None]


def quats_from_raw(raw: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 4"]:
    """Unit wxyz quaternions; raw = 0 is the identity rotation."""
    return F.normalize(raw + raw.new_tensor(IDENTITY_QUAT), dim=-1, eps=1e-12)


def opacities_from_raw(raw: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    return torch.sigmoid(raw)


def sh_from_raw(raw: Float[Tensor, "*batch c"], degree: int, sh_decay: float) -> Float[Tensor, "*batch k 3"]:
    """(…, 3·(d+1)²) → (…, (d+1)², 3), degree-l coefficients scaled by sh_decay**l."""
    count = num_sh_coeffs(degree)
    if raw.shape[-1] != 3 * count:
        raise ValueError(f"sh_from_raw: degree {degree} needs {3 * count} channels, got {raw.shape[-1]}")
    degrees = torch.cat([torch.full((2 * l + 1,), l, dtype=raw.dtype) for l in range(degree + 1)])
    factors = (sh_decay**degrees).to(raw.device)
    return raw.reshape(*raw.shape[:-1], count, 3) * factors[:, None]


def quat_multiply(a: Float[Tensor, "*batch 4"], b: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 4"]:
    """Hamilton product a ⊗ b of wxyz quaternions: the rotation b followed by a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotmat_to_quat(rotation: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 4"]:
    """Unit wxyz quaternion (w ≥ 0) of a rotation matrix; numerically safe for every angle.

    Each of the four candidate formulas divides by one of 4w², 4x², 4y², 4z²; the largest is used.
    """
    r = rotation
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    squares4 = torch.stack(  # 4w², 4x², 4y², 4z²
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    ).clamp_min(0)
    w_yz = r[..., 2, 1] - r[..., 1, 2]
    w_zx = r[..., 0, 2] - r[..., 2, 0]
    w_xy = r[..., 1, 0] - r[..., 0, 1]
    x_y = r[..., 1, 0] + r[..., 0, 1]
    x_z = r[..., 0, 2] + r[..., 2, 0]
    y_z = r[..., 2, 1] + r[..., 1, 2]
    # Row i: 4·q_i·(w, x, y, z) written from the matrix entries.
    candidates = torch.stack(
        [
            torch.stack([squares4[..., 0], w_yz, w_zx, w_xy], dim=-1),
            torch.stack([w_yz, squares4[..., 1], x_y, x_z], dim=-1),
            torch.stack([w_zx, x_y, squares4[..., 2], y_z], dim=-1),
            torch.stack([w_xy, x_z, y_z, squares4[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    best = squares4.argmax(dim=-1)
    chosen = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = F.normalize(chosen, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


@dataclass(frozen=True)
class GaussianAdapter:
    """The settings of the raw → Gaussian mapping (see the module docstring), shared by the heads.

    Attributes:
        sh_degree: SH degree 0–3 ((d+1)² coefficients per colour channel).
        min_scale, max_scale: bounds of a Gaussian's standard deviation in pixel footprints.
        sh_decay: factor per SH degree applied to the raw coefficients.
    """

    sh_degree: int = 3
    min_scale: float = 0.5
    max_scale: float = 15.0
    sh_decay: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.sh_degree <= 3:
            raise ConfigError(f"head.sh_degree={self.sh_degree}: must be 0, 1, 2 or 3")
        if not 0 < self.min_scale < self.max_scale:
            raise ConfigError(f"head scale bounds {self.min_scale}, {self.max_scale}: need 0 < min < max")

    def raw_channels(self, with_opacity: bool) -> int:
        """Length of one Gaussian's raw vector."""
        return 3 + 4 + int(with_opacity) + 3 * num_sh_coeffs(self.sh_degree)

    def __call__(
        self, raw: Float[Tensor, "*batch c"], footprint: Float[Tensor, "*batch"], with_opacity: bool
    ) -> dict[str, Tensor]:
        """Split a raw vector and map each part. Returns scales, quats, sh and (if with_opacity) opacities."""
        if raw.shape[-1] != self.raw_channels(with_opacity):
            raise ValueError(
                f"GaussianAdapter: expected {self.raw_channels(with_opacity)} raw channels, "
                f"got {raw.shape[-1]}"
            )
        raw_scales, raw_quats, rest = raw[..., :3], raw[..., 3:7], raw[..., 7:]
        out = {
            "scales": scales_from_raw(raw_scales, footprint, self.min_scale, self.max_scale),
            "quats": quats_from_raw(raw_quats),
        }
        if with_opacity:
            out["opacities"] = opacities_from_raw(rest[..., 0])
            rest = rest[..., 1:]
        out["sh"] = sh_from_raw(rest, self.sh_degree, self.sh_decay)
        return out
