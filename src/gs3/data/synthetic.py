"""Procedural indoor RGB-D scenes with exact depth and per-pixel labels, in the ScanNet exported layout.

A room is a set of boxes, each rotated only about the vertical axis (yaw). The floor, ceiling and four
walls are slabs around the interior [0, sx] × [0, sy] × [0, sz] (world z up, floor at z = 0, like
axis-aligned ScanNet scenes); furniture is built from boxes (a table is a top slab and four legs, a bookshelf
is panels, boards and books, ...). Every box carries a semantic class (NYU40 ids, the ids ScanNet's labels
map to), an instance id and a material.

Views are rendered by exact ray casting: the ray of pixel (u, v) is scaled so that its camera-space z is 1,
so the slab-test parameter of the nearest hit *is* the depth z (not the ray length). Colour is a procedural
texture that is a function of the surface point in the box's own frame (view-consistent) times Lambertian
shading from fixed lights (view-independent), so all views of a point agree up to JPEG compression.

Cameras move along a smooth closed curve (an ellipse around the room centre at 1.3–1.6 m height) looking
inward (at the middle of the room) or outward (at the walls and what stands along them; chosen per scene) with
slow yaw, pitch and height wobble, 1.3–3.5 cm and ~1° per frame like a 30 Hz handheld scan. The room does
not depend on the number of frames or the image size, only on (seed, scene index).

Files of one scene (frame i = 0 .. F-1, not zero-padded; the layout of ScanNet's SensReader export):

    color/<i>.jpg                 RGB JPEG, quality 95
    depth/<i>.png                 uint16 millimetres, 0 = invalid
    pose/<i>.txt                  4×4 camera-to-world (OpenCV camera: x right, y down, z forward)
    intrinsic/intrinsic_color.txt, intrinsic_depth.txt   4×4 with K upper-left (colour and depth share K)
    intrinsic/extrinsic_color.txt, extrinsic_depth.txt   identity
    label/<i>.png                 uint16 semantic class per pixel (NYU40 id, 0 = unlabelled)
    instance/<i>.png              uint16 instance id per pixel (0 = none; ids match points.npz)
    points.npz                    labelled point cloud sampled uniformly on visible surfaces: coord (P,3)
                                  float32 m, color (P,3) uint8, normal (P,3) float32, semantic (P,) int32
                                  (NYU40), segment20 (P,) int32 (ScanNet-20 index, -1 = ignore),
                                  instance (P,) int32
    meta.json                     generator version, seeds, size, class table, instances
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Float, Int
from PIL import Image

from gs3.errors import ConfigError

GENERATOR_VERSION = "1"

# NYU40 ids (the ids ScanNet's `nyu40id` column maps raw labels to) of the classes the generator builds.
CLASS_NAMES: dict[int, str] = {
    1: "wall",
    2: "floor",
    3: "cabinet",
    4: "bed",
    5: "chair",
    6: "sofa",
    7: "table",
    8: "door",
    9: "window",
    10: "bookshelf",
    11: "picture",
    12: "counter",
    14: "desk",
    22: "ceiling",
    23: "books",
    24: "refrigerator",
    39: "otherfurniture",
}
CLASS_IDS: dict[str, int] = {name: class_id for class_id, name in CLASS_NAMES.items()}
# The ScanNet-20 benchmark classes as NYU40 ids, in benchmark order (index = segment20 label).
SCANNET20_NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FRAMES = 320, 240, 60
DEFAULT_POINT_DENSITY = 1000.0  # points per m² of visible surface (~150k points per room, like ScanNet)

_SHELL_THICKNESS = 0.1  # m; floor, ceiling and wall slabs
# m; no furniture footprint comes closer than this to the camera's ground track (low furniture: the second)
_CAMERA_CLEARANCE, _CAMERA_CLEARANCE_LOW, _LOW_FURNITURE = 0.35, 0.1, 1.0

# Material kinds (procedural textures).
_PLAIN, _NOISE, _CHECKER, _STRIPES, _PLANKS, _TILES = range(6)

# Fixed lights (unit directions towards the light, strength) + ambient: Lambertian, view-independent.
_AMBIENT = 0.38
_LIGHTS = (
    (np.array([0.35, 0.25, 0.9]), 0.45),
    (np.array([-0.6, 0.7, 0.25]), 0.22),
    (np.array([0.3, -0.8, -0.3]), 0.15),
)


def scannet20_index(semantic: np.ndarray) -> np.ndarray:
    """NYU40 ids → ScanNet-20 benchmark index (0..19), -1 for classes outside the benchmark (and 0)."""
    lookup = np.full(max(max(CLASS_NAMES), max(SCANNET20_NYU40_IDS)) + 2, -1, dtype=np.int32)
    lookup[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS), dtype=np.int32)
    semantic = np.asarray(semantic)
    return np.where(semantic < len(lookup), lookup[np.clip(semantic, 0, len(lookup) - 1)], -1).astype(
        np.int32
    )


def kinect_intrinsics(width: int, height: int) -> Float[np.ndarray, "3 3"]:
    """K of a Kinect-like camera (fx = fy = 585 at 640 px wide, ~57° horizontal field of view), centred."""
    focal = 585.0 * width / 640.0
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------- room


@dataclass
class Materials:
    """Procedural materials, one row each: texture kind, two colours, feature size (m), stripe direction
    and noise seed."""

    kind: Int[np.ndarray, " m"]
    colors: Float[np.ndarray, "m 2 3"]
    scale: Float[np.ndarray, " m"]
    direction: Float[np.ndarray, "m 3"]
    seed: Int[np.ndarray, " m"]


@dataclass
class Room:
    """The boxes of one room. Box b spans `half_sizes[b]` about `centers[b]` in its own frame, which is the
    world frame rotated by `yaws[b]` about +z; it belongs to instance `box_instance[b]` of NYU40 class
    `box_semantic[b]` and is painted with material `box_material[b]`."""

    size: Float[np.ndarray, " 3"]
    centers: Float[np.ndarray, "b 3"]
    half_sizes: Float[np.ndarray, "b 3"]
    yaws: Float[np.ndarray, " b"]
    box_semantic: Int[np.ndarray, " b"]
    box_instance: Int[np.ndarray, " b"]
    box_material: Int[np.ndarray, " b"]
    materials: Materials
    instance_semantic: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.centers)

    def rotations(self) -> Float[np.ndarray, "b 3 3"]:
        """Box-to-world rotation of every box."""
        return _yaw_matrices(self.yaws)


def room_from_boxes(
    size: Sequence[float],
    centers: Sequence[Sequence[float]],
    half_sizes: Sequence[Sequence[float]],
    yaws: Sequence[float] | None = None,
    semantic: Sequence[int] | None = None,
    color: Sequence[float] = (0.6, 0.6, 0.6),
) -> Room:
    """A room of given boxes, one instance each (ids 1, 2, ...), all painted one plain colour; for tests and
    hand-built scenes. `semantic` defaults to otherfurniture."""
    count = len(centers)
    semantic = np.full(count, CLASS_IDS["otherfurniture"]) if semantic is None else np.asarray(semantic)
    base = np.asarray(color, dtype=np.float64)
    return Room(
        size=np.asarray(size, dtype=np.float64),
        centers=np.asarray(centers, dtype=np.float64).reshape(count, 3),
        half_sizes=np.asarray(half_sizes, dtype=np.float64).reshape(count, 3),
        yaws=np.zeros(count) if yaws is None else np.asarray(yaws, dtype=np.float64),
        box_semantic=semantic.astype(np.int64),
        box_instance=np.arange(1, count + 1),
        box_material=np.zeros(count, dtype=np.int64),
        materials=Materials(
            kind=np.array([_PLAIN]),
            colors=np.stack([base, base])[None],
            scale=np.array([1.0]),
            direction=np.array([[1.0, 0.0, 0.0]]),
            seed=np.array([0]),
        ),
        instance_semantic={i + 1: int(c) for i, c in enumerate(semantic)},
    )


def _cos_sin(yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Snap the float noise of multiples of π/2 so wall-aligned boxes are exactly axis-aligned.
    cos, sin = np.cos(yaw), np.sin(yaw)
    cos = np.where(np.abs(cos) < 1e-12, 0.0, np.where(np.abs(np.abs(cos) - 1) < 1e-15, np.sign(cos), cos))
    sin = np.where(np.abs(sin) < 1e-12, 0.0, np.where(np.abs(np.abs(sin) - 1) < 1e-15, np.sign(sin), sin))
    return cos, sin


def _yaw_matrices(yaws: np.ndarray) -> np.ndarray:
    cos, sin = _cos_sin(np.asarray(yaws, dtype=np.float64))
    rotations = np.zeros((*cos.shape, 3, 3))
    rotations[..., 0, 0], rotations[..., 0, 1] = cos, -sin
    rotations[..., 1, 0], rotations[..., 1, 1] = sin, cos
    rotations[..., 2, 2] = 1.0
    return rotations


# ------------------------------------------------------------------------------------------- textures

_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_PRIMES = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))
_SEED_PRIME = np.uint64(0xD6E8FEB86659FD93)


def _finalise(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of uint64 hashes, to floats in [0, 1)."""
    h = (h ^ (h >> np.uint64(30))) * _MIX_1
    h = (h ^ (h >> np.uint64(27))) * _MIX_2
    h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _lattice_terms(seed: np.ndarray, coord: np.ndarray, axis: int) -> np.ndarray:
    term = np.asarray(coord, dtype=np.int64).view(np.uint64) * _PRIMES[axis]
    return term if axis else term + np.asarray(seed, dtype=np.int64).view(np.uint64) * _SEED_PRIME


