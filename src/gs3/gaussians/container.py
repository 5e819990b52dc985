"""The Gaussians container: one scene's 3D Gaussians, validated on construction."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from jaxtyping import Float
from torch import Tensor


def sh_degree_from_coeffs(num_coeffs: int) -> int:
    degree = math.isqrt(num_coeffs) - 1
    if (degree + 1) ** 2 != num_coeffs or not 0 <= degree <= 3:
        raise ValueError(f"Gaussians.sh: {num_coeffs} coefficients is not (d+1)² for a degree d in 0..3")
    return degree


@dataclass
class Gaussians:
    """N Gaussians: means (metres), scales (standard deviations, metres), unit-free wxyz quaternions
    (normalised where used), opacities in [0, 1] and real SH colour coefficients (colour = SH(dir) + 0.5).

    Construction checks shapes and values and raises one ValueError naming the field. Pass
    `validate=False` in hot loops whose inputs are correct by construction (it skips a device sync).
    """

    means: Float[Tensor, "n 3"]
    scales: Float[Tensor, "n 3"]
    quats: Float[Tensor, "n 4"]
    opacities: Float[Tensor, " n"]
    sh: Float[Tensor, "n k 3"]
    validate: bool = True

    def __post_init__(self) -> None:
        if self.validate:
            self.check()

    def check(self) -> None:
        n = self.means.shape[0] if self.means.dim() == 2 else -1
        expected = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if n < 0 or tuple(value.shape) != shape:
                raise ValueError(
                    f"Gaussians.{name}: expected shape {_shape_str(shape)}, got {tuple(value.shape)}"
                )
        if self.sh.dim() != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh: expected shape (N, (d+1)², 3), got {tuple(self.sh.shape)}")
        sh_degree_from_coeffs(self.sh.shape[1])
        for name in ("means", "scales", "quats", "opacities", "sh"):
            value = getattr(self, name)
            if not value.is_floating_point():
                raise ValueError(f"Gaussians.{name}: expected a floating-point tensor, got {value.dtype}")
            if value.device != self.means.device:
                raise ValueError(f"Gaussians.{name}: on {value.device}, means on {self.means.device}")
            if n and not bool(torch.isfinite(value).all()):
                raise ValueError(f"Gaussians.{name}: contains NaN or infinite values")
        if n == 0:
            return
        if bool((self.scales <= 0).any()):
            raise ValueError("Gaussians.scales: must be positive (standard deviations in metres)")
        if bool((self.quats.norm(dim=-1) < 1e-12).any()):
            raise ValueError("Gaussians.quats: zero-norm quaternion (wxyz) cannot define a rotation")
        if bool(((self.opacities < 0) | (self.opacities > 1)).any()):
            raise ValueError("Gaussians.opacities: must lie in [0, 1]")

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_coeffs(self.sh.shape[1])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def __len__(self) -> int:
        return self.means.shape[0]

    def _map(self, fn) -> Gaussians:
        return Gaussians(
            **{f.name: fn(getattr(self, f.name)) for f in fields(self) if f.name != "validate"},
            validate=False,
        )

    def __getitem__(self, index) -> Gaussians:
        """Index with an int tensor, a boolean mask or a slice; the result is always a batch."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    def to(self, *args, **kwargs) -> Gaussians:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Gaussians:
        return self._map(Tensor.detach)

    @staticmethod
    def cat(parts: Sequence[Gaussians]) -> Gaussians:
        if not parts:
            raise ValueError("Gaussians.cat: nothing to concatenate")
        degrees = {p.sh_degree for p in parts}
        if len(degrees) > 1:
            raise ValueError(f"Gaussians.cat: parts have different SH degrees {sorted(degrees)}")
        names = [f.name for f in fields(Gaussians) if f.name != "validate"]
        return Gaussians(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names}, validate=False)

    def normalized_quats(self) -> Float[Tensor, "n 4"]:
        return self.quats / self.quats.norm(dim=-1, keepdim=True)


def _shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("N" if s < 0 else str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def quat_to_rotmat(quats: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrices from wxyz quaternions (normalised here)."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariances(
    scales: Float[Tensor, "*batch 3"], quats: Float[Tensor, "*batch 4"]
) -> Float[Tensor, "*batch 3 3"]:
    """Σ = R S Sᵀ Rᵀ with S = diag(scales)."""
    rs = quat_to_rotmat(quats) * scales[..., None, :]
    return rs @ rs.transpose(-1, -2)
