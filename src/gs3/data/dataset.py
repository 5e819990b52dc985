"""Datasets that turn scenes into GS³ samples.

One sample = V views of one scene (gs3.data.views), each read at the configured resolution
(gs3.data.transforms for the resize rules), back-projected to coloured world points, rotated by one random
rotation (points and all cameras alike) and masked (gs3.data.masking). `gs3.data.collate` batches samples.

Reproducibility: every sample draws all its randomness (views, rotation, mask, retries) from its own
``numpy.random.default_rng([seed, epoch, index])``, so a sample depends on (seed, epoch, index) only — not on
the worker that builds it nor on the order. Call ``set_epoch(epoch)`` before each epoch (with
``persistent_workers=False``, the default, workers see the new value).

Bad data never stops training: a frame that fails to read (InvalidFrameError), has too little valid depth, or
a sample whose views overlap too little is skipped, its reason counted, and another draw made; a scene that
cannot be opened is skipped the same way. Every skip is counted, each time it happens, so the counts of a
sample are a function of (seed, epoch, index) too (a frame found bad is remembered, per process, to avoid
reading it again, but it is counted as if it had been). Counts are kept per process in ``dataset.skipped`` and
travel with every sample (``sample["skipped"]``), so a batch carries the counts of its workers too. Only when
``max_tries`` draws in a row fail does a DataError stop the run (the data is then broken, not unlucky).

Workers: scenes are opened lazily, per process (file handles are never shared across a fork).

Threads: a sample is built with torch limited to one intra-op thread (restored afterwards). Its tensors are
small (~10⁵ elements), where a thread pool gains nothing and, on a busy machine, costs 10× (measured: 0.9 s vs
0.05 s per 320×240 sample on the shared 2-core machine). DataLoader workers run single-threaded anyway.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gs3.data.augment import random_rotation
from gs3.data.masking import MaskGenerator
from gs3.data.scene import Frame, Scene
from gs3.data.splits import list_scenes, open_scene
from gs3.data.transforms import DEFAULT_RESOLUTION, apply_world_transform, backproject, parse_resolution
from gs3.data.validation import DEFAULT_MIN_VALID_DEPTH, LOW_OVERLAP, InvalidFrameError, depth_problem
from gs3.data.views import (
    UNREADABLE_SCENE,
    RandomViewSampler,
    SequentialViewSampler,
    ViewSample,
    invalid_pose_positions,
    read_pair_list,
    sample_overlap,
)
from gs3.errors import ConfigError, DataError

SCENE_TOO_SHORT = "scene too short"


@dataclass(frozen=True)
class SampleConfig:
    """How a sample is built. ``resolution`` is (width, height) or "WxH" (stored as a tuple)."""

    num_views: int = 2
    interval: int = 5
    resolution: tuple[int, int] = DEFAULT_RESOLUTION
    augment: bool = True
    max_rotation_xy: float = math.pi / 64
    max_rotation_z: float = math.pi
    mask_ratio: float = 0.5
    mask_unit: str = "point"
    mask_patch_size: int = 16
    min_valid_depth: float = DEFAULT_MIN_VALID_DEPTH
    min_overlap: float | None = None
    overlap_tolerance: float = 0.05
    max_tries: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", parse_resolution(self.resolution))
        if min(self.resolution) < 1:
            raise ConfigError(f"data resolution must be positive, got {self.resolution}")
        if self.num_views < 2 or self.interval < 1:
            raise ConfigError(f"need num_views >= 2 and interval >= 1, got {self.num_views}, {self.interval}")
        if not 0.0 <= self.min_valid_depth <= 1.0:
            raise ConfigError(f"min_valid_depth must be in [0, 1], got {self.min_valid_depth}")
        if self.max_tries < 1:
            raise ConfigError(f"max_tries must be >= 1, got {self.max_tries}")
        self.mask  # noqa: B018 (validates the mask settings)

    @property
    def mask(self) -> MaskGenerator:
        return MaskGenerator(self.mask_ratio, self.mask_unit, self.mask_patch_size)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def build_sample(
    frames: Sequence[Frame], config: SampleConfig, rng: np.random.Generator, scene_name: str = ""
) -> dict:
    """Stack the views, back-project, augment, mask. Keys as the collated batch without its batch dim."""
    image = torch.stack([f.image for f in frames])
    depth = torch.stack([f.depth for f in frames])
    K = torch.stack([f.K for f in frames])
    cam_to_world = torch.stack([f.cam_to_world for f in frames])
    coord, color, point_view, point_pixel = backproject(depth, K, cam_to_world, image)
    if config.augment:
        rotation = torch.from_numpy(random_rotation(rng, config.max_rotation_xy, config.max_rotation_z))
        coord, cam_to_world = apply_world_transform(rotation, coord, cam_to_world)
    views, height, width = depth.shape
    mask = config.mask(rng, views, height, width, point_view, point_pixel)
    return {
        "image": image,
        "depth": depth,
        "K": K,
        "cam_to_world": cam_to_world,
        "pixel_visible": mask.pixel_visible,
        "coord": coord,
        "color": color,
        "point_view": point_view,
        "point_pixel": point_pixel,
        "point_visible": mask.point_visible,
        "scene": scene_name,
        "frames": torch.tensor([f.index for f in frames], dtype=torch.long),
    }


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch ops of the block on one intra-op thread (see the module docstring)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _SceneSampleDataset(Dataset):
    """Shared machinery: lazily opened scenes (per process), bad-frame memory, skip counting."""

    def __init__(self, config: SampleConfig, seed: int) -> None:
        self.config = config
        self.seed = int(seed)
        self.epoch = 0
        self.skipped: Counter = Counter()
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._scenes: dict[str, Scene] = {}
        self._bad_frames: dict[str, dict[int, str]] = {}  # scene → position → reason
        self._bad_scenes: set[str] = set()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_scenes"] = {}  # never ship open handles to workers
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _scene(self, path: str) -> Scene:
        if self._pid != os.getpid():
            self._reset_process_state()
        if path in self._bad_scenes:
            raise DataError(f"{path}: unreadable scene")
        if path not in self._scenes:
            try:
                self._scenes[path] = open_scene(path, labels=False)  # pre-training never reads labels
            except DataError:
                self._bad_scenes.add(path)
                raise
        return self._scenes[path]

    def _load_views(
        self, path: str, scene: Scene, positions: Sequence[int], counts: Counter, check_overlap: bool = True
    ) -> list | None:
        """The views' frames at the configured resolution, or None (reason counted) when one is bad."""
        bad = self._bad_frames.setdefault(path, {})
        frames = []
        for position in positions:
            if position in bad:  # known bad: counted again (as if re-read) so counts are history-free
                counts[bad[position]] += 1
                return None
            try:
                frame = scene.frame(position, self.config.resolution)
                problem = depth_problem(frame.depth, self.config.min_valid_depth)
            except InvalidFrameError as error:
                problem = error.reason
            if problem is not None:
                bad[position] = problem
                counts[problem] += 1
                return None
            frames.append(frame)
        if self.config.min_overlap is not None and check_overlap:
            if sample_overlap(frames, self.config.overlap_tolerance) < self.config.min_overlap:
                counts[LOW_OVERLAP] += 1
                return None
        return frames

    def _finish(self, frames: list[Frame], scene: Scene, rng: np.random.Generator, counts: Counter) -> dict:
        sample = build_sample(frames, self.config, rng, scene.name)
        sample["skipped"] = dict(counts)
        self.skipped.update(counts)
        return sample

    def _give_up(self, index: int, counts: Counter) -> DataError:
        self.skipped.update(counts)
        return DataError(
            f"sample {index}: no valid views after {self.config.max_tries} tries (skipped: {dict(counts)})"
        )