def _hash_unit(seed: np.ndarray, *coords: np.ndarray) -> np.ndarray:
    """A deterministic hash of integer lattice coordinates (up to 3) and a seed to [0, 1)."""
    h = sum(_lattice_terms(seed, coord, axis) for axis, coord in enumerate(coords))  # wraps mod 2**64
    return _finalise(h)


def _value_noise(points: Float[np.ndarray, "n 3"], seed: np.ndarray) -> Float[np.ndarray, " n"]:
    """Smooth 3D value noise in [0, 1] (trilinear interpolation of lattice hashes with smoothstep)."""
    cell = np.floor(points)
    frac = points - cell
    weight = frac * frac * (3.0 - 2.0 * frac)
    cell = cell.astype(np.int64)
    # Per axis the hash terms of the lower and upper lattice plane; a corner's hash is their sum.
    terms = [[_lattice_terms(seed, cell[:, axis] + step, axis) for step in (0, 1)] for axis in range(3)]
    wx, wy, wz = weight.T
    along_y = []
    for k in (0, 1):
        along_x = []
        for j in (0, 1):
            base = terms[1][j] + terms[2][k]
            low, high = _finalise(base + terms[0][0]), _finalise(base + terms[0][1])
            along_x.append(low + wx * (high - low))
        along_y.append(along_x[0] + wy * (along_x[1] - along_x[0]))
    return along_y[0] + wz * (along_y[1] - along_y[0])


