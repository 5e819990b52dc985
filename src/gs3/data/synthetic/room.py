"""A room as data: boxes rotated about the vertical axis (yaw), each with a class, an instance and a
material; the material kinds the textures implement; yaw rotations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float, Int

from .labels import CLASS_IDS

# Material kinds (procedural textures).
PLAIN, NOISE, CHECKER, STRIPES, PLANKS, TILES = range(6)


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
        return yaw_matrices(self.yaws)


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
            kind=np.array([PLAIN]),
            colors=np.stack([base, base])[None],
            scale=np.array([1.0]),
            direction=np.array([[1.0, 0.0, 0.0]]),
            seed=np.array([0]),
        ),
        instance_semantic={i + 1: int(c) for i, c in enumerate(semantic)},
    )


def cos_sin(yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Snap the float noise of multiples of π/2 so wall-aligned boxes are exactly axis-aligned.
    cos, sin = np.cos(yaw), np.sin(yaw)
    cos = np.where(np.abs(cos) < 1e-12, 0.0, np.where(np.abs(np.abs(cos) - 1) < 1e-15, np.sign(cos), cos))
    sin = np.where(np.abs(sin) < 1e-12, 0.0, np.where(np.abs(np.abs(sin) - 1) < 1e-15, np.sign(sin), sin))
    return cos, sin


def yaw_matrices(yaws: np.ndarray) -> np.ndarray:
    cos, sin = cos_sin(np.asarray(yaws, dtype=np.float64))
    rotations = np.zeros((*cos.shape, 3, 3))
    rotations[..., 0, 0], rotations[..., 0, 1] = cos, -sin
    rotations[..., 1, 0], rotations[..., 1, 1] = sin, cos
    rotations[..., 2, 2] = 1.0
    return rotations
