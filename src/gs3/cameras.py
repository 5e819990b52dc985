"""Pinhole cameras and the geometry every part of gs3 shares.

Conventions (DESIGN.md): OpenCV axes (x right, y down, z forward); poses are camera-to-world 4×4; K is 3×3 in
pixels; pixel (u, v) has its centre at (u + 0.5, v + 0.5), so resizing by s scales fx, fy, cx, cy by s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


def invert_rigid(transform: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Inverse of a rigid transform [R t; 0 1] without a general matrix inverse."""
    rotation = transform[..., :3, :3]
    translation = transform[..., :3, 3:]
    inverse = torch.zeros_like(transform)
    inverse[..., :3, :3] = rotation.transpose(-1, -2)
    inverse[..., :3, 3:] = -rotation.transpose(-1, -2) @ translation
    inverse[..., 3, 3] = 1.0
    return inverse


def transform_points(
    transform: Float[Tensor, "*batch 4 4"], points: Float[Tensor, "*batch n 3"]
) -> Float[Tensor, "*batch n 3"]:
    """Apply a 4×4 transform to points (batch dims broadcast)."""
    return points @ transform[..., :3, :3].transpose(-1, -2) + transform[..., None, :3, 3]


def pixel_centers(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "h w 2"]:
    """(u + 0.5, v + 0.5) for every pixel, as (x, y) pairs, row-major."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u + 0.5, v + 0.5], dim=-1)


def project(
    K: Float[Tensor, "*batch 3 3"], points_cam: Float[Tensor, "*batch n 3"]
) -> tuple[Float[Tensor, "*batch n 2"], Float[Tensor, "*batch n"]]:
    """Camera-space points to continuous pixel coordinates and depth z (no clipping, no culling)."""
    z = points_cam[..., 2]
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    u = fx * points_cam[..., 0] / z + cx
    v = fy * points_cam[..., 1] / z + cy
    return torch.stack([u, v], dim=-1), z


def unproject(
    K: Float[Tensor, "*batch 3 3"], pixels: Float[Tensor, "*batch n 2"], depth: Float[Tensor, "*batch n"]
) -> Float[Tensor, "*batch n 3"]:
    """Continuous pixel coordinates + depth z to camera-space points (inverse of `project`)."""
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    x = (pixels[..., 0] - cx) / fx * depth
    y = (pixels[..., 1] - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)


def scale_intrinsics(K: Float[Tensor, "*batch 3 3"], sx: float, sy: float) -> Float[Tensor, "*batch 3 3"]:
    """K for an image resized by (sx, sy): fx, cx scale by sx; fy, cy by sy (half-pixel convention)."""
    scale = K.new_tensor([[sx, sx, sx], [sy, sy, sy], [1.0, 1.0, 1.0]])
    return K * scale


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size. Leading dims of K and cam_to_world broadcast."""

    K: Float[Tensor, "*batch 3 3"]
    cam_to_world: Float[Tensor, "*batch 4 4"]
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.K.shape[-2:] != (3, 3):
            raise ValueError(f"Cameras.K: expected shape (..., 3, 3), got {tuple(self.K.shape)}")
        if self.cam_to_world.shape[-2:] != (4, 4):
            raise ValueError(
                f"Cameras.cam_to_world: expected shape (..., 4, 4), got {tuple(self.cam_to_world.shape)}"
            )
        if self.K.shape[:-2] != self.cam_to_world.shape[:-2]:
            raise ValueError(
                f"Cameras: K batch {tuple(self.K.shape[:-2])} != cam_to_world batch "
                f"{tuple(self.cam_to_world.shape[:-2])}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Cameras: image size must be positive, got {self.width}x{self.height}")

    @property
    def batch_shape(self) -> torch.Size:
        return self.K.shape[:-2]

    def __len__(self) -> int:
        return self.K.shape[0] if self.K.dim() > 2 else 1

    def __getitem__(self, index) -> Cameras:
        return Cameras(self.K[index], self.cam_to_world[index], self.width, self.height)

    def to(self, *args, **kwargs) -> Cameras:
        return Cameras(
            self.K.to(*args, **kwargs), self.cam_to_world.to(*args, **kwargs), self.width, self.height
        )

    @property
    def world_to_cam(self) -> Float[Tensor, "*batch 4 4"]:
        return invert_rigid(self.cam_to_world)

    @property
    def centers(self) -> Float[Tensor, "*batch 3"]:
        return self.cam_to_world[..., :3, 3]

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras for images resized to width × height."""
        K = scale_intrinsics(self.K, width / self.width, height / self.height)
        return Cameras(K, self.cam_to_world, width, height)

    def transformed(self, world_transform: Float[Tensor, "*batch 4 4"]) -> Cameras:
        """Cameras after moving the world by `world_transform` (e.g. an augmentation rotation)."""
        return Cameras(self.K, world_transform @ self.cam_to_world, self.width, self.height)

    def world_to_pixels(
        self, points_world: Float[Tensor, "*batch n 3"]
    ) -> tuple[Float[Tensor, "*batch n 2"], Float[Tensor, "*batch n"]]:
        """World points to continuous pixel coordinates and camera-space depth z."""
        return project(self.K, transform_points(self.world_to_cam, points_world))

    def pixels_to_world(
        self, pixels: Float[Tensor, "*batch n 2"], depth: Float[Tensor, "*batch n"]
    ) -> Float[Tensor, "*batch n 3"]:
        """Continuous pixel coordinates and depth z to world points."""
        return transform_points(self.cam_to_world, unproject(self.K, pixels, depth))

    def ray_directions(self) -> Float[Tensor, "*batch h w 3"]:
        """World-space directions through every pixel centre, scaled so that their camera-space z is 1.

        A point at depth z on the ray of pixel p is `centers + z * ray_directions()[p]`.
        """
        pixels = pixel_centers(self.height, self.width, self.K.device, self.K.dtype).reshape(-1, 2)
        pixels = pixels.expand(*self.batch_shape, -1, -1)
        ones = torch.ones(pixels.shape[:-1], device=pixels.device, dtype=pixels.dtype)
        directions_cam = unproject(self.K, pixels, ones)
        directions = directions_cam @ self.cam_to_world[..., :3, :3].transpose(-1, -2)
        return directions.reshape(*self.batch_shape, self.height, self.width, 3)

    def backproject_depth(self, depth: Float[Tensor, "*batch h w"]) -> Float[Tensor, "*batch h w 3"]:
        """World point of every pixel centre at its depth (invalid depth gives the camera centre)."""
        if depth.shape[-2:] != (self.height, self.width):
            raise ValueError(
                f"Cameras.backproject_depth: depth is {tuple(depth.shape[-2:])}, cameras are "
                f"{self.height}x{self.width}"
            )
        return self.centers[..., None, None, :] + depth[..., None] * self.ray_directions()