def _fbm(points: np.ndarray, seed: np.ndarray, octaves: int = 3) -> np.ndarray:
    total, norm, amplitude = np.zeros(len(points)), 0.0, 1.0
    for octave in range(octaves):
        total += amplitude * _value_noise(points * 2.0**octave, seed + 7919 * octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def surface_albedo(
    room: Room,
    box: Int[np.ndarray, " n"],
    local: Float[np.ndarray, "n 3"],
    axis: Int[np.ndarray, " n"],
) -> Float[np.ndarray, "n 3"]:
    """Albedo in [0, 1] of surface points given in their box's frame; `axis` is the face's normal axis.

    A function of the surface point only, so every view (and the point cloud) sees the same colour.
    """
    materials = room.materials
    material = room.box_material[box]
    kind = materials.kind[material]
    scale = materials.scale[material]
    # Coordinates in units of the feature size, from the box corner; face (u, v): the two non-normal axes.
    corner_local = (local + room.half_sizes[box]) / scale[:, None]
    rows = np.arange(len(box))
    face_u = corner_local[rows, (axis + 1) % 3]
    face_v = corner_local[rows, (axis + 2) % 3]
    mix = np.empty(len(box))
    for kind_id in np.flatnonzero(np.bincount(kind, minlength=6)):
        sel = np.flatnonzero(kind == kind_id)
        m = material[sel]
        seed = materials.seed[m]
        p, u, v = corner_local[sel], face_u[sel], face_v[sel]
        if kind_id == _PLAIN:
            mix[sel] = 0.5 + 0.35 * (_fbm(p, seed, octaves=2) - 0.5)
        elif kind_id == _NOISE:
            mix[sel] = np.clip(1.6 * (_fbm(p, seed) - 0.5) + 0.5, 0.0, 1.0)
        elif kind_id == _CHECKER:
            odd = (np.floor(u) + np.floor(v)).astype(np.int64) & 1
            mix[sel] = 0.85 * odd + 0.15 * _value_noise(p * 4.0, seed)
        elif kind_id == _STRIPES:
            direction = materials.direction[m]
            phase = p[:, 0] * direction[:, 0] + p[:, 1] * direction[:, 1] + p[:, 2] * direction[:, 2]
            mix[sel] = 0.85 * (phase - np.floor(phase) < 0.5) + 0.15 * _value_noise(p * 3.0, seed)
        elif kind_id == _PLANKS:
            plank = np.floor(v)
            shift = _hash_unit(seed, plank) * 17.0
            grain = _fbm(np.stack([(u + shift) * 0.6, v * 8.0, plank], axis=1), seed, octaves=2)
            wood = np.clip(0.25 + 0.5 * _hash_unit(seed + 1, plank) + 0.6 * (grain - 0.5), 0.0, 1.0)
            mix[sel] = np.where(v - plank < 0.04, 1.0, wood)  # dark gap between planks
        else:  # _TILES
            tile_u, tile_v = np.floor(u), np.floor(v)
            grout = np.minimum(u - tile_u, v - tile_v) < 0.04
            mix[sel] = np.where(grout, 1.0, 0.25 * _hash_unit(seed, tile_u, tile_v))
    colors = materials.colors[material]
    albedo = colors[:, 0] + mix[:, None] * (colors[:, 1] - colors[:, 0])
    return np.clip(albedo, 0.0, 1.0)


def lambert_shading(normals: Float[np.ndarray, "n 3"]) -> Float[np.ndarray, " n"]:
    """Ambient + Lambertian terms of the fixed lights for world-space unit normals."""
    shade = np.full(len(normals), _AMBIENT)
    for direction, strength in _LIGHTS:
        shade += strength * np.clip(normals @ (direction / np.linalg.norm(direction)), 0.0, None)
    return shade


def surface_color(
    room: Room, box: Int[np.ndarray, " n"], local: Float[np.ndarray, "n 3"], axis: Int[np.ndarray, " n"],
    normals: Float[np.ndarray, "n 3"],
) -> Float[np.ndarray, "n 3"]:  # fmt: skip
    """Shaded colour in [0, 1] of surface points (the same for every view: Lambertian, fixed lights)."""
    return np.clip(surface_albedo(room, box, local, axis) * lambert_shading(normals)[:, None], 0.0, 1.0)


# ------------------------------------------------------------------------------------------ rendering


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
        cos, sin = _cos_sin(room.yaws)
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


# --------------------------------------------------------------------------------------- point cloud


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
    cos, sin = _cos_sin(room.yaws)
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


# ------------------------------------------------------------------------------------------- cameras


@dataclass
class CameraPath:
    """A smooth handheld-like camera path: an ellipse around `center` (x, y) at about `height`, looking
    towards the centre (or straight away from it when `outward`) with slow sinusoidal yaw, pitch, roll and
    height wobble; `step` metres along the ellipse per frame, in direction `turn` (+1 counter-clockwise,
    -1 clockwise) from angle `start`."""

    center: Float[np.ndarray, " 2"]
    radii: Float[np.ndarray, " 2"]
    start: float
    turn: float
    step: float
    height: float
    pitch: float
    height_amplitude: float
    yaw_amplitude: float
    pitch_amplitude: float
    roll_amplitude: float
    periods: Float[np.ndarray, " 4"]  # frames, for height, yaw, pitch, roll wobble
    phases: Float[np.ndarray, " 4"]
    outward: bool = False

    def angles(self, num_frames: int) -> Float[np.ndarray, " f"]:
        """Ellipse angle of every frame, spaced `step` metres of arc apart."""
        angles = np.empty(num_frames)
        angle = self.start
        for frame in range(num_frames):
            angles[frame] = angle
            speed = math.hypot(self.radii[0] * math.sin(angle), self.radii[1] * math.cos(angle))
            angle += self.turn * self.step / speed
        return angles

    def ground_track(self, samples: int = 256) -> Float[np.ndarray, "n 2"]:
        """Points of the whole ellipse (the camera never leaves it, however many frames)."""
        angles = np.linspace(0.0, 2.0 * math.pi, samples, endpoint=False)
        return self.center + self.radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def poses(self, num_frames: int) -> Float[np.ndarray, "f 4 4"]:
        """Camera-to-world 4×4 of every frame (OpenCV camera axes)."""
        angles = self.angles(num_frames)
        frames = np.arange(num_frames, dtype=np.float64)
        wobble = np.sin(2.0 * math.pi * frames[:, None] / self.periods + self.phases)
        position = np.empty((num_frames, 3))
        position[:, :2] = self.center + self.radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        position[:, 2] = self.height + self.height_amplitude * wobble[:, 0]
        to_center = self.center - position[:, :2]
        yaw = np.arctan2(to_center[:, 1], to_center[:, 0]) + self.yaw_amplitude * wobble[:, 1]
        if self.outward:
            yaw = yaw + math.pi
        pitch = self.pitch + self.pitch_amplitude * wobble[:, 2]
        roll = self.roll_amplitude * wobble[:, 3]
        poses = np.zeros((num_frames, 4, 4))
        poses[:, :3, :3] = look_rotation(yaw, pitch, roll)
        poses[:, :3, 3] = position
        poses[:, 3, 3] = 1.0
        return poses


def look_rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray | float = 0.0) -> np.ndarray:
    """Camera-to-world rotation (OpenCV axes) looking along yaw (about world +z, from +x) and pitch
    (up positive), rolled about the viewing direction; world z is up."""
    yaw, pitch = np.asarray(yaw, dtype=np.float64), np.asarray(pitch, dtype=np.float64)
    roll = np.broadcast_to(np.asarray(roll, dtype=np.float64), yaw.shape)
    forward = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=-1)
    right = np.stack([np.sin(yaw), -np.cos(yaw), np.zeros_like(yaw)], axis=-1)  # forward × up, normalised
    down = np.cross(forward, right)
    cos, sin = np.cos(roll)[..., None], np.sin(roll)[..., None]
    right, down = cos * right + sin * down, cos * down - sin * right
    return np.stack([right, down, forward], axis=-1)


def _random_camera_path(rng: np.random.Generator, size: np.ndarray) -> CameraPath:
    # Looking outward, a smaller ellipse and a steeper pitch keep the walls 1.2-3 m away with floor in view.
    outward = bool(rng.random() < 0.5)
    radius_range, pitch_range = ((0.15, 0.22), (-30.0, -15.0)) if outward else ((0.2, 0.27), (-20.0, -6.0))
    radii = rng.uniform(*radius_range, 2) * size[:2]
    # The view turns with the angle around the centre: at most ~1.3° per frame (plus the yaw wobble).
    step = min(float(rng.uniform(0.02, 0.035)), math.radians(1.3) * float(radii.min()))
    return CameraPath(
        center=size[:2] / 2 + rng.uniform(-0.05, 0.05, 2) * size[:2],
        radii=radii,
        start=float(rng.uniform(0.0, 2.0 * math.pi)),
        turn=float(rng.choice([-1.0, 1.0])),
        step=step,
        height=float(rng.uniform(1.35, 1.55)),
        pitch=float(np.deg2rad(rng.uniform(*pitch_range))),
        height_amplitude=float(rng.uniform(0.02, 0.06)),
        yaw_amplitude=float(np.deg2rad(rng.uniform(10.0, 25.0))),
        pitch_amplitude=float(np.deg2rad(rng.uniform(2.0, 6.0))),
        roll_amplitude=float(np.deg2rad(rng.uniform(0.5, 2.5))),
        periods=rng.uniform(120.0, 260.0, 4),
        phases=rng.uniform(0.0, 2.0 * math.pi, 4),
        outward=outward,
    )


