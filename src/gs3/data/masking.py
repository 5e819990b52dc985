"""Random masking of a sample's input: which points (3D) / pixels (2D) the model may see.

``ratio`` (default 0.5, allowed 0–0.9) is the share hidden, drawn exactly (round(ratio · count) units hidden),
seeded by the numpy Generator passed in. Units:

* ``"point"``  — individual back-projected points (the 3D setting). The 2D mask hides exactly the pixels of
  the hidden points; pixels without valid depth carry no point and stay visible.
* ``"pixel"``  — individual pixels over all views; points inherit the mask of their pixel.
* ``"patch"``  — square patches of ``patch_size``×``patch_size`` pixels on a per-view grid anchored at the
  top-left corner (edge patches are cropped); the share of *patches* hidden is ``ratio``; points inherit.

The two masks always agree: ``point_visible == pixel_visible[point_view, point_pixel]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from gs3.errors import ConfigError

MASK_UNITS = ("point", "pixel", "patch")
MAX_MASK_RATIO = 0.9


@dataclass(frozen=True)
class Mask:
    pixel_visible: Bool[Tensor, "v h w"]
    point_visible: Bool[Tensor, " n"]

    @property
    def visible_points(self) -> Int[Tensor, " m"]:
        """Indices of the visible points."""
        return torch.nonzero(self.point_visible, as_tuple=True)[0]


def hidden_count(ratio: float, count: int) -> int:
    return round(ratio * count)


@dataclass(frozen=True)
class MaskGenerator:
    ratio: float = 0.5
    unit: str = "point"
    patch_size: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= MAX_MASK_RATIO:
            raise ConfigError(f"mask ratio must be in [0, {MAX_MASK_RATIO}], got {self.ratio}")
        if self.unit not in MASK_UNITS:
            raise ConfigError(f"mask unit must be one of {MASK_UNITS}, got {self.unit!r}")
        if self.patch_size < 1:
            raise ConfigError(f"mask patch size must be >= 1, got {self.patch_size}")

    def __call__(
        self,
        rng: np.random.Generator,
        num_views: int,
        height: int,
        width: int,
        point_view: Int[Tensor, " n"],
        point_pixel: Int[Tensor, " n"],
    ) -> Mask:
        num_points = int(point_view.numel())
        if self.unit == "point":
            point_visible = np.ones(num_points, dtype=bool)
            point_visible[rng.permutation(num_points)[: hidden_count(self.ratio, num_points)]] = False
            point_visible = torch.from_numpy(point_visible)
            pixel_visible = torch.ones(num_views, height * width, dtype=torch.bool)
            hidden = ~point_visible
            pixel_visible[point_view[hidden], point_pixel[hidden]] = False
            return Mask(pixel_visible.reshape(num_views, height, width), point_visible)
        if self.unit == "pixel":
            count = num_views * height * width
            pixel_visible = np.ones(count, dtype=bool)
            pixel_visible[rng.permutation(count)[: hidden_count(self.ratio, count)]] = False
            pixel_visible = torch.from_numpy(pixel_visible).reshape(num_views, height, width)
        else:
            pixel_visible = self._patch_mask(rng, num_views, height, width)
        point_visible = pixel_visible.reshape(num_views, -1)[point_view, point_pixel]
        return Mask(pixel_visible, point_visible)

    def _patch_mask(self, rng: np.random.Generator, num_views: int, height: int, width: int) -> Tensor:
        size = self.patch_size
        rows, cols = -(-height // size), -(-width // size)
        count = num_views * rows * cols
        patch_visible = np.ones(count, dtype=bool)
        patch_visible[rng.permutation(count)[: hidden_count(self.ratio, count)]] = False
        patch_visible = patch_visible.reshape(num_views, rows, cols)
        pixels = patch_visible.repeat(size, axis=1).repeat(size, axis=2)[:, :height, :width]
        return torch.from_numpy(np.ascontiguousarray(pixels))
