"""The neural field of the NeRF baseline: volume features at a point → signed distance (or density), colour.

As PonderV2's SDFField: a geometry MLP (softplus β = 100 activations, smooth enough for the eikonal term's
second derivatives) reads the trilinearly interpolated volume feature and the point's position, and
outputs the geometry and `geometry_channels` features; a colour MLP (ReLU) reads the volume feature, those
geometry features, the SDF gradient (sdf only) and the viewing direction, and outputs RGB through a
sigmoid. Positions enter in the box's normalised frame (centre 0, largest half-side 1), so the network is
the same for a 3 m room and a 10 m one; its geometry output is scaled back to metres:
    sdf = raw · scale,   density = softplus(raw) / scale   (scale = half the box's largest side),
so a unit slope in the normalised frame is a unit slope (|∇f| = 1) in metres. NeuS's sharpness s is one
learned scalar, s = exp(log_inv_s) (PonderV2: exp(10 · 0.3) ≈ 20 at start).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

GEOMETRIES = ("sdf", "density")


class NeuralField(nn.Module):
    def __init__(
        self,
        feature_channels: int,
        hidden_channels: int,
        geometry_channels: int,
        geometry: str = "sdf",
        init_inv_s: float = 20.0,
    ) -> None:
        super().__init__()
        if geometry not in GEOMETRIES:
            raise ValueError(f"NeuralField: geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.geometry = geometry
        self.geometry_channels = geometry_channels
        self.geometry_mlp = nn.Sequential(
            nn.Linear(feature_channels + 3, hidden_channels),
            nn.Softplus(beta=100),
            nn.Linear(hidden_channels, hidden_channels),
            nn.Softplus(beta=100),
            nn.Linear(hidden_channels, 1 + geometry_channels),
        )
        normal_channels = 3 if geometry == "sdf" else 0
        self.color_mlp = nn.Sequential(
            nn.Linear(feature_channels + geometry_channels + normal_channels + 3, hidden_channels),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, 3),
        )
        if geometry == "sdf":
            self.log_inv_s = nn.Parameter(torch.tensor(math.log(init_inv_s)))

    def inv_s(self) -> Float[Tensor, ""]:
        """NeuS sharpness s (1/metres), kept within [1e-6, 1e6] as PonderV2 does."""
        return self.log_inv_s.exp().clamp(1e-6, 1e6)

    def geometry_at(
        self, features: Float[Tensor, "n c"], unit_points: Float[Tensor, "n 3"], scale: Float[Tensor, " n"]
    ) -> tuple[Float[Tensor, " n"], Float[Tensor, "n g"]]:
        """Signed distance (m) or density (1/m) at the points, and the geometry features."""
        out = self.geometry_mlp(torch.cat([features, unit_points], dim=-1))
        raw, geometry_features = out[:, 0], out[:, 1:]
        if self.geometry == "sdf":
            return raw * scale, geometry_features
        return F.softplus(raw) / scale, geometry_features

    def color(
        self,
        features: Float[Tensor, "n c"],
        geometry_features: Float[Tensor, "n g"],
        gradients: Float[Tensor, "n 3"] | None,
        directions: Float[Tensor, "n 3"],
    ) -> Float[Tensor, "n 3"]:
        parts = [features, geometry_features]
        if self.geometry == "sdf":
            parts.append(gradients)
        parts.append(directions)
        return torch.sigmoid(self.color_mlp(torch.cat(parts, dim=-1)))