# ------------------------------------------------------------------------------------ room generation

Part = tuple[Sequence[float], Sequence[float], str]  # (centre, half size) in the object frame, material key


@dataclass
class _Template:
    """An object in its own frame: floor at z = 0, back at -y (against a wall), front towards +y."""

    semantic: str
    parts: list[Part]
    palettes: dict[str, str]  # material key → palette name
    footprint: tuple[float, float]  # half extents (x, y) on the floor


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def _palette_material(rng: np.random.Generator, palette: str) -> tuple[int, np.ndarray, np.ndarray, float]:
    """(kind, colour a, colour b, feature size) for a named palette."""
    u = rng.uniform
    if palette == "wood":
        base = _hsv(u(0.05, 0.11), u(0.35, 0.7), u(0.3, 0.75))
        kind = int(rng.choice([_PLANKS, _STRIPES, _NOISE]))
        return kind, base, base * u(0.55, 0.8), u(0.06, 0.15) if kind == _PLANKS else u(0.02, 0.06)
    if palette == "fabric":
        base = _hsv(u(), u(0.15, 0.65), u(0.3, 0.85))
        kind = int(rng.choice([_NOISE, _NOISE, _STRIPES, _CHECKER]))
        other = base * u(0.6, 0.85) if kind == _NOISE else _hsv(u(), u(0.1, 0.6), u(0.4, 0.95))
        return kind, base, other, u(0.03, 0.08) if kind == _NOISE else u(0.06, 0.2)
    if palette == "paint":
        base = _hsv(u(), u(0.0, 0.45), u(0.35, 0.95))
        return int(rng.choice([_PLAIN, _NOISE])), base, base * u(0.75, 0.95), u(0.1, 0.4)
    if palette == "metal":
        grey = u(0.15, 0.75)
        return _PLAIN, np.full(3, grey), np.full(3, grey * 0.9), 0.05
    if palette == "wall":
        base = _hsv(u(), u(0.0, 0.18), u(0.72, 0.95))
        kind = int(rng.choice([_PLAIN, _PLAIN, _STRIPES, _NOISE]))
        return kind, base, base * u(0.8, 0.93), u(0.08, 0.3) if kind == _STRIPES else u(0.3, 1.0)
    if palette == "floor":
        kind = int(rng.choice([_PLANKS, _TILES, _CHECKER, _NOISE]))
        base = (
            _hsv(u(0.04, 0.12), u(0.2, 0.6), u(0.35, 0.8))
            if kind == _PLANKS
            else _hsv(u(), u(0, 0.35), u(0.3, 0.9))
        )
        other = base * u(0.4, 0.7) if kind in (_PLANKS, _TILES) else _hsv(u(), u(0, 0.4), u(0.2, 0.9))
        return (
            kind,
            base,
            other,
            {_PLANKS: u(0.1, 0.2), _TILES: u(0.3, 0.6), _CHECKER: u(0.3, 0.5)}.get(kind, 0.1),
        )
    if palette == "ceiling":
        grey = u(0.85, 0.97)
        return _PLAIN, np.full(3, grey), np.full(3, grey * 0.95), 0.5
    if palette == "glass":
        base = _hsv(u(0.52, 0.62), u(0.1, 0.35), u(0.85, 1.0))
        return _NOISE, base, base * u(0.8, 0.95), u(0.2, 0.5)
    if palette == "art":
        kind = int(rng.choice([_NOISE, _CHECKER, _STRIPES]))
        return kind, _hsv(u(), u(0.4, 0.9), u(0.4, 1.0)), _hsv(u(), u(0.4, 0.9), u(0.2, 0.9)), u(0.03, 0.12)
    if palette == "stone":
        base = _hsv(u(), u(0.0, 0.2), u(0.2, 0.9))
        return _NOISE, base, base * u(0.5, 0.8), u(0.01, 0.04)
    raise ValueError(f"unknown palette {palette!r}")


