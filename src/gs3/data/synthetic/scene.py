"""A synthetic scene: the room and camera path of (seed, scene index), rendered on demand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from gs3.errors import ConfigError

from .cameras import CameraPath, kinect_intrinsics
from .layout import generate_room
from .points import DEFAULT_POINT_DENSITY, PointCloud, sample_point_cloud
from .raycast import RenderedView, render_view
from .room import Room

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FRAMES = 320, 240, 60


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
    check_positive(num_frames=num_frames, width=width, height=height)
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


def check_positive(**values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"synthetic {key} must be positive, got {value}")
