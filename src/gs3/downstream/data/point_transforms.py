"""From a labelled point cloud to a training or evaluation sample: Pointcept's SpUNet ScanNet pipeline.

Training (in this order; each random step draws from the sample's generator):
  centre (x, y to the bounding-box centre, z to its floor) → random dropout → rotation → scale → flip →
  jitter → elastic distortion → chromatic auto-contrast, translation, jitter (gs3.data.augment) →
  grid sampling, one random point per occupied ``grid_size`` cell → sphere crop (the ``sphere_crop`` points
  nearest a random point, when there are more) → centre x, y → shuffle.
Evaluation: centre → grid sampling (a seeded, fixed choice per cell) with the inverse map that carries every
  ORIGINAL point to the row of the sampled point that represents it → centre x, y. No crop, no augmentation.

The last centring moves x and y by a whole number of cells, so the cells of the sampled points are the cells
the encoder's own voxelisation (floor(coord / voxel)) finds again: one point per voxel at ``grid_size``.
(Pointcept centres by the exact amount and passes the grid coordinates along instead.)
Under the limited-annotation protocol, the labelled points survive dropout and grid sampling as in Pointcept
(they are added to the kept set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gs3.data import augment
from gs3.downstream.data.config import DownstreamDataConfig
from gs3.downstream.data.protocols import keep_labels
from gs3.downstream.data.samples import LabelledPoints


def center_shift(coord: np.ndarray, apply_z: bool = True, grid_size: float | None = None) -> np.ndarray:
    """Move the bounding-box centre of x and y (and the minimum z when apply_z) to 0; with ``grid_size`` the
    shift is rounded to whole cells (so grid cells are unchanged)."""
    low, high = coord.min(0).astype(np.float64), coord.max(0).astype(np.float64)
    shift = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2] if apply_z else 0.0])
    if grid_size is not None:
        shift = np.round(shift / grid_size) * grid_size
    return (coord.astype(np.float64) - shift).astype(coord.dtype)


@dataclass
class GridSample:
    index: np.ndarray  # (M,) the point kept for each occupied cell (cells in key order)
    inverse: np.ndarray | None  # (N,) for every input point, the row in ``index`` of its cell's point


def grid_sample(
    coord: np.ndarray,
    grid_size: float,
    rng: np.random.Generator | None = None,
    keep: np.ndarray | None = None,
) -> GridSample:
    """One point per occupied cell floor(coord / grid_size): uniformly at random with ``rng``, else the
    lowest-index point. With ``keep`` (point indices that must survive) the kept points are added and the
    result is sorted by point index, with no inverse."""
    cell = np.floor(coord.astype(np.float64) / grid_size).astype(np.int64)
    cell -= cell.min(0)
    extent = cell.max(0) + 1
    key = (cell[:, 0] * extent[1] + cell[:, 1]) * extent[2] + cell[:, 2]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")  # points grouped by cell, in input order within a cell
    starts = np.cumsum(counts) - counts
    offset = rng.integers(0, counts) if rng is not None else 0
    index = order[starts + offset]
    if keep is not None and len(keep):
        return GridSample(np.union1d(index, keep), None)
    return GridSample(index, inverse)


def sphere_crop(coord: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the ``max_points`` points nearest a random point (all points when fewer)."""
    if len(coord) <= max_points:
        return np.arange(len(coord))
    center = coord[rng.integers(len(coord))].astype(np.float64)
    distance = ((coord.astype(np.float64) - center) ** 2).sum(1)
    return np.sort(np.argpartition(distance, max_points - 1)[:max_points])


class PointTransform:
    """``transform(points, rng, labelled)`` → the sample dict of the batch contract (see the module doc)."""

    def __init__(self, config: DownstreamDataConfig, train: bool) -> None:
        self.config = config
        self.train = train

    def __call__(
        self, points: LabelledPoints, rng: np.random.Generator, labelled: np.ndarray | None = None
    ) -> dict:
        return self._train(points, rng, labelled) if self.train else self._evaluate(points, rng)

    def _train(self, points: LabelledPoints, rng: np.random.Generator, labelled: np.ndarray | None) -> dict:
        c, a = self.config, self.config.point_augment
        coord = center_shift(points.coord.numpy())
        color = points.color.numpy()
        segment = points.segment
        if labelled is not None:
            labelled = np.unique(labelled)
            segment = keep_labels(segment, labelled)
        segment = segment.numpy()
        if a.enabled:
            kept = augment.random_dropout(rng, len(coord), a.dropout_ratio, a.dropout_p)
            if kept is not None:
                if labelled is not None:
                    kept = np.union1d(kept, labelled)
                    labelled = np.searchsorted(kept, labelled)
                coord, color, segment = coord[kept], color[kept], segment[kept]
            rotation = augment.random_axis_rotation(
                rng, a.rotate_z * math.pi, a.rotate_xy * math.pi, a.rotate_p
            )
            coord = augment.rotate(coord, rotation)
            coord = augment.random_scale(rng, coord, a.scale[0], a.scale[1])
            coord = augment.random_flip(rng, coord, a.flip_p)
            coord = augment.random_jitter(rng, coord, a.jitter_sigma, a.jitter_clip)
            coord = augment.random_elastic(rng, coord, [tuple(pair) for pair in a.elastic], a.elastic_p)
            color = augment.chromatic_auto_contrast(rng, color, a.auto_contrast_p)
            color = augment.chromatic_translation(
                rng, color, a.color_translation_p, a.color_translation_ratio
            )
            color = augment.chromatic_jitter(rng, color, a.color_jitter_p, a.color_jitter_std)
        index = grid_sample(coord, c.grid_size, rng, keep=labelled).index
        if c.sphere_crop and len(index) > c.sphere_crop:
            index = index[sphere_crop(coord[index], c.sphere_crop, rng)]
        if a.enabled and a.shuffle:
            index = rng.permutation(index)
        coord = center_shift(coord[index], apply_z=False, grid_size=c.grid_size)
        return {
            "coord": torch.from_numpy(np.ascontiguousarray(coord, dtype=np.float32)),
            "color": torch.from_numpy(np.ascontiguousarray(color[index], dtype=np.float32)),
            "segment": torch.from_numpy(np.ascontiguousarray(segment[index], dtype=np.int64)),
            "name": points.name,
            "mix": float(rng.random()),  # this sample's draw for Mix3D (used when it leads a batch)
        }

    def _evaluate(self, points: LabelledPoints, rng: np.random.Generator) -> dict:
        grid_size = self.config.grid_size
        coord = center_shift(points.coord.numpy())
        sampled = grid_sample(coord, grid_size, rng)
        index = sampled.index
        return {
            "coord": torch.from_numpy(center_shift(coord[index], apply_z=False, grid_size=grid_size)),
            "color": points.color[torch.from_numpy(index)].contiguous(),
            "segment": points.segment[torch.from_numpy(index)].contiguous(),
            "name": points.name,
            "inverse": torch.from_numpy(sampled.inverse.astype(np.int64)),
            "origin_segment": points.segment.clone(),
        }