class _RoomBuilder:
    """Accumulates boxes, materials and occupied floor footprints while a room is generated."""

    def __init__(self, rng: np.random.Generator, size: np.ndarray, keep_out: np.ndarray) -> None:
        self.rng = rng
        self.size = size
        self.keep_out = keep_out
        self.boxes: list[tuple[np.ndarray, np.ndarray, float, int, int, int]] = []
        self.materials: list[tuple[int, np.ndarray, np.ndarray, float, np.ndarray, int]] = []
        self.instance_semantic: dict[int, int] = {}
        self.footprints: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.wall_spans: dict[int, list[tuple[float, float]]] = {wall: [] for wall in range(4)}

    def material(self, palette: str) -> int:
        kind, color_a, color_b, scale = _palette_material(self.rng, palette)
        direction = self.rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        seed = int(self.rng.integers(0, 2**31))
        self.materials.append((kind, np.clip(color_a, 0, 1), np.clip(color_b, 0, 1), scale, direction, seed))
        return len(self.materials) - 1

    def new_instance(self, semantic: str) -> int:
        instance = len(self.instance_semantic) + 1
        self.instance_semantic[instance] = CLASS_IDS[semantic]
        return instance

    def add_box(self, center, half, yaw: float, instance: int, material: int) -> None:
        semantic = self.instance_semantic[instance]
        self.boxes.append(
            (np.asarray(center, float), np.asarray(half, float), yaw, semantic, instance, material)
        )

    def fits(
        self, position: np.ndarray, half: np.ndarray, yaw: float, clearance: float, margin: float = 0.03
    ) -> bool:
        """Whether a floor footprint lies in the room, `clearance` from the camera track and clear of other
        footprints."""
        corners = (
            position + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ _yaw_matrices(yaw)[:2, :2].T
        )
        if np.any(corners < 0.0) or np.any(corners > self.size[:2]):
            return False
        if np.min(_point_rect_distance(self.keep_out, position, half, yaw)) < clearance:
            return False
        return not any(
            _rects_overlap(position, half + margin, yaw, other_pos, other_half, other_yaw)
            for other_pos, other_half, other_yaw in self.footprints
        )

    def place(self, template: _Template, position: np.ndarray, yaw: float) -> int | None:
        """Add an object if its footprint fits; returns its instance id."""
        half = np.asarray(template.footprint, float)
        top = max(center[2] + half_size[2] for center, half_size, _ in template.parts)
        # The camera stays above 1.3 m: low furniture may pass under it, tall furniture keeps its distance.
        clearance = _CAMERA_CLEARANCE if top > _LOW_FURNITURE else _CAMERA_CLEARANCE_LOW
        if not self.fits(position, half, yaw, clearance):
            return None
        self.footprints.append((position, half, yaw))
        return self.add_object(template, position, yaw)

    def add_object(self, template: _Template, position: np.ndarray, yaw: float) -> int:
        instance = self.new_instance(template.semantic)
        materials = {key: self.material(palette) for key, palette in template.palettes.items()}
        rotation = _yaw_matrices(yaw)
        for center, half, key in template.parts:
            world = rotation @ np.asarray(center, float) + np.array([position[0], position[1], 0.0])
            self.add_box(world, half, yaw, instance, materials[key])
        return instance

    def build(self) -> Room:
        centers, halves, yaws, semantic, instance, material = zip(*self.boxes)
        kind, color_a, color_b, scale, direction, seed = zip(*self.materials)
        return Room(
            size=self.size.copy(),
            centers=np.stack(centers),
            half_sizes=np.stack(halves),
            yaws=np.array(yaws, dtype=np.float64),
            box_semantic=np.array(semantic, dtype=np.int64),
            box_instance=np.array(instance, dtype=np.int64),
            box_material=np.array(material, dtype=np.int64),
            materials=Materials(
                kind=np.array(kind, dtype=np.int64),
                colors=np.stack([np.stack(color_a), np.stack(color_b)], axis=1),
                scale=np.array(scale, dtype=np.float64),
                direction=np.stack(direction),
                seed=np.array(seed, dtype=np.int64),
            ),
            instance_semantic=dict(self.instance_semantic),
        )


def _point_rect_distance(points: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    local = (points - center) @ _yaw_matrices(yaw)[:2, :2]
    return np.linalg.norm(np.clip(np.abs(local) - half, 0.0, None), axis=1)


def _rects_overlap(pos_a, half_a, yaw_a, pos_b, half_b, yaw_b) -> bool:
    """Separating-axis test of two oriented rectangles."""
    axes_a, axes_b = _yaw_matrices(yaw_a)[:2, :2], _yaw_matrices(yaw_b)[:2, :2]
    offset = pos_b - pos_a
    for axis in np.concatenate([axes_a.T, axes_b.T]):
        radius_a = np.sum(np.abs(axis @ axes_a) * half_a)
        radius_b = np.sum(np.abs(axis @ axes_b) * half_b)
        if abs(offset @ axis) > radius_a + radius_b:
            return False
    return True


# Wall k: its inner face, the inward normal (x, y), and the yaw that turns an object's +y front inward.
def _wall_frame(wall: int, size: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(start point of the wall's inner face, direction along it, inward normal, yaw) for wall 0..3."""
    sx, sy = size[0], size[1]
    frames = {
        0: ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), 0.0),
        1: ((sx, 0.0), (0.0, 1.0), (-1.0, 0.0), math.pi / 2),
        2: ((sx, sy), (-1.0, 0.0), (0.0, -1.0), math.pi),
        3: ((0.0, sy), (0.0, -1.0), (1.0, 0.0), -math.pi / 2),
    }
    start, along, inward, yaw = frames[wall]
    return np.array(start), np.array(along), np.array(inward), yaw


def _wall_length(wall: int, size: np.ndarray) -> float:
    return float(size[0] if wall in (0, 2) else size[1])


def _add_shell(builder: _RoomBuilder) -> None:
    """Floor, ceiling and four walls as slabs around the interior, overlapping at the edges (no gaps)."""
    sx, sy, sz = builder.size
    t = _SHELL_THICKNESS
    floor = builder.new_instance("floor")
    builder.add_box(
        (sx / 2, sy / 2, -t / 2), (sx / 2 + t, sy / 2 + t, t / 2), 0.0, floor, builder.material("floor")
    )
    ceiling = builder.new_instance("ceiling")
    builder.add_box(
        (sx / 2, sy / 2, sz + t / 2),
        (sx / 2 + t, sy / 2 + t, t / 2),
        0.0,
        ceiling,
        builder.material("ceiling"),
    )
    wall_paint = builder.material("wall")
    walls = [
        ((sx / 2, -t / 2, sz / 2), (sx / 2 + t, t / 2, sz / 2 + t)),
        ((sx + t / 2, sy / 2, sz / 2), (t / 2, sy / 2 + t, sz / 2 + t)),
        ((sx / 2, sy + t / 2, sz / 2), (sx / 2 + t, t / 2, sz / 2 + t)),
        ((-t / 2, sy / 2, sz / 2), (t / 2, sy / 2 + t, sz / 2 + t)),
    ]
    accent_wall = int(builder.rng.integers(0, 4)) if builder.rng.random() < 0.4 else -1
    for wall, (center, half) in enumerate(walls):
        material = builder.material("wall") if wall == accent_wall else wall_paint
        builder.add_box(center, half, 0.0, builder.new_instance("wall"), material)


# Object templates: dimensions drawn from `rng`; parts in the object frame (see _Template).


def _table(rng: np.random.Generator, kind: str = "table", small: bool = False) -> _Template:
    w, d, h = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.78)
    if small:  # coffee / side table in the middle of the room
        w, d, h = w * 0.7, d * 0.7, rng.uniform(0.45, 0.75)
    parts: list[Part] = [((0, 0, h - 0.02), (w / 2, d / 2, 0.02), "top")]
    leg = (h - 0.04) / 2
    if kind == "desk":  # side panels instead of legs
        parts += [((sx * (w / 2 - 0.015), 0, leg), (0.015, d / 2, leg), "top") for sx in (-1, 1)]
        d_back = rng.uniform(0.25, 0.4)
        parts.append(((0, -d / 2 + 0.01, h - 0.04 - d_back / 2), (w / 2 - 0.03, 0.01, d_back / 2), "top"))
    else:
        parts += [
            ((sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), leg), (0.025, 0.025, leg), "legs")
            for sx in (-1, 1)
            for sy in (-1, 1)
        ]
    legs = "metal" if rng.random() < 0.4 else "wood"
    return _Template(kind, parts, {"top": "wood", "legs": legs}, (w / 2, d / 2))


