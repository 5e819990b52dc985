"""Which frames are invalid, and why.

A frame is invalid when
  * its pose is not finite (ScanNet writes ``-inf`` poses where tracking failed)          "non-finite pose"
  * its pose is not rigid: R not orthonormal or det(R) != 1 (tolerance ``RIGID_TOLERANCE``), or the last
    row is not (0, 0, 0, 1)                                                                  "non-rigid pose"
  * a file is missing, unreadable, or of the wrong type (e.g. an 8-bit or RGB depth PNG)     "unreadable file"
  * less than ``min_valid_depth`` of its depth pixels are valid (default 0.3)        "too little valid depth"
A sample is additionally rejected when its views overlap less than a requested minimum     "low view overlap"

Reading an invalid frame directly (``scene.frame(i)``) raises ``InvalidFrameError`` (a gs3 DataError whose
one-line message names the file and the problem) for the first three cases; too little depth is a property
of a good file, so it is only checked by the samplers and the datasets, which skip such frames and count every
skip by reason in a ``collections.Counter``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from gs3.errors import DataError

NON_FINITE_POSE = "non-finite pose"
NON_RIGID_POSE = "non-rigid pose"
UNREADABLE_FILE = "unreadable file"
LOW_VALID_DEPTH = "too little valid depth"
LOW_OVERLAP = "low view overlap"

RIGID_TOLERANCE = 1e-3  # poses are stored as text with ~6 decimals; real drift is ~1e-6
DEFAULT_MIN_VALID_DEPTH = 0.3


class InvalidFrameError(DataError):
    """A frame that cannot be used; ``reason`` is one of the reason strings of this module."""

    def __init__(self, message: str, reason: str = UNREADABLE_FILE) -> None:
        super().__init__(message)
        self.reason = reason


def pose_problem(pose: np.ndarray, tolerance: float = RIGID_TOLERANCE) -> str | None:
    """None for a finite rigid 4×4 camera-to-world pose, else the reason it is invalid."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        return NON_FINITE_POSE if pose.shape == (4, 4) else NON_RIGID_POSE
    rotation = pose[:3, :3]
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > tolerance:
        return NON_RIGID_POSE
    if abs(np.linalg.det(rotation) - 1.0) > tolerance:
        return NON_RIGID_POSE
    if np.abs(pose[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > 1e-6:
        return NON_RIGID_POSE
    return None


def check_pose(pose: np.ndarray, where: str) -> np.ndarray:
    """Return the pose, or raise InvalidFrameError naming ``where`` (the file) and the problem."""
    problem = pose_problem(pose)
    if problem is not None:
        detail = "contains inf/nan" if problem == NON_FINITE_POSE else "is not a rigid transform [R t; 0 1]"
        raise InvalidFrameError(f"{where}: {problem}: the camera-to-world matrix {detail}", problem)
    return pose


def valid_depth_fraction(depth: torch.Tensor | np.ndarray) -> float:
    """Share of pixels with depth > 0."""
    if isinstance(depth, torch.Tensor):
        return float((depth > 0).float().mean())
    return float(np.mean(depth > 0))


def depth_problem(depth: torch.Tensor | np.ndarray, min_valid_depth: float) -> str | None:
    """None when at least ``min_valid_depth`` of the pixels have depth, else the reason."""
    return LOW_VALID_DEPTH if valid_depth_fraction(depth) < min_valid_depth else None


def merge_counts(*counts: dict[str, int]) -> Counter:
    """Sum skip counters (e.g. from several samples or DataLoader workers)."""
    total: Counter = Counter()
    for count in counts:
        total.update(count)
    return total
