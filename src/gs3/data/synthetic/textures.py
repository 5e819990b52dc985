"""Colour of a surface point: procedural textures (hashed value noise, checkers, stripes, planks, tiles) in
the box's own frame, times Lambertian shading from fixed lights. A function of the point only, so every view
and the point cloud agree."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

from .room import CHECKER, NOISE, PLAIN, PLANKS, STRIPES, Room

# Fixed lights (unit directions towards the light, strength) + ambient: Lambertian, view-independent.
_AMBIENT = 0.38
_LIGHTS = (
    (np.array([0.35, 0.25, 0.9]), 0.45),
    (np.array([-0.6, 0.7, 0.25]), 0.22),
    (np.array([0.3, -0.8, -0.3]), 0.15),
)


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
        if kind_id == PLAIN:
            mix[sel] = 0.5 + 0.35 * (_fbm(p, seed, octaves=2) - 0.5)
        elif kind_id == NOISE:
            mix[sel] = np.clip(1.6 * (_fbm(p, seed) - 0.5) + 0.5, 0.0, 1.0)
        elif kind_id == CHECKER:
            odd = (np.floor(u) + np.floor(v)).astype(np.int64) & 1
            mix[sel] = 0.85 * odd + 0.15 * _value_noise(p * 4.0, seed)
        elif kind_id == STRIPES:
            direction = materials.direction[m]
            phase = p[:, 0] * direction[:, 0] + p[:, 1] * direction[:, 1] + p[:, 2] * direction[:, 2]
            mix[sel] = 0.85 * (phase - np.floor(phase) < 0.5) + 0.15 * _value_noise(p * 3.0, seed)
        elif kind_id == PLANKS:
            plank = np.floor(v)
            shift = _hash_unit(seed, plank) * 17.0
            grain = _fbm(np.stack([(u + shift) * 0.6, v * 8.0, plank], axis=1), seed, octaves=2)
            wood = np.clip(0.25 + 0.5 * _hash_unit(seed + 1, plank) + 0.6 * (grain - 0.5), 0.0, 1.0)
            mix[sel] = np.where(v - plank < 0.04, 1.0, wood)  # dark gap between planks
        else:  # TILES
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
