"""The dense feature volume of the NeRF baseline: a voxel grid over each sample's box, filled from encoder
features (no learning here; the 3D network that refines it is `unet3d.py`).

- Box: 3D encoders use the axis-aligned bounds of the sample's *visible* points (what the encoder sees);
  the 2D encoder uses the bounds of every view's frustum between model.near and volume.frustum_far (no
  depth is read, as NeRF pre-training of an image encoder must not). Both are padded on every side by
  `padding` × the box's largest side (PonderV2: 0.05 of its unit cube). The grid has `shape` = (X, Y, Z)
  cells along world x, y, z (z up; PonderV2: 128 × 128 × 32 over its box, anisotropic cells like here).
- Points → volume (`pool_points`): the mean feature of the points in each cell; empty cells are zero
  (PonderV2's "mean" pooling).
- Images → volume (`lift_images`): every cell centre is projected into every view and the feature map is
  sampled bilinearly there; the cell takes the mean over the views where its centre lies in front of the
  camera (z > near) and inside the image, zero where no view sees it.

Cell coordinates: cell (i, j, k) spans low + (i, j, k)·cell … low + (i+1, j+1, k+1)·cell and its value sits at
its centre, continuous coordinate (i, j, k) in `VolumeBox.cell_coords` (the convention of
gs3.render.volume.trilinear_lookup).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from gs3.cameras import Cameras, transform_points, unproject

_MIN_SIDE = 1e-3  # metres: a degenerate (flat) box still gets a positive extent


@dataclass
class VolumeBox:
    """Per sample: the box's corners (B, 3) and the grid's shape (X, Y, Z)."""

    low: Float[Tensor, "b 3"]
    high: Float[Tensor, "b 3"]
    shape: tuple[int, int, int]

    @property
    def batch_size(self) -> int:
        return self.low.shape[0]

    @property
    def num_cells(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def cell_size(self) -> Float[Tensor, "b 3"]:
        return (self.high - self.low) / self.low.new_tensor(self.shape)

    @property
    def scale(self) -> Float[Tensor, " b"]:
        """Half the box's largest side: the unit of the field's normalised coordinates."""
        return 0.5 * (self.high - self.low).amax(dim=-1)

    def cell_coords(self, points: Float[Tensor, "n 3"], sample: Int[Tensor, " n"]) -> Float[Tensor, "n 3"]:
        """Continuous cell coordinates (cell centres at integers) of world points of the given samples."""
        return (points - self.low[sample]) / self.cell_size[sample] - 0.5

    def normalized(self, points: Float[Tensor, "n 3"], sample: Int[Tensor, " n"]) -> Float[Tensor, "n 3"]:
        """World points → the box's frame: centre 0, largest half-side 1 (isotropic, like PonderV2's cube)."""
        centre = 0.5 * (self.low + self.high)
        return (points - centre[sample]) / self.scale[sample, None]

    def cell_centres(self) -> Float[Tensor, "b m 3"]:
        """World position of every cell centre, cells in (x, y, z) row-major order (z fastest)."""
        axes = [torch.arange(size, device=self.low.device, dtype=self.low.dtype) + 0.5 for size in self.shape]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        return self.low[:, None] + grid[None] * self.cell_size[:, None]

    def row_base(self, sample: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
        """First row of each sample's volume in the (B·X·Y·Z, C) flattening."""
        return sample * self.num_cells


def _padded(low: Tensor, high: Tensor, padding: float, shape: tuple[int, int, int]) -> VolumeBox:
    centre, half = 0.5 * (low + high), 0.5 * (high - low).clamp_min(_MIN_SIDE)
    margin = padding * 2.0 * half.amax(dim=-1, keepdim=True)
    return VolumeBox(centre - half - margin, centre + half + margin, tuple(int(s) for s in shape))


def points_box(
    coord: Float[Tensor, "n 3"],
    sample: Int[Tensor, " n"],
    batch_size: int,
    shape: tuple[int, int, int],
    padding: float,
) -> VolumeBox:
    """The padded bounds of each sample's points."""
    index = sample[:, None].expand(-1, 3)
    low = coord.new_full((batch_size, 3), float("inf")).scatter_reduce(0, index, coord, "amin")
    high = coord.new_full((batch_size, 3), float("-inf")).scatter_reduce(0, index, coord, "amax")
    return _padded(low.detach(), high.detach(), padding, shape)


