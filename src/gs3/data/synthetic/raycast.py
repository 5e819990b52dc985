"""Exact ray casting of a room: per box, the rays of the pixels its projection can cover are slab-tested in
the box's frame; the nearest hit gives depth z (rays are scaled to camera-space z = 1), labels, normal and
colour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int

from .room import Room, cos_sin
from .textures import surface_color


@dataclass
class RenderedView:
    """One rendered view: colour (H,W,3) in [0,1], depth z (H,W) metres (0 = no hit), NYU40 class and
    instance id per pixel (0 = no hit), world normals (H,W,3) and the index of the box hit (-1 = none)."""

    image: Float[np.ndarray, "h w 3"]
    depth: Float[np.ndarray, "h w"]
    semantic: Int[np.ndarray, "h w"]
    instance: Int[np.ndarray, "h w"]
    normal: Float[np.ndarray, "h w 3"]
    box: Int[np.ndarray, "h w"]


def camera_rays(K: Float[np.ndarray, "3 3"], rotation: Float[np.ndarray, "3 3"], width: int, height: int):
    """World directions through every pixel centre (u + 0.5, v + 0.5), scaled to camera-space z = 1."""
    u = (np.arange(width) + 0.5 - K[0, 2]) / K[0, 0]
    v = (np.arange(height) + 0.5 - K[1, 2]) / K[1, 1]
    directions = np.empty((height, width, 3))
    directions[..., 0] = u[None, :]
    directions[..., 1] = v[:, None]
    directions[..., 2] = 1.0
    return directions @ rotation.T


def _slab_hits(
    origin: Float[np.ndarray, " 3"], directions: Float[np.ndarray, "n 3"], half: Float[np.ndarray, " 3"]
) -> tuple[np.ndarray, np.ndarray]:
    """Entry parameter t (inf = miss) and entry-face axis of rays from one origin against a box centred at
    the origin of the (local) frame the rays are given in."""
    t_enter, t_exit = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inverse = 1.0 / directions[:, axis]
            t_low = (-half[axis] - origin[axis]) * inverse
            t_high = (half[axis] - origin[axis]) * inverse
            # fmin/fmax drop the NaN of a ray parallel to and exactly on a slab plane.
            t_enter.append(np.fmin(t_low, t_high))
            t_exit.append(np.fmax(t_low, t_high))
    t_near = np.maximum(np.maximum(t_enter[0], t_enter[1]), t_enter[2])
    t_far = np.minimum(np.minimum(t_exit[0], t_exit[1]), t_exit[2])
    axis = np.where(t_enter[0] == t_near, 0, np.where(t_enter[1] == t_near, 1, 2))
    hit = (t_near <= t_far) & (t_near >= _NEAR)
    return np.where(hit, t_near, np.inf), axis


_CORNER_SIGNS = np.array([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)]) * 2.0 - 1.0
# The 12 edges of a box as pairs of corner indices that differ in one bit.
_EDGES = np.array([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit])
_NEAR = 1e-6  # m; hits nearer than this to the camera plane are not rendered (a near plane at 1 µm)


def _screen_rects(
    room: Room, K: np.ndarray, cam_to_world: np.ndarray, width: int, height: int
) -> Int[np.ndarray, "b 4"]:
    """Per box, the pixel rectangle (row0, row1, col0, col1; half-open) that can contain its hits.

    The part of a box in front of the near plane is the convex hull of its corners in front and of the points
    where its edges cross the plane, so its projection lies within the bounds of those points' projections.
    """
    corners = (_CORNER_SIGNS[None] * room.half_sizes[:, None]) @ room.rotations().transpose(0, 2, 1)
    cam = (corners + room.centers[:, None] - cam_to_world[:3, 3]) @ cam_to_world[:3, :3]
    start, end = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
    z0, z1 = start[..., 2], end[..., 2]
    crosses = (z0 - _NEAR) * (z1 - _NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(crosses, (_NEAR - z0) / (z1 - z0), 0.0)
    crossing = start + fraction[..., None] * (end - start)
    points = np.concatenate([cam, crossing], axis=1)
    usable = np.concatenate([cam[..., 2] >= _NEAR, crosses], axis=1)
    z = np.where(usable, np.maximum(points[..., 2], _NEAR), 1.0)
    u = K[0, 0] * points[..., 0] / z + K[0, 2]
    v = K[1, 1] * points[..., 1] / z + K[1, 2]
    # Pixel i is covered when its centre i + 0.5 lies in [min, max]; one pixel of margin for rounding.
    col0 = np.ceil(np.min(np.where(usable, u, np.inf), axis=1) - 0.5) - 1
    col1 = np.floor(np.max(np.where(usable, u, -np.inf), axis=1) - 0.5) + 2
    row0 = np.ceil(np.min(np.where(usable, v, np.inf), axis=1) - 0.5) - 1
    row1 = np.floor(np.max(np.where(usable, v, -np.inf), axis=1) - 0.5) + 2
    rects = np.stack(
        [
            np.clip(row0, 0, height),
            np.clip(row1, 0, height),
            np.clip(col0, 0, width),
            np.clip(col1, 0, width),
        ],
        1,
    )
    rects[~usable.any(axis=1)] = 0  # wholly behind the camera
    return rects.astype(np.int64)


def render_view(
    room: Room, K: Float[np.ndarray, "3 3"], cam_to_world: Float[np.ndarray, "4 4"], width: int, height: int
) -> RenderedView:
    """Ray-cast one view: exact depth z, labels, normals and shaded colour (float64 geometry)."""
    K = np.asarray(K, dtype=np.float64)
    cam_to_world = np.asarray(cam_to_world, dtype=np.float64)
    origin = cam_to_world[:3, 3]
    directions = camera_rays(K, cam_to_world[:3, :3], width, height)
    depth = np.full((height, width), np.inf)
    box_index = np.full((height, width), -1, dtype=np.int64)
    face_axis = np.zeros((height, width), dtype=np.int64)
    rotations = room.rotations()
    for box, (row0, row1, col0, col1) in enumerate(_screen_rects(room, K, cam_to_world, width, height)):
        if row0 >= row1 or col0 >= col1:
            continue
        rays = directions[row0:row1, col0:col1].reshape(-1, 3) @ rotations[box]  # world → box frame
        origin_local = (origin - room.centers[box]) @ rotations[box]
        t, axis = _slab_hits(origin_local, rays, room.half_sizes[box])
        t = t.reshape(row1 - row0, col1 - col0)
        closer = t < depth[row0:row1, col0:col1]
        np.copyto(depth[row0:row1, col0:col1], t, where=closer)
        box_index[row0:row1, col0:col1][closer] = box
        np.copyto(face_axis[row0:row1, col0:col1], axis.reshape(t.shape), where=closer)

    hit = box_index >= 0
    image = np.zeros((height, width, 3))
    normal = np.zeros((height, width, 3))
    semantic = np.zeros((height, width), dtype=np.int64)
    instance = np.zeros((height, width), dtype=np.int64)
    if hit.any():
        box, axis, t = box_index[hit], face_axis[hit], depth[hit]
        cos, sin = cos_sin(room.yaws)
        cos, sin = cos[box], sin[box]
        rays, offset = directions[hit], origin - room.centers[box]
        # World → box frame is the inverse yaw rotation: (x, y) → (cos x + sin y, cos y - sin x).
        rays_local = np.stack(
            [cos * rays[:, 0] + sin * rays[:, 1], cos * rays[:, 1] - sin * rays[:, 0], rays[:, 2]], 1
        )
        local = np.stack(
            [cos * offset[:, 0] + sin * offset[:, 1], cos * offset[:, 1] - sin * offset[:, 0], offset[:, 2]],
            1,
        )
        local += t[:, None] * rays_local
        rows = np.arange(len(box))
        sign = -np.sign(rays_local[rows, axis])
        local[rows, axis] = sign * room.half_sizes[box, axis]  # exactly on the face
        normal_local = np.zeros_like(local)
        normal_local[rows, axis] = sign
        normal_world = np.stack(
            [
                cos * normal_local[:, 0] - sin * normal_local[:, 1],
                sin * normal_local[:, 0] + cos * normal_local[:, 1],
                normal_local[:, 2],
            ],
            axis=1,
        )
        image[hit] = surface_color(room, box, local, axis, normal_world)
        normal[hit] = normal_world
        semantic[hit] = room.box_semantic[box]
        instance[hit] = room.box_instance[box]
    depth[~hit] = 0.0
    return RenderedView(
        image=image.astype(np.float32),
        depth=depth.astype(np.float32),
        semantic=semantic,
        instance=instance,
        normal=normal.astype(np.float32),
        box=box_index,
    )