def _chair(rng: np.random.Generator) -> _Template:
    s, seat, back = rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48), rng.uniform(0.38, 0.5)
    leg = (seat - 0.05) / 2
    parts: list[Part] = [((0, 0, seat - 0.025), (s / 2, s / 2, 0.025), "seat")]
    parts += [
        ((sx * (s / 2 - 0.03), sy * (s / 2 - 0.03), leg), (0.018, 0.018, leg), "frame")
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    parts.append(((0, -s / 2 + 0.02, seat + back / 2), (s / 2, 0.02, back / 2), "seat"))
    seat_palette = "fabric" if rng.random() < 0.5 else "wood"
    return _Template("chair", parts, {"seat": seat_palette, "frame": "metal"}, (s / 2, s / 2))


def _bookshelf(rng: np.random.Generator) -> tuple[_Template, list[_Template]]:
    """A bookshelf and one 'books' template per filled shelf (same object frame)."""
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.2, 2.1)
    shelves = int(rng.integers(2, 6))
    parts: list[Part] = [((sx * (w / 2 - 0.01), 0, h / 2), (0.01, d / 2, h / 2), "wood") for sx in (-1, 1)]
    parts.append(((0, -d / 2 + 0.005, h / 2), (w / 2 - 0.02, 0.005, h / 2), "wood"))
    parts.append(((0, 0, h - 0.01), (w / 2 - 0.02, d / 2, 0.01), "wood"))
    parts.append(((0, 0, 0.04), (w / 2 - 0.02, d / 2, 0.04), "wood"))
    levels = np.linspace(0.08, h - 0.02, shelves + 1)
    parts += [((0, 0, z), (w / 2 - 0.02, d / 2 - 0.01, 0.01), "wood") for z in levels[1:-1]]
    book_rows = []
    for bottom, top in zip(levels[:-1] + 0.01, levels[1:] - 0.01):
        if rng.random() < 0.35 or top - bottom < 0.18:
            continue
        x, books = -w / 2 + 0.02 + rng.uniform(0.0, 0.1), []
        while True:
            width = rng.uniform(0.02, 0.06)
            if x + width > w / 2 - 0.02 - rng.uniform(0.0, 0.15):
                break
            height = min(rng.uniform(0.15, 0.3), top - bottom - 0.01)
            depth = rng.uniform(0.15, d - 0.03)
            books.append(
                (
                    (x + width / 2, -d / 2 + 0.01 + depth / 2, bottom + height / 2),
                    (width / 2, depth / 2, height / 2),
                )
            )
            x += width + (rng.uniform(0.0, 0.05) if rng.random() < 0.2 else 0.0)
        if books:
            keys = [f"book{i % 4}" for i in range(len(books))]
            book_parts: list[Part] = [(c, hf, key) for (c, hf), key in zip(books, keys)]
            # dict.fromkeys, not a set: material creation order (and so the random stream) must not depend
            # on string hashing, which differs between processes.
            palettes = {
                key: "fabric" if key in ("book0", "book2") else "paint" for key in dict.fromkeys(keys)
            }
            book_rows.append(_Template("books", book_parts, palettes, (w / 2, d / 2)))
    return _Template("bookshelf", parts, {"wood": "wood"}, (w / 2, d / 2)), book_rows


def _cabinet(rng: np.random.Generator, kind: str = "cabinet") -> _Template:
    if kind == "counter":
        w, d, h = rng.uniform(1.2, 2.6), rng.uniform(0.58, 0.66), rng.uniform(0.88, 0.92)
    elif kind == "refrigerator":
        w, d, h = rng.uniform(0.6, 0.8), rng.uniform(0.6, 0.7), rng.uniform(1.7, 1.9)
    elif kind == "otherfurniture":
        w, d, h = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.5), rng.uniform(0.4, 0.7)
    else:
        w, d, h = rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.6), rng.uniform(0.6, 1.1)
    top = 0.03 if kind == "counter" else 0.015
    parts: list[Part] = [
        ((0, -0.015, (h - top) / 2), (w / 2, d / 2 - 0.015, (h - top) / 2), "body"),
        ((0, 0, h - top / 2), (w / 2, d / 2, top / 2), "top"),
    ]
    doors = max(1, round(w / 0.5)) if kind != "otherfurniture" else 1
    for i in range(doors):
        x = -w / 2 + (i + 0.5) * w / doors + (0.15 * w / doors if i % 2 == 0 else -0.15 * w / doors)
        z = h * 0.75 if kind != "refrigerator" else h * 0.55
        parts.append(((x, d / 2 + 0.01, z), (0.01, 0.01, 0.05 if kind != "refrigerator" else 0.2), "handle"))
    palettes = {"body": "paint", "top": "stone" if kind == "counter" else "paint", "handle": "metal"}
    return _Template(kind, parts, palettes, (w / 2, d / 2 + 0.02))


def _bed(rng: np.random.Generator) -> _Template:
    w, l, head = rng.uniform(0.9, 1.8), rng.uniform(1.9, 2.1), rng.uniform(0.8, 1.1)
    parts: list[Part] = [
        ((0, -l / 2 + 0.03, head / 2), (w / 2, 0.03, head / 2), "frame"),
        ((0, 0.03, 0.15), (w / 2, l / 2 - 0.03, 0.15), "frame"),
        ((0, 0.03, 0.4), (w / 2 - 0.03, l / 2 - 0.06, 0.1), "sheet"),
        ((0, -l / 2 + 0.3, 0.56), (w / 2 - 0.12, 0.17, 0.06), "sheet"),
        ((0, l / 2 - 0.6 * l / 2, 0.42), (w / 2 - 0.01, 0.6 * l / 2 - 0.01, 0.1), "blanket"),
    ]
    return _Template("bed", parts, {"frame": "wood", "sheet": "paint", "blanket": "fabric"}, (w / 2, l / 2))


def _sofa(rng: np.random.Generator) -> _Template:
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 0.95)
    parts: list[Part] = [
        ((0, -d / 2 + 0.1, 0.42), (w / 2, 0.1, 0.42), "fabric"),
        ((0, 0.1, 0.2), (w / 2 - 0.18, d / 2 - 0.1, 0.2), "fabric"),
        ((0, 0.1, 0.45), (w / 2 - 0.19, d / 2 - 0.12, 0.05), "cushion"),
    ]
    parts += [((sx * (w / 2 - 0.09), 0.1, 0.3), (0.09, d / 2 - 0.1, 0.3), "fabric") for sx in (-1, 1)]
    return _Template("sofa", parts, {"fabric": "fabric", "cushion": "fabric"}, (w / 2, d / 2))