def frustum_box(
    K: Float[Tensor, "b v 3 3"],
    cam_to_world: Float[Tensor, "b v 4 4"],
    width: int,
    height: int,
    near: float,
    far: float,
    shape: tuple[int, int, int],
    padding: float,
) -> VolumeBox:
    """The padded bounds of the views' frusta between depths near and far (image corners at both)."""
    corners = K.new_tensor([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]])
    corners = corners.expand(*K.shape[:2], 4, 2)
    points = []
    for depth in (near, far):
        camera = unproject(K, corners, torch.full(corners.shape[:-1], depth, dtype=K.dtype, device=K.device))
        points.append(transform_points(cam_to_world, camera))
    points = torch.cat(points, dim=-2).flatten(1, 2)  # (B, V·8, 3)
    return _padded(points.amin(dim=1), points.amax(dim=1), padding, shape)


def cell_index(box: VolumeBox, points: Float[Tensor, "n 3"], sample: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
    """Row (in the (B·X·Y·Z) flattening) of the cell holding each point (points outside are clamped in)."""
    cell = ((points - box.low[sample]) / box.cell_size[sample]).floor().long()
    cell = torch.minimum(cell.clamp_min(0), torch.tensor(box.shape, device=points.device) - 1)
    x, y, z = cell.unbind(-1)
    return box.row_base(sample) + (x * box.shape[1] + y) * box.shape[2] + z


def pool_points(
    features: Float[Tensor, "n c"], coord: Float[Tensor, "n 3"], sample: Int[Tensor, " n"], box: VolumeBox
) -> Float[Tensor, "b c x y z"]:
    """Mean feature of the points in each cell (zero where none); a channels-last view, no copy."""
    rows = cell_index(box, coord, sample)
    total = box.batch_size * box.num_cells
    sums = features.new_zeros(total, features.shape[1]).index_add(0, rows, features)
    counts = torch.bincount(rows, minlength=total).clamp_min(1).to(features.dtype)
    volume = (sums / counts[:, None]).reshape(box.batch_size, *box.shape, features.shape[1])
    return volume.permute(0, 4, 1, 2, 3)


def lift_images(
    features: Float[Tensor, "b v c h w"],
    K: Float[Tensor, "b v 3 3"],
    cam_to_world: Float[Tensor, "b v 4 4"],
    width: int,
    height: int,
    box: VolumeBox,
    near: float,
) -> Float[Tensor, "b c x y z"]:
    """Mean over the views that see it of the bilinearly sampled feature at every cell centre.

    `K` is for `width` × `height` images; the feature maps may be smaller (they are sampled in normalised
    image coordinates)."""
    b, v, c = features.shape[:3]
    centres = box.cell_centres()  # (B, M, 3)
    total = features.new_zeros(b, c, box.num_cells)
    count = features.new_zeros(b, 1, box.num_cells)
    for view in range(v):
        cameras = Cameras(K[:, view], cam_to_world[:, view], width, height)
        pixels, depth = cameras.world_to_pixels(centres)  # (B, M, 2) in image pixels
        seen = (depth > near) & (pixels >= 0).all(-1) & (pixels[..., 0] <= width) & (pixels[..., 1] <= height)
        # grid_sample with align_corners=False puts -1/+1 at the image's outer edges: pixel centres at +0.5
        grid = torch.stack([pixels[..., 0] / width, pixels[..., 1] / height], dim=-1) * 2.0 - 1.0
        grid = torch.where(seen[..., None], grid, torch.zeros_like(grid))  # keep unseen finite
        sampled = F.grid_sample(features[:, view], grid[:, None], align_corners=False)[:, :, 0]  # (B, C, M)
        mask = seen[:, None].to(features.dtype)
        total = total + sampled * mask
        count = count + mask
    volume = total / count.clamp_min(1.0)
    return volume.reshape(b, c, *box.shape)


__all__ = [
    "VolumeBox",
    "cell_index",
    "frustum_box",
    "lift_images",
    "points_box",
    "pool_points",
]
