"""Grid sampling (voxelisation) of batched point clouds, with the map from every point back to its voxel.

One voxel per occupied grid cell; its feature is the MEAN of its points' features. The mean (rather than
Pointcept's random/first point per cell) uses every pixel's colour, is deterministic and independent of
the point order (so features follow their points under permutation), and passes gradient to every
point's feature. Grid coordinates follow Pointcept's GridSample: floor(coord / voxel_size), so cell
boundaries sit on multiples of the voxel size in world space, minus the sample's minimum cell, so each
sample's coordinates start at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gs3.errors import DataError

_INT64_SAFE = 2**62


@dataclass
class Voxels:
    """Occupied voxels of a batch, sorted by (sample, x, y, z)."""

    grid_coord: Int[Tensor, "m 3"]  # integer cell of each voxel, from its sample's minimum cell (>= 0)
    batch: Int[Tensor, " m"]  # sample index of each voxel
    feat: Float[Tensor, "m c"]  # mean feature of the voxel's points
    count: Int[Tensor, " m"]  # number of points in each voxel
    inverse: Int[Tensor, " n"]  # voxel index of every input point
    batch_size: int

    @property
    def offset(self) -> Int[Tensor, " b"]:
        """Cumulative voxel counts per sample (end indices, Pointcept's convention)."""
        per_sample = torch.bincount(self.batch, minlength=self.batch_size)
        return torch.cumsum(per_sample, 0)


def offset_to_batch(offset: Int[Tensor, " b"], num_points: int) -> Int[Tensor, " n"]:
    """Sample index of every point from cumulative end indices; checks that they cover all points."""
    offset = offset.long()
    if offset.ndim != 1 or offset.numel() == 0:
        raise DataError(
            f"offset must be a non-empty 1-D tensor of end indices, got shape {tuple(offset.shape)}"
        )
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    if bool((counts < 0).any()) or int(offset[-1]) != num_points:
        raise DataError(f"offset {offset.tolist()} must be non-decreasing and end at the {num_points} points")
    return torch.repeat_interleave(torch.arange(offset.numel(), device=offset.device), counts)


def voxelize(
    coord: Float[Tensor, "n 3"],
    feat: Float[Tensor, "n c"],
    offset: Int[Tensor, " b"],
    voxel_size: float,
) -> Voxels:
    """Grid-sample a batch of point clouds (concatenated, `offset` = end index of each sample)."""
    if voxel_size <= 0:
        raise DataError(f"voxel_size must be positive, got {voxel_size}")
    if coord.shape[0] != feat.shape[0]:
        raise DataError(f"coord has {coord.shape[0]} points but feat has {feat.shape[0]}")
    point_batch = offset_to_batch(offset, coord.shape[0])
    batch_size = offset.numel()
    cell = torch.floor(coord.detach().double() / voxel_size).long()
    sample_min = torch.zeros(batch_size, 3, dtype=torch.long, device=coord.device)
    sample_min.scatter_reduce_(0, point_batch[:, None].expand(-1, 3), cell, "amin", include_self=False)
    cell = cell - sample_min[point_batch]

    keys = torch.cat([point_batch[:, None], cell], dim=1)
    extent = keys.amax(0) + 1 if keys.numel() else torch.ones(4, dtype=torch.long, device=coord.device)
    if float(torch.prod(extent.double())) < _INT64_SAFE:
        # One int64 key per cell is far faster to sort than unique over rows.
        flat = ((keys[:, 0] * extent[1] + keys[:, 1]) * extent[2] + keys[:, 2]) * extent[3] + keys[:, 3]
        _, inverse, count = torch.unique(flat, return_inverse=True, return_counts=True)
    else:
        _, inverse, count = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    num_voxels = count.numel()
    voxel_keys = keys.new_zeros(num_voxels, 4).index_copy_(0, inverse, keys)

    feat_sum = feat.new_zeros(num_voxels, feat.shape[1]).index_add(0, inverse, feat)
    voxel_feat = feat_sum / count[:, None].to(feat.dtype)
    return Voxels(
        grid_coord=voxel_keys[:, 1:],
        batch=voxel_keys[:, 0],
        feat=voxel_feat,
        count=count,
        inverse=inverse,
        batch_size=batch_size,
    )
