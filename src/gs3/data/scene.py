"""The frame record and the scene protocol every reader implements.

A *scene* is an ordered sequence of RGB-D frames of one capture. Frames are addressed by their position
``0 .. len(scene) - 1`` in numeric frame order; ``Frame.index`` keeps the frame's own number (the file stem
of the exported layout, the frame number in a ``.sens`` file), which differs from the position when a scene
was exported with ``--every N``. View intervals count positions.

Colour is always delivered at the depth resolution (or at a requested output size) with the DEPTH intrinsics
(ScanNet's convention: colour 1296×968 and depth 640×480 are registered by a plain resize). Per-pixel labels
(NYU40 ids, 0 = unlabelled; see gs3.data.labels) are resized the same way, nearest-neighbour, so
``frame.label`` is aligned with ``frame.depth`` and ``frame.image``; it is None for a scene without labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class Frame:
    """One RGB-D frame: colour (H, W, 3) in [0, 1], depth (H, W) metres (0 = invalid), K (3, 3) pixels at
    H×W, camera-to-world (4, 4) OpenCV pose, the frame's own number, and (for labelled scenes) an (H, W)
    int64 map of NYU40 ids (0 = unlabelled)."""

    image: Float[Tensor, "h w 3"]
    depth: Float[Tensor, "h w"]
    K: Float[Tensor, "3 3"]
    cam_to_world: Float[Tensor, "4 4"]
    index: int
    label: Int[Tensor, "h w"] | None = None

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])


@runtime_checkable
class Scene(Protocol):
    """What a scene reader provides. ``frame(i)`` raises gs3.errors.DataError for an unreadable file or a
    non-finite / non-rigid pose; ``size=(width, height)`` returns the frame resized (see
    gs3.data.transforms for the rules)."""

    name: str
    path: Path

    def __len__(self) -> int: ...

    def frame(self, position: int, size: tuple[int, int] | None = None) -> Frame: ...

    def frame_index(self, position: int) -> int:
        """The frame's own number (file stem / .sens frame number) at this position."""
        ...

    def pose(self, position: int) -> np.ndarray:
        """The raw (4, 4) float64 camera-to-world pose, unvalidated (may hold -inf)."""
        ...

    @property
    def depth_size(self) -> tuple[int, int]:
        """(width, height) of the depth stream, the native frame size."""
        ...

    @property
    def depth_intrinsics(self) -> np.ndarray:
        """(3, 3) float64 K of the depth stream at ``depth_size``."""
        ...


def as_frame(
    image: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    cam_to_world: np.ndarray,
    index: int,
    label: np.ndarray | None = None,
) -> Frame:
    """Build a Frame from numpy arrays (float32 tensors, int64 labels; no copy where the dtype matches)."""
    return Frame(
        image=torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        depth=torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
        K=torch.from_numpy(np.asarray(K, dtype=np.float32).copy()),
        cam_to_world=torch.from_numpy(np.asarray(cam_to_world, dtype=np.float32).copy()),
        index=int(index),
        label=None if label is None else torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)),
    )