class GS3Dataset(_SceneSampleDataset):
    """Random training samples: item ``index`` uses scene ``index % len(scenes)`` and a RandomViewSampler
    window; an epoch visits every scene ``samples_per_scene`` times."""

    def __init__(
        self,
        scenes: Sequence[str | Path],
        config: SampleConfig | None = None,
        seed: int = 0,
        samples_per_scene: int = 1,
    ) -> None:
        super().__init__(config or SampleConfig(), seed)
        if not scenes:
            raise DataError("GS3Dataset: no scenes given")
        self.scenes = [str(path) for path in scenes]
        self.samples_per_scene = int(samples_per_scene)
        self.sampler = RandomViewSampler(self.config.num_views, self.config.interval, seed=None)

    @classmethod
    def from_root(
        cls,
        root: str | Path,
        split: str | Path | None = None,
        config: SampleConfig | None = None,
        seed: int = 0,
        samples_per_scene: int = 1,
    ) -> GS3Dataset:
        """The scenes under a dataset root, optionally only a split ('train', 'val' or a list file)."""
        scenes = list_scenes(root, split)
        if not scenes:
            raise DataError(f"{root}: no scenes found" + (f" for split {split!r}" if split else ""))
        return cls(scenes, config, seed, samples_per_scene)

    def __len__(self) -> int:
        return len(self.scenes) * self.samples_per_scene

    def __getitem__(self, index: int) -> dict:
        with single_threaded():
            return self._get(index)

    def _get(self, index: int) -> dict:
        rng = sample_rng(self.seed, self.epoch, index)
        counts: Counter = Counter()
        path = self.scenes[index % len(self.scenes)]
        for _ in range(self.config.max_tries):
            try:
                scene = self._scene(path)
            except DataError:
                counts[UNREADABLE_SCENE] += 1
                path = self.scenes[int(rng.integers(len(self.scenes)))]
                continue
            # Known-bad frames are not excluded from the draw: skipping them after the draw consumes the same
            # random numbers as reading them again, so a sample never depends on what this process saw before.
            positions = self.sampler.sample(len(scene), rng)
            if positions is None:
                counts[SCENE_TOO_SHORT] += 1
                path = self.scenes[int(rng.integers(len(self.scenes)))]
                continue
            frames = self._load_views(path, scene, positions, counts)
            if frames is not None:
                return self._finish(frames, scene, rng, counts)
        raise self._give_up(index, counts)