def _door(rng: np.random.Generator) -> _Template:
    w, h, t = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1), 0.04
    parts: list[Part] = [
        ((0, t / 2, h / 2), (w / 2, t / 2, h / 2), "panel"),
        ((w / 2 - 0.1, t + 0.03, 1.0), (0.06, 0.015, 0.012), "handle"),
    ]
    return _Template(
        "door", parts, {"panel": "wood" if rng.random() < 0.6 else "paint", "handle": "metal"}, (w / 2, t)
    )


def _window(rng: np.random.Generator, sill: float) -> _Template:
    w, h = rng.uniform(0.7, 1.6), rng.uniform(0.9, 1.3)
    zc = sill + h / 2
    parts: list[Part] = [
        ((0, 0.015, zc), (w / 2, 0.015, h / 2), "glass"),
        ((0, 0.035, zc), (0.02, 0.005, h / 2), "frame"),
        ((0, 0.035, zc), (w / 2, 0.005, 0.02), "frame"),
        ((0, 0.06, sill - 0.02), (w / 2 + 0.05, 0.06, 0.02), "frame"),
    ]
    return _Template("window", parts, {"glass": "glass", "frame": "paint"}, (w / 2 + 0.05, 0.12))


def _picture(rng: np.random.Generator, center_height: float) -> _Template:
    w, h, t = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.7), rng.uniform(0.02, 0.03)
    parts: list[Part] = [
        ((0, t / 2, center_height), (w / 2, t / 2, h / 2), "frame"),
        ((0, t + 0.002, center_height), (w / 2 - 0.03, 0.002, h / 2 - 0.03), "art"),
    ]
    return _Template("picture", parts, {"frame": "wood", "art": "art"}, (w / 2, t))


def _against_wall(builder: _RoomBuilder, template: _Template, wall: int, along: float, gap: float = 0.01):
    """Position and yaw of an object whose back touches the inner face of `wall` at `along` metres."""
    start, direction, inward, yaw = _wall_frame(wall, builder.size)
    position = start + along * direction + inward * (template.footprint[1] + gap)
    return position, yaw


def _free_span(builder: _RoomBuilder, wall: int, low: float, high: float) -> bool:
    return all(high <= a or low >= b for a, b in builder.wall_spans[wall])


def _place_on_wall(builder: _RoomBuilder, make: Callable[[], _Template], floor: bool, tries: int = 20):
    """Try random spots along random walls; floor objects must fit their footprint, wall objects only
    need a free span of wall. Returns (template, position, yaw, instance) or None."""
    rng = builder.rng
    for _ in range(tries):
        template = make()
        wall = int(rng.integers(0, 4))
        half_width = template.footprint[0]
        length = _wall_length(wall, builder.size)
        if length < 2 * half_width + 0.1:
            continue
        along = float(rng.uniform(half_width + 0.05, length - half_width - 0.05))
        position, yaw = _against_wall(
            builder, template, wall, along, gap=rng.uniform(0.01, 0.05) if floor else 0.0
        )
        if floor:
            instance = builder.place(template, position, yaw)
            if instance is not None:
                return template, position, yaw, instance
        elif _free_span(builder, wall, along - half_width - 0.05, along + half_width + 0.05):
            builder.wall_spans[wall].append((along - half_width, along + half_width))
            return template, position, yaw, builder.add_object(template, position, yaw)
    return None


def generate_room(rng: np.random.Generator) -> tuple[Room, CameraPath]:
    """A random furnished room and the camera path through it (furniture keeps clear of the path)."""
    size = np.array([rng.uniform(4.0, 7.5), rng.uniform(4.0, 7.5), rng.uniform(2.5, 3.0)])
    path = _random_camera_path(rng, size)
    builder = _RoomBuilder(rng, size, path.ground_track())
    _add_shell(builder)

    # The door first: its swing area is a reserved footprint, so nothing blocks it.
    door = _place_on_wall(builder, lambda: _door(rng), floor=False)
    if door is not None:
        template, position, yaw, _ = door
        inward = _yaw_matrices(yaw)[:2, :2] @ np.array([0.0, 1.0])
        builder.footprints.append(
            (position + inward * 0.45, np.array([template.footprint[0] + 0.05, 0.45]), yaw)
        )
    for _ in range(int(rng.integers(0, 3))):
        sill = float(rng.uniform(0.8, 1.0))
        _place_on_wall(builder, lambda sill=sill: _window(rng, sill), floor=False)
    for _ in range(int(rng.integers(0, 4))):
        height = float(rng.uniform(1.3, min(1.7, size[2] - 0.5)))
        _place_on_wall(builder, lambda height=height: _picture(rng, height), floor=False)

    # A table with chairs in the middle, inside the camera ellipse.
    if rng.random() < 0.6:
        for _ in range(10):
            table = _table(rng, small=True)
            yaw = float(rng.uniform(-0.4, 0.4)) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
            if builder.place(table, path.center.copy(), yaw) is None:
                continue
            rotation = _yaw_matrices(yaw)[:2, :2]
            for side in range(4):
                if rng.random() < 0.35:
                    continue
                chair = _chair(rng)
                # Chair front (+y) faces the table: side 0 is the table's -y side, then counter-clockwise.
                out = np.array([(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)][side])
                reach = table.footprint[1] if side % 2 == 0 else table.footprint[0]
                offset = out * (reach + chair.footprint[1] + 0.05) + rng.uniform(-0.1, 0.1) * out[::-1]
                chair_yaw = yaw + math.atan2(-out[0], out[1]) + math.pi + float(rng.uniform(-0.2, 0.2))
                builder.place(chair, path.center + rotation @ offset, chair_yaw)
            break

    makers: list[tuple[str, float]] = [
        ("bookshelf", 1.5),
        ("cabinet", 1.5),
        ("bed", 0.8),
        ("sofa", 1.0),
        ("desk", 1.0),
        ("counter", 0.6),
        ("refrigerator", 0.4),
        ("otherfurniture", 1.2),
    ]
    names, weights = zip(*makers)
    probabilities = np.array(weights) / sum(weights)
    for _ in range(int(rng.integers(4, 10))):
        name = str(rng.choice(names, p=probabilities))
        _add_wall_furniture(builder, name)
    room = builder.build()
    return room, path


