"""Choosing the V views of a sample, their overlap, and precomputed pair lists.

A sample's views are frames at positions ``start, start + interval, …, start + (V - 1)·interval`` of one
scene (V = 2 and interval = 5 by default; intervals count frame positions, see gs3.data.scene).

* `RandomViewSampler` (training) draws ``start`` uniformly among the windows that avoid known-bad frames.
* `SequentialViewSampler` (evaluation) enumerates windows deterministically: start = 0, stride, 2·stride, ….
* `view_overlap(a, b)`: the share of view a's valid back-projected points that land inside view b in front
  of it and agree with b's depth within a relative tolerance (|z_a→b − D_b| ≤ tol · D_b, tol = 0.05 by
  default; D_b read at the pixel containing the projection). A sample's overlap is the minimum over its
  consecutive view pairs (v → v + 1).
* Pair lists (``gs3 data pairs``) are JSON: the parameters plus one record per sample
  ``{"scene", "path", "frames" (positions), "frame_indices" (frame numbers), "overlap"}`` and the skip counts.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gs3.data.scene import Frame, Scene
from gs3.data.splits import list_scenes, open_scene
from gs3.data.validation import (
    DEFAULT_MIN_VALID_DEPTH,
    LOW_OVERLAP,
    InvalidFrameError,
    depth_problem,
    pose_problem,
)
from gs3.errors import DataError
from gs3.files import atomic_write_text

PAIR_LIST_FORMAT = "gs3-view-pairs"
UNREADABLE_SCENE = "unreadable scene"


@dataclass(frozen=True)
class ViewSample:
    """The views of one sample: scene path and frame positions (plus their overlap when known)."""

    scene: str
    frames: tuple[int, ...]
    overlap: float | None = None


def window(start: int, num_views: int, interval: int) -> tuple[int, ...]:
    return tuple(start + k * interval for k in range(num_views))


class RandomViewSampler:
    """Seeded random windows of ``num_views`` frames ``interval`` apart (for training)."""

    def __init__(self, num_views: int = 2, interval: int = 5, seed: int | None = 0) -> None:
        if num_views < 2:
            raise DataError(f"num_views must be >= 2, got {num_views}")
        if interval < 1:
            raise DataError(f"interval must be >= 1, got {interval}")
        self.num_views, self.interval = num_views, interval
        self.rng = np.random.default_rng(seed)

    def num_windows(self, num_frames: int) -> int:
        return max(0, num_frames - (self.num_views - 1) * self.interval)

    def sample(
        self, num_frames: int, rng: np.random.Generator | None = None, exclude: Iterable[int] = ()
    ) -> tuple[int, ...] | None:
        """A window avoiding the ``exclude`` positions, or None when no such window exists."""
        rng = self.rng if rng is None else rng
        starts = self.num_windows(num_frames)
        if starts == 0:
            return None
        excluded = set(exclude)
        if not excluded:
            return window(int(rng.integers(starts)), self.num_views, self.interval)
        for _ in range(16):  # rejection first: bad frames are rare
            candidate = window(int(rng.integers(starts)), self.num_views, self.interval)
            if excluded.isdisjoint(candidate):
                return candidate
        allowed = [s for s in range(starts) if excluded.isdisjoint(window(s, self.num_views, self.interval))]
        return window(int(rng.choice(allowed)), self.num_views, self.interval) if allowed else None


class SequentialViewSampler:
    """Deterministic windows ``start = 0, stride, 2·stride, …`` (for evaluation and pair lists)."""

    def __init__(self, num_views: int = 2, interval: int = 5, stride: int | None = None) -> None:
        if num_views < 2:
            raise DataError(f"num_views must be >= 2, got {num_views}")
        if interval < 1:
            raise DataError(f"interval must be >= 1, got {interval}")
        self.num_views, self.interval = num_views, interval
        self.stride = interval if stride is None else stride
        if self.stride < 1:
            raise DataError(f"stride must be >= 1, got {self.stride}")

    def windows(self, num_frames: int, exclude: Iterable[int] = ()) -> list[tuple[int, ...]]:
        excluded = set(exclude)
        last_start = num_frames - (self.num_views - 1) * self.interval
        candidates = (
            window(s, self.num_views, self.interval) for s in range(0, max(last_start, 0), self.stride)
        )
        return [views for views in candidates if excluded.isdisjoint(views)]


def invalid_pose_positions(scene: Scene, counts: Counter | None = None) -> set[int]:
    """Positions whose pose is missing, unreadable, non-finite or non-rigid (cheap: no image decoding)."""
    bad = set()
    for position in range(len(scene)):
        try:
            problem = pose_problem(scene.pose(position))
        except InvalidFrameError as error:
            problem = error.reason
        if problem is not None:
            bad.add(position)
            if counts is not None:
                counts[problem] += 1
    return bad


def view_overlap(frame_a: Frame, frame_b: Frame, relative_tolerance: float = 0.05) -> float:
    """Share of frame a's valid-depth points that are seen, with consistent depth, by frame b."""
    valid = frame_a.depth > 0
    if not bool(valid.any()):
        return 0.0
    rows, cols = torch.nonzero(valid, as_tuple=True)
    z = frame_a.depth[rows, cols].double()
    K_a, K_b = frame_a.K.double(), frame_b.K.double()
    x = (cols.double() + 0.5 - K_a[0, 2]) / K_a[0, 0] * z
    y = (rows.double() + 0.5 - K_a[1, 2]) / K_a[1, 1] * z
    points_a = torch.stack([x, y, z], dim=-1)
    a_to_b = torch.linalg.inv(frame_b.cam_to_world.double()) @ frame_a.cam_to_world.double()
    points_b = points_a @ a_to_b[:3, :3].T + a_to_b[:3, 3]
    z_b = points_b[:, 2]
    in_front = z_b > 1e-6
    u = K_b[0, 0] * points_b[:, 0] / z_b.clamp_min(1e-6) + K_b[0, 2]
    v = K_b[1, 1] * points_b[:, 1] / z_b.clamp_min(1e-6) + K_b[1, 2]
    height, width = frame_b.depth.shape
    inside = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    depth_b = torch.zeros_like(z_b)
    depth_b[inside] = frame_b.depth[v[inside].long(), u[inside].long()].double()
    consistent = inside & (depth_b > 0) & ((z_b - depth_b).abs() <= relative_tolerance * depth_b)
    return float(consistent.sum()) / float(valid.sum())