class PairDataset(_SceneSampleDataset):
    """A fixed list of view tuples (a pair-list JSON, or deterministic windows of scenes, for evaluation).

    A bad item is replaced by the next item of the list (deterministically), its reason counted."""

    def __init__(
        self,
        samples: Sequence[ViewSample] | str | Path,
        config: SampleConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(config or SampleConfig(augment=False), seed)
        if isinstance(samples, (str, Path)):
            samples = read_pair_list(samples, self.config.min_overlap)
        self.samples = list(samples)
        if not self.samples:
            raise DataError("PairDataset: no samples")

    @classmethod
    def from_scenes(
        cls,
        scenes: Sequence[str | Path],
        config: SampleConfig | None = None,
        seed: int = 0,
        stride: int | None = None,
    ) -> PairDataset:
        """Deterministic windows (SequentialViewSampler) of every scene; frames with bad poses are left out
        up front and counted in ``dataset.skipped``."""
        config = config or SampleConfig(augment=False)
        sampler = SequentialViewSampler(config.num_views, config.interval, stride)
        counts: Counter = Counter()
        samples = []
        for path in scenes:
            try:
                scene = open_scene(path, labels=False)
            except DataError:
                counts[UNREADABLE_SCENE] += 1
                continue
            bad = invalid_pose_positions(scene, counts)
            samples += [ViewSample(str(path), views) for views in sampler.windows(len(scene), exclude=bad)]
        dataset = cls(samples, config, seed)
        dataset.skipped.update(counts)
        return dataset

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        with single_threaded():
            return self._get(index)

    def _get(self, index: int) -> dict:
        rng = sample_rng(self.seed, self.epoch, index)
        counts: Counter = Counter()
        for attempt in range(min(self.config.max_tries, len(self.samples))):
            item = self.samples[(index + attempt) % len(self.samples)]
            try:
                scene = self._scene(item.scene)
            except DataError:
                counts[UNREADABLE_SCENE] += 1
                continue
            # A listed overlap was measured (and filtered) already: only unmeasured items are checked.
            frames = self._load_views(item.scene, scene, item.frames, counts, item.overlap is None)
            if frames is not None:
                return self._finish(frames, scene, rng, counts)
        raise self._give_up(index, counts)
