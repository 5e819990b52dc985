"""Real spherical harmonics up to degree 3 with the 3DGS basis constants and sign conventions.

Colour = SH(dir) + 0.5 clamped at 0, dir = normalised (mean − camera centre) (DESIGN.md; gsplat does the same)
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_coeffs(degree: int) -> int:
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch k"]:
    """The (degree+1)² basis functions at unit directions `dirs` (not normalised here)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_basis: degree must be in 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(basis, dim=-1)


def eval_sh(sh: Float[Tensor, "*batch k 3"], dirs: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """Σ_k basis_k(dir) · sh_k for (unnormalised) directions; the degree comes from k = (d+1)²."""
    degree = round(sh.shape[-2] ** 0.5) - 1
    if num_sh_coeffs(degree) != sh.shape[-2]:
        raise ValueError(f"eval_sh: {sh.shape[-2]} coefficients is not (d+1)² for a degree d in 0..3")
    if degree == 0:  # the direction plays no part (and may be zero)
        return SH_C0 * sh[..., 0, :]
    unit = dirs / dirs.norm(dim=-1, keepdim=True)
    return (sh_basis(degree, unit)[..., None] * sh).sum(dim=-2)


def sh_to_color(
    sh: Float[Tensor, "*batch k 3"], dirs: Float[Tensor, "*batch 3"]
) -> Float[Tensor, "*batch 3"]:
    """The rendering colour: SH(dir) + 0.5, clamped at 0 (no upper clamp, as gsplat)."""
    return torch.clamp_min(eval_sh(sh, dirs) + 0.5, 0.0)


def rgb_to_sh0(rgb: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """Degree-0 coefficient whose colour is `rgb` (inverse of sh_to_color for k = 1 and rgb ≥ 0)."""
    return (rgb - 0.5) / SH_C0
