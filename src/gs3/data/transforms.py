"""Resizing and back-projection (the rotation augmentation lives in gs3.data.augment, re-exported here).

Resize rules (half-pixel convention, DESIGN.md): an image resized from (W, H) to (w, h) maps pixel centres by
x' = x · w / W, so K scales exactly by (w / W, h / H) (gs3.cameras.scale_intrinsics).

* Colour: Pillow's antialiased bilinear resize (its filter support widens with the reduction factor, so it
  averages the whole footprint). JPEG colour is decoded with Pillow's ``draft`` first when that helps: libjpeg
  then decodes at 1/2, 1/4 or 1/8 scale directly from the DCT coefficients (the smallest scale still at least
  the target size), which is several times faster; the decoded image is then resized to exactly the target
  size, so the result is still "the colour resized to the target" (it differs from full decode + resize by
  ~1/255 on average, the difference between two anti-aliasing filters).
* Depth: nearest neighbour, the source pixel containing the target pixel's centre, i.e. source index
  floor((i + 0.5) · W / w). Every output value is an input value, so valid and invalid depths are never mixed
  and no "flying" depths are invented at object edges. (At an exact 2× reduction the centre falls on a source
  pixel corner; the rule takes the lower-right of the four pixels, a fixed ¼-target-pixel offset that is well
  below the depth sensor's own colour/depth misregistration.)
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int
from PIL import Image
from torch import Tensor

from gs3.cameras import scale_intrinsics
from gs3.data.augment import random_rotation, rotation_matrix  # noqa: F401 (re-exported)

RESOLUTIONS = {"320x240": (320, 240), "256x192": (256, 192), "512x384": (512, 384)}
DEFAULT_RESOLUTION = (320, 240)  # (width, height)


def parse_resolution(resolution: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """'320x240' or (320, 240) → (width, height)."""
    if isinstance(resolution, str):
        width, _, height = resolution.lower().partition("x")
        return int(width), int(height)
    width, height = resolution
    return int(width), int(height)


def nearest_source_indices(size_in: int, size_out: int) -> np.ndarray:
    """For each output pixel, the input pixel that contains its centre: floor((i + 0.5) · in / out)."""
    indices = np.floor((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.int64)
    return np.minimum(indices, size_in - 1)


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour depth resize to (width, height); keeps dtype; never mixes valid and invalid."""
    height_in, width_in = depth.shape
    width, height = size
    if (width, height) == (width_in, height_in):
        return depth
    rows = nearest_source_indices(height_in, height)
    cols = nearest_source_indices(width_in, width)
    return depth[rows[:, None], cols[None, :]]


def decode_color(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Decode a (lazily opened) Pillow image to float32 (h, w, 3) in [0, 1] at exactly size = (w, h).

    JPEGs larger than the target are decoded at a reduced DCT scale first (see the module docstring)."""
    if image.format == "JPEG" and (image.width > size[0] or image.height > size[1]):
        image.draft("RGB", size)
    image = image.convert("RGB")
    if image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255.0)


def resize_color_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (h, w, 3) image in [0, 1] with the antialiased bilinear filter of `decode_color`."""
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image.astype(np.float32, copy=False)
    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(size, Image.BILINEAR))
        for c in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def scale_K(K: np.ndarray, size_in: tuple[int, int], size_out: tuple[int, int]) -> np.ndarray:
    """K at size_in (w, h) → K at size_out, via gs3.cameras.scale_intrinsics (exact)."""
    sx, sy = size_out[0] / size_in[0], size_out[1] / size_in[1]
    return scale_intrinsics(torch.from_numpy(np.asarray(K, dtype=np.float64)), sx, sy).numpy()


def backproject(
    depth: Float[Tensor, "v h w"],
    K: Float[Tensor, "v 3 3"],
    cam_to_world: Float[Tensor, "v 4 4"],
    image: Float[Tensor, "v h w 3"],
) -> tuple[Float[Tensor, "n 3"], Float[Tensor, "n 3"], Int[Tensor, " n"], Int[Tensor, " n"]]:
    """Coloured world points of every valid-depth pixel of every view.

    Returns (coord, color, point_view, point_pixel) with point_pixel = y · W + x; points are ordered by view,
    then row-major pixel order. Pixel centres are at (x + 0.5, y + 0.5)."""
    views, height, width = depth.shape
    # Dense per-view computation on the pixel grid, then one boolean selection (keeps view-major order).
    u = torch.arange(width, dtype=depth.dtype, device=depth.device) + 0.5
    v = torch.arange(height, dtype=depth.dtype, device=depth.device) + 0.5
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    x_cam = (u[None, None, :] - cx) / fx * depth
    y_cam = (v[None, :, None] - cy) / fy * depth
    points_cam = torch.stack([x_cam, y_cam, depth], dim=-1).reshape(views, height * width, 3)
    world = points_cam @ cam_to_world[:, :3, :3].transpose(1, 2) + cam_to_world[:, None, :3, 3]
    valid = depth.reshape(views, height * width) > 0
    point_view, point_pixel = torch.nonzero(valid, as_tuple=True)
    coord = world[valid]
    color = image.reshape(views, height * width, 3)[valid]
    return coord, color, point_view, point_pixel


def apply_world_transform(
    transform: Float[Tensor, "4 4"], coord: Float[Tensor, "n 3"], cam_to_world: Float[Tensor, "v 4 4"]
) -> tuple[Float[Tensor, "n 3"], Float[Tensor, "v 4 4"]]:
    """Move the world by one rigid transform: points p → R p + t and every pose T → transform · T.

    Poses are composed in float64 (then cast back) so that float32 poses stay rigid to rounding."""
    coord = coord @ transform[:3, :3].to(coord.dtype).T + transform[:3, 3].to(coord.dtype)
    cam_to_world = (transform.double() @ cam_to_world.double()).to(cam_to_world.dtype)
    return coord, cam_to_world