def _add_wall_furniture(builder: _RoomBuilder, name: str) -> None:
    rng = builder.rng
    if name == "bookshelf":
        shelves: list[list[_Template]] = []

        def make() -> _Template:
            shelf, rows = _bookshelf(rng)
            shelves.append(rows)
            return shelf

        placed = _place_on_wall(builder, make, floor=True)
        if placed is not None:
            _, position, yaw, _ = placed
            for row in shelves[-1]:
                builder.add_object(row, position, yaw)
        return
    makers: dict[str, Callable[[], _Template]] = {
        "cabinet": lambda: _cabinet(rng),
        "counter": lambda: _cabinet(rng, "counter"),
        "refrigerator": lambda: _cabinet(rng, "refrigerator"),
        "otherfurniture": lambda: _cabinet(rng, "otherfurniture"),
        "bed": lambda: _bed(rng),
        "sofa": lambda: _sofa(rng),
        "desk": lambda: _table(rng, "desk"),
    }
    placed = _place_on_wall(builder, makers[name], floor=True)
    if placed is not None and name == "desk" and rng.random() < 0.8:
        template, position, yaw, _ = placed
        chair = _chair(rng)
        inward = _yaw_matrices(yaw)[:2, :2] @ np.array([0.0, 1.0])
        chair_position = position + inward * (template.footprint[1] + chair.footprint[1] + 0.05)
        builder.place(chair, chair_position, yaw + math.pi + float(rng.uniform(-0.3, 0.3)))


# --------------------------------------------------------------------------------------------- scenes


@dataclass
class SyntheticScene:
    """A generated room with its camera path: render frames in memory or write the exported layout."""

    name: str
    seed: int
    index: int
    room: Room
    path: CameraPath
    K: Float[np.ndarray, "3 3"]
    poses: Float[np.ndarray, "f 4 4"]
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.poses)

    def render(self, frame: int) -> RenderedView:
        return render_view(self.room, self.K, self.poses[frame], self.width, self.height)

    def point_cloud(self, density: float = DEFAULT_POINT_DENSITY) -> PointCloud:
        """The labelled point cloud (deterministic: its own random stream from the scene's seeds)."""
        return sample_point_cloud(self.room, density, np.random.default_rng([self.seed, self.index, 1]))


def scene_name(index: int) -> str:
    return f"synthetic_{index:04d}"


def generate_scene(
    seed: int,
    index: int = 0,
    num_frames: int = DEFAULT_FRAMES,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
) -> SyntheticScene:
    """Scene `index` of the synthetic dataset with `seed`; the room depends on (seed, index) only."""
    _check_positive(num_frames=num_frames, width=width, height=height)
    if seed < 0 or index < 0:
        raise ConfigError(f"synthetic seed and scene index must be non-negative, got {seed} and {index}")
    room, path = generate_room(np.random.default_rng([seed, index]))
    return SyntheticScene(
        name=scene_name(index),
        seed=seed,
        index=index,
        room=room,
        path=path,
        K=kinect_intrinsics(width, height),
        poses=path.poses(num_frames),
        width=width,
        height=height,
    )


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"synthetic {key} must be positive, got {value}")


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(f"{value:.9f}" for value in row) + "\n" for row in matrix)


def _save_uint16_png(array: np.ndarray, path: Path) -> None:
    if array.min() < 0 or array.max() > 65535:
        raise ValueError(f"{path}: values outside uint16")
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint16)).save(path)


def write_frame(view: RenderedView, pose: np.ndarray, directory: Path, frame: int) -> None:
    """Write one frame's colour, depth, pose and label images into a scene folder (subfolders exist)."""
    color = np.clip(np.rint(view.image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(color).save(directory / "color" / f"{frame}.jpg", quality=95)
    depth_mm = np.rint(view.depth.astype(np.float64) * 1000.0)
    _save_uint16_png(np.where(depth_mm > 65535, 0, depth_mm), directory / "depth" / f"{frame}.png")
    (directory / "pose" / f"{frame}.txt").write_text(_matrix_text(pose))
    _save_uint16_png(view.semantic, directory / "label" / f"{frame}.png")
    _save_uint16_png(view.instance, directory / "instance" / f"{frame}.png")


def write_point_cloud(cloud: PointCloud, path: Path) -> None:
    """points.npz: coord, color (uint8), normal, semantic (NYU40), segment20, instance."""
    np.savez_compressed(
        path,
        coord=cloud.coord,
        color=np.clip(np.rint(cloud.color.astype(np.float64) * 255.0), 0, 255).astype(np.uint8),
        normal=cloud.normal,
        semantic=cloud.semantic,
        segment20=scannet20_index(cloud.semantic),
        instance=cloud.instance,
    )


def write_scene(
    scene: SyntheticScene, directory: Path, point_density: float | None = DEFAULT_POINT_DENSITY
) -> Path:
    """Write a scene in the ScanNet exported layout plus label/, instance/, points.npz and meta.json.

    `point_density=None` skips the point cloud. Returns the scene folder.
    """
    directory = Path(directory)
    for sub in ("color", "depth", "pose", "intrinsic", "label", "instance"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    K4 = np.eye(4)
    K4[:3, :3] = scene.K
    for stream in ("color", "depth"):
        (directory / "intrinsic" / f"intrinsic_{stream}.txt").write_text(_matrix_text(K4))
        (directory / "intrinsic" / f"extrinsic_{stream}.txt").write_text(_matrix_text(np.eye(4)))
    for frame in range(len(scene)):
        write_frame(scene.render(frame), scene.poses[frame], directory, frame)
    num_points = 0
    if point_density is not None:
        cloud = scene.point_cloud(point_density)
        write_point_cloud(cloud, directory / "points.npz")
        num_points = len(cloud)
    meta = {
        "generator": "gs3.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": scene.seed,
        "scene_index": scene.index,
        "name": scene.name,
        "num_frames": len(scene),
        "width": scene.width,
        "height": scene.height,
        "depth_unit": "millimetre",
        "room_size": [round(float(v), 6) for v in scene.room.size],
        "num_boxes": len(scene.room),
        "num_points": num_points,
        "point_density": point_density,
        "label_ids": "nyu40",
        "classes": {str(k): v for k, v in sorted(CLASS_NAMES.items())},
        "scannet20_nyu40_ids": list(SCANNET20_NYU40_IDS),
        "instances": [
            {"id": instance, "semantic": semantic, "name": CLASS_NAMES[semantic]}
            for instance, semantic in sorted(scene.room.instance_semantic.items())
        ],
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def write_dataset(
    out: Path,
    num_scenes: int,
    num_frames: int = DEFAULT_FRAMES,
    seed: int = 0,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    point_density: float | None = DEFAULT_POINT_DENSITY,
    progress: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write scenes synthetic_0000 .. synthetic_{N-1} under `out` (plus scenes.txt listing them)."""
    _check_positive(scenes=num_scenes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for index in range(num_scenes):
        scene = generate_scene(seed, index, num_frames, width, height)
        folders.append(write_scene(scene, out / scene.name, point_density))
        if progress is not None:
            progress(folders[-1])
    (out / "scenes.txt").write_text("".join(f"{folder.name}\n" for folder in folders))
    return folders