def sample_overlap(frames: Sequence[Frame], relative_tolerance: float = 0.05) -> float:
    """Minimum overlap over consecutive view pairs."""
    return min(view_overlap(frames[k], frames[k + 1], relative_tolerance) for k in range(len(frames) - 1))


class FrameCache:
    """A few recently read frames of one scene (windows share frames)."""

    def __init__(self, scene: Scene, size: tuple[int, int] | None, capacity: int = 16) -> None:
        self.scene, self.size, self.capacity = scene, size, capacity
        self._frames: OrderedDict[int, Frame] = OrderedDict()

    def get(self, position: int) -> Frame:
        if position in self._frames:
            self._frames.move_to_end(position)
            return self._frames[position]
        frame = self.scene.frame(position, self.size)
        self._frames[position] = frame
        if len(self._frames) > self.capacity:
            self._frames.popitem(last=False)
        return frame


def compute_pair_list(
    scenes: Sequence[str | Path],
    num_views: int = 2,
    interval: int = 5,
    stride: int | None = None,
    min_overlap: float = 0.0,
    relative_tolerance: float = 0.05,
    resolution: tuple[int, int] = (160, 120),
    min_valid_depth: float = DEFAULT_MIN_VALID_DEPTH,
    progress: bool = False,
) -> dict:
    """Enumerate the windows of every scene, measure their overlap (at ``resolution``), keep those with
    overlap >= min_overlap. Bad frames are skipped and counted once each by reason; unreadable scenes too."""
    sampler = SequentialViewSampler(num_views, interval, stride)
    counts: Counter = Counter()
    samples = []
    iterator = scenes
    if progress:
        from tqdm import tqdm

        iterator = tqdm(scenes, desc="pairs", unit="scene")
    for scene_path in iterator:
        try:
            scene = open_scene(scene_path, labels=False)
        except DataError:
            counts[UNREADABLE_SCENE] += 1
            continue
        bad = invalid_pose_positions(scene, counts)
        cache = FrameCache(scene, tuple(resolution))
        for views in sampler.windows(len(scene), exclude=bad):
            frames = []
            for position in views:
                if position in bad:
                    break
                try:
                    frame = cache.get(position)
                    problem = depth_problem(frame.depth, min_valid_depth)
                except InvalidFrameError as error:
                    problem = error.reason
                if problem is not None:
                    bad.add(position)
                    counts[problem] += 1
                    break
                frames.append(frame)
            if len(frames) != len(views):
                continue
            overlap = sample_overlap(frames, relative_tolerance)
            if overlap < min_overlap:
                counts[LOW_OVERLAP] += 1
                continue
            samples.append(
                {
                    "scene": scene.name,
                    "path": str(scene_path),
                    "frames": list(views),
                    "frame_indices": [scene.frame_index(p) for p in views],
                    "overlap": round(overlap, 6),
                }
            )
    return {
        "format": PAIR_LIST_FORMAT,
        "version": 1,
        "num_views": num_views,
        "interval": interval,
        "stride": sampler.stride,
        "min_overlap": min_overlap,
        "relative_tolerance": relative_tolerance,
        "resolution": list(resolution),
        "min_valid_depth": min_valid_depth,
        "skipped": dict(counts),
        "samples": samples,
    }


def write_pair_list(path: str | Path, pair_list: dict) -> None:
    """Write a pair list as JSON atomically, with the umask's permissions."""
    atomic_write_text(json.dumps(pair_list, indent=1), path)


def read_pair_list(path: str | Path, min_overlap: float | None = None) -> list[ViewSample]:
    """Samples of a pair-list JSON (relative scene paths resolve against the JSON's folder)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read pair list ({error})") from None
    if not isinstance(data, dict) or data.get("format") != PAIR_LIST_FORMAT:
        raise DataError(f"{path}: not a gs3 pair list (missing format {PAIR_LIST_FORMAT!r})")
    samples = []
    for record in data.get("samples", []):
        overlap = record.get("overlap")
        if min_overlap is not None and overlap is not None and overlap < min_overlap:
            continue
        scene = Path(record["path"])
        if not scene.is_absolute() and not scene.exists():
            scene = path.parent / scene
        samples.append(ViewSample(str(scene), tuple(int(f) for f in record["frames"]), overlap))
    return samples


def pair_list_for_root(root: str | Path, split: str | None = None, **kwargs) -> dict:
    """`compute_pair_list` over the scenes under a dataset root (optionally one split)."""
    scenes = list_scenes(root, split)
    if not scenes:
        raise DataError(f"{root}: no scenes found" + (f" for split {split!r}" if split else ""))
    result = compute_pair_list(scenes, **kwargs)
    result["root"] = str(root)
    return result
