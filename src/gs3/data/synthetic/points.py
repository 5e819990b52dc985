"""The labelled point cloud: box faces sampled uniformly, kept where they can be seen from inside the room."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int

from gs3.errors import ConfigError

from .room import Room, cos_sin
from .textures import surface_color

DEFAULT_POINT_DENSITY = 1000.0  # points per m² of visible surface (~150k points per room, like ScanNet)


@dataclass
class PointCloud:
    """Points sampled uniformly on the visible surfaces of a room, with their colour in [0, 1], world
    normal, NYU40 class and instance id."""

    coord: Float[np.ndarray, "p 3"]
    color: Float[np.ndarray, "p 3"]
    normal: Float[np.ndarray, "p 3"]
    semantic: Int[np.ndarray, " p"]
    instance: Int[np.ndarray, " p"]

    def __len__(self) -> int:
        return len(self.coord)


def inside_any_box(room: Room, points: Float[np.ndarray, "n 3"]) -> np.ndarray:
    """Whether each point lies strictly inside some box of the room."""
    inside = np.zeros(len(points), dtype=bool)
    cos, sin = cos_sin(room.yaws)
    x, y, z = points.T
    for box in range(len(room)):
        cx, cy, cz = room.centers[box]
        hx, hy, hz = room.half_sizes[box]
        candidate = np.abs(z - cz) < hz
        dx, dy = x[candidate] - cx, y[candidate] - cy
        local_x = cos[box] * dx + sin[box] * dy
        local_y = cos[box] * dy - sin[box] * dx
        inside[np.flatnonzero(candidate)[(np.abs(local_x) < hx) & (np.abs(local_y) < hy)]] = True
    return inside


def _face_outside_room(room: Room, box: int, axis: int, sign: float) -> bool:
    """Whether a whole box face looks out of the room (the outside of the shell): all its corners, stepped
    1 mm along the normal, lie beyond the same side of the interior."""
    corners = np.array([(a, b) for a in (-1.0, 1.0) for b in (-1.0, 1.0)])
    local = np.zeros((4, 3))
    local[:, axis] = sign
    local[:, (axis + 1) % 3], local[:, (axis + 2) % 3] = corners[:, 0], corners[:, 1]
    normal = np.zeros(3)
    normal[axis] = sign
    rotation = room.rotations()[box]
    probe = (local * room.half_sizes[box] + 1e-3 * normal) @ rotation.T + room.centers[box]
    return bool(np.any(np.all(probe <= 0.0, axis=0)) or np.any(np.all(probe >= room.size, axis=0)))


def sample_point_cloud(
    room: Room, density: float = DEFAULT_POINT_DENSITY, rng: np.random.Generator | int = 0
) -> PointCloud:
    """Sample every box face uniformly (Poisson count, `density` points per m²) and keep the points of the
    surfaces one can see from inside the room: a point is dropped when a step of 1 mm along its normal
    leaves the room interior or enters another box (faces against walls, the floor under furniture, the
    outside of the shell)."""
    if density <= 0:
        raise ConfigError(f"point density must be positive, got {density}")
    rng = np.random.default_rng(rng)
    rotations = room.rotations()
    chunks: list[tuple[np.ndarray, ...]] = []
    for box in range(len(room)):
        half = room.half_sizes[box]
        for axis in range(3):
            other = [(axis + 1) % 3, (axis + 2) % 3]
            area = 4.0 * half[other[0]] * half[other[1]]
            for sign in (-1.0, 1.0):
                if _face_outside_room(room, box, axis, sign):
                    continue
                count = int(rng.poisson(area * density))
                local = (rng.random((count, 3)) * 2.0 - 1.0) * half
                local[:, axis] = sign * half[axis]
                chunks.append((np.full(count, box), local, np.full(count, axis)))
    box = np.concatenate([chunk[0] for chunk in chunks]).astype(np.int64)
    local = np.concatenate([chunk[1] for chunk in chunks])
    axis = np.concatenate([chunk[2] for chunk in chunks]).astype(np.int64)
    rows = np.arange(len(box))
    normal_local = np.zeros_like(local)
    normal_local[rows, axis] = np.sign(local[rows, axis])
    rotation = rotations[box]
    coord = np.einsum("nij,nj->ni", rotation, local) + room.centers[box]
    normal = np.einsum("nij,nj->ni", rotation, normal_local)
    probe = coord + 1e-3 * normal
    visible = np.all((probe > 0.0) & (probe < room.size), axis=1) & ~inside_any_box(room, probe)
    box, local, axis, coord, normal = (
        box[visible],
        local[visible],
        axis[visible],
        coord[visible],
        normal[visible],
    )
    return PointCloud(
        coord=coord.astype(np.float32),
        color=surface_color(room, box, local, axis, normal).astype(np.float32),
        normal=normal.astype(np.float32),
        semantic=room.box_semantic[box].astype(np.int32),
        instance=room.box_instance[box].astype(np.int32),
    )
