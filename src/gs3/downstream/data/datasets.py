"""Fine-tuning datasets: `build_downstream_dataset(config, split, seed)` → a torch Dataset of samples that
its ``collate_fn`` batches into the batch contract (gs3.downstream.data.collate).

Reproducibility: a training sample draws all its randomness from ``default_rng([seed, epoch, index])``
(gs3.data.dataset.sample_rng), so it is a function of (seed, epoch, index); call ``set_epoch`` before each
epoch (gs3.train.sampling.EpochIndexed does). Evaluation samples use epoch 0 always: the same every time.

Bad data never stops a long run: a sample that cannot be read (a missing or corrupt file, a bad frame), has
no points, or (training) no labelled point is replaced by the next one in the list, the reason counted in
``dataset.skipped`` and in the sample's ``skipped`` (so batches carry the counts of their workers). Only
``max_tries`` failures in a row raise DataError. Problems found while building (no such root, no scene of the
split, a frame scene without labels) raise at once: they are set-up errors, not bad luck.

Workers: frame scenes are opened lazily per process (file handles never cross a fork).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from gs3.data.dataset import sample_rng, single_threaded
from gs3.data.scene import Scene
from gs3.data.splits import SPLITS, open_scene, report_missing_scenes, scene_path_in, split_scene_names
from gs3.data.validation import InvalidFrameError
from gs3.downstream.data.classes import IGNORE_INDEX, ClassSet, class_set
from gs3.downstream.data.collate import PointCollate, collate_images
from gs3.downstream.data.config import DownstreamDataConfig, validate_data_config
from gs3.downstream.data.frames import (
    group_positions,
    labelled_frame_points,
    labelled_image,
    select_positions,
)
from gs3.downstream.data.image_transforms import ImageTransform
from gs3.downstream.data.mesh import mesh_paths, read_scannet_mesh
from gs3.downstream.data.point_transforms import PointTransform
from gs3.downstream.data.pointcept import list_pointcept_scenes, read_pointcept_scene
from gs3.downstream.data.protocols import (
    labelled_subset,
    limit_scenes,
    read_labelled_points_file,
    read_name_list,
)
from gs3.downstream.data.samples import LabelledImage, LabelledPoints
from gs3.downstream.data.synthetic import prepare_synthetic, read_synthetic_cloud, synthetic_split
from gs3.errors import ConfigError, DataError

UNREADABLE_SAMPLE = "unreadable sample"
EMPTY_SAMPLE = "empty sample"
NO_LABELLED_POINTS = "no labelled points"


@dataclass(frozen=True)
class SampleSource:
    """Where one sample comes from: ``kind`` mesh | pointcept | cloud | frames, its name and path, and for
    frames the positions in the scene."""

    kind: str
    name: str
    path: str
    positions: tuple[int, ...] = ()


class DownstreamDataset(Dataset):
    """Labelled samples of one split (see the module docstring)."""

    def __init__(
        self,
        sources: list[SampleSource],
        config: DownstreamDataConfig,
        train: bool,
        seed: int,
        labelled_lists: dict[str, np.ndarray] | None = None,
    ) -> None:
        if not sources:
            raise DataError("downstream dataset: no samples")
        self.sources = sources
        self.config = config
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        self.classes: ClassSet = class_set(config.classes)
        self.images = config.modality == "images"
        self.labelled_lists = labelled_lists
        self.transform = (ImageTransform if self.images else PointTransform)(config, train)
        self.collate_fn = collate_images if self.images else PointCollate(config.mix_prob if train else 0.0)
        self.skipped: Counter = Counter()
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._scenes: dict[str, Scene] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_scenes"] = {}
        return state

    @property
    def names(self) -> list[str]:
        return [source.name for source in self.sources]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sources) * (self.config.loop if self.train else 1)

    def __getitem__(self, index: int) -> dict:
        with single_threaded():
            return self._get(index)

    def _get(self, index: int) -> dict:
        rng = sample_rng(self.seed, self.epoch if self.train else 0, index)
        counts: Counter = Counter()
        last_error = ""
        for attempt in range(min(self.config.max_tries, len(self.sources))):
            source = self.sources[(index + attempt) % len(self.sources)]
            try:
                loaded = self.load(source)
            except DataError as error:
                counts[error.reason if isinstance(error, InvalidFrameError) else UNREADABLE_SAMPLE] += 1
                last_error = str(error)
                continue
            segment = loaded.segment
            if segment.numel() == 0:
                counts[EMPTY_SAMPLE] += 1
                last_error = f"{source.name}: no points"
                continue
            labelled = self._labelled(source.name, segment.numel()) if self.train else None
            if self.train and self._no_labels(segment, labelled):
                counts[NO_LABELLED_POINTS] += 1
                last_error = f"{source.name}: no labelled point"
                continue
            sample = self.transform(loaded, rng, labelled)
            self.skipped.update(counts)
            sample["skipped"] = dict(counts)
            return sample
        self.skipped.update(counts)
        raise DataError(f"sample {index}: nothing usable in {sum(counts.values())} tries ({last_error})")

    def _labelled(self, name: str, total: int) -> np.ndarray | None:
        """Indices of the points/pixels that keep their labels under the limited-annotation protocol."""
        if self.labelled_lists is not None:
            indices = self.labelled_lists[name]
            if indices.size and indices.max() >= total:
                raise DataError(f"{name}: labelled point index {int(indices.max())} >= its {total} points")
            return indices
        if self.config.labelled_points > 0:
            return labelled_subset(name, total, self.config.labelled_points, self.seed)
        return None

    @staticmethod
    def _no_labels(segment: Any, labelled: np.ndarray | None) -> bool:
        flat = segment.reshape(-1)
        if labelled is not None:
            flat = flat[labelled]
        return not bool((flat != IGNORE_INDEX).any())

    def _scene(self, path: str) -> Scene:
        if self._pid != os.getpid():
            self._reset_process_state()
        if path not in self._scenes:
            self._scenes[path] = open_scene(path, label_map=self.config.label_map or None)
        return self._scenes[path]

    def load(self, source: SampleSource) -> LabelledPoints | LabelledImage:
        """The labelled sample of a source, before any transform (checked against the class set)."""
        classes = self.classes
        if source.kind == "mesh":
            loaded: LabelledPoints | LabelledImage = read_scannet_mesh(source.path, classes)
        elif source.kind == "pointcept":
            loaded = read_pointcept_scene(source.path, classes, source.name)
        elif source.kind == "cloud":
            loaded = read_synthetic_cloud(source.path, classes)
        else:
            scene = self._scene(source.path)
            size = tuple(self.config.image_size) if self.config.image_size else None
            if self.images:
                loaded = labelled_image(scene, source.positions[0], size, classes)
            else:
                loaded = labelled_frame_points(scene, list(source.positions), size, classes)
        return loaded.check(classes.num_classes)


# -- building ------------------------------------------------------------------------------------------------
def prepare_downstream_data(config: DownstreamDataConfig) -> None:
    """One-time preparation (generating the synthetic rooms); call it on one process before building."""
    if config.source == "synthetic":
        prepare_synthetic(config)


def _scene_names(spec: Any, key: str) -> list[str] | None:
    """Names of a split spec; None = every scene under the root."""
    if isinstance(spec, (list, tuple)):
        return [str(name) for name in spec]
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return None
    if isinstance(spec, str) and spec in SPLITS:
        return split_scene_names(spec)
    if isinstance(spec, str):
        return read_name_list(spec, key)
    raise ConfigError(f"data.{key}: expected a split name, a list file or a list of names, got {spec!r}")


def _found(root: Path, names: list[str] | None, exists: Any) -> tuple[list[tuple[str, Path]], list[str]]:
    """(name, path) of the named scenes found under root (all when names is None), and the missing names."""
    if not root.is_dir():
        raise DataError(f"{root}: data root is not a directory")
    if names is None:
        names = sorted(entry.name for entry in root.iterdir() if exists(root, entry.name) is not None)
    found, missing = [], []
    for name in names:
        path = exists(root, name)
        (found.append((name, path)) if path is not None else missing.append(name))
    return found, missing


def _mesh_scene(root: Path, name: str) -> Path | None:
    return root / name if mesh_paths(root / name)[0].is_file() else None


def _scenes(config: DownstreamDataConfig, split: str, seed: int) -> list[tuple[str, Path]]:
    """(name, path) of the split's scenes (after the limited-scenes protocol); absent ones are reported."""
    key = f"{split}_split"
    spec = config.train_split if split == "train" else config.val_split
    root = Path(config.root).expanduser()
    if config.source == "pointcept":
        splits = spec if isinstance(spec, (list, tuple)) else str(spec)
        found, missing = list_pointcept_scenes(root, splits, class_set(config.classes)), []
    elif config.source == "scannet_mesh":
        found, missing = _found(root, _scene_names(spec, key), _mesh_scene)
    else:
        if config.source == "synthetic":
            root = prepare_synthetic(config)
            if spec in ("train", "val"):
                spec = synthetic_split(root, spec, config.synthetic_val_scenes)
        found, missing = _found(root, _scene_names(spec, key), scene_path_in)
    if not found:
        raise DataError(f"{root}: no scene of data.{key} {spec!r} found ({config.source} layout)")
    report_missing_scenes(f"data.{key}", root, missing, len(found) + len(missing))
    if split == "train" and config.limited_scenes is not None:
        kept = set(limit_scenes([name for name, _ in found], config.limited_scenes, seed))
        found = [(name, path) for name, path in found if name in kept]
    return found


def _frame_sources(config: DownstreamDataConfig, split: str, scenes: list[tuple[str, Path]]) -> list:
    key = f"{split}_frames"
    spec = config.train_frames if split == "train" else config.val_frames
    per_sample = 1 if config.modality == "images" else config.frames_per_sample
    sources = []
    for _, path in scenes:
        scene = open_scene(path, label_map=config.label_map or None)
        if not getattr(scene, "has_labels", False):
            raise DataError(
                f"{path}: no per-pixel labels (needs a label-nyu40/, label/ or label-filt/ folder)"
            )
        for group in group_positions(select_positions(scene, spec, key), per_sample):
            name = f"{scene.name}/" + "+".join(str(scene.frame_index(p)) for p in group)
            sources.append(SampleSource("frames", name, str(path), tuple(group)))
    if not sources:
        raise DataError(f"data.{key} {spec!r} selects no frame of the {split} scenes")
    return sources


def build_downstream_dataset(config: DownstreamDataConfig, split: str, seed: int) -> DownstreamDataset:
    """The dataset of ``split`` ("train" | "val") for a data config (see gs3.downstream.data.config)."""
    validate_data_config(config)
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
    scenes = _scenes(config, split, seed)
    frames = config.source == "frames" or (
        config.source == "synthetic" and (config.modality == "images" or config.points_from == "frames")
    )
    if frames:
        sources = _frame_sources(config, split, scenes)
    else:
        kind = {"scannet_mesh": "mesh", "pointcept": "pointcept", "synthetic": "cloud"}[config.source]
        sources = [SampleSource(kind, name, str(path)) for name, path in scenes]
    labelled_lists = None
    if split == "train" and config.labelled_points_file:
        labelled_lists = read_labelled_points_file(config.labelled_points_file)
        absent = [source.name for source in sources if source.name not in labelled_lists]
        if absent:
            raise DataError(
                f"{config.labelled_points_file}: no labelled points for {len(absent)} training scenes "
                f"(e.g. {absent[0]})"
            )
    return DownstreamDataset(sources, config, split == "train", seed, labelled_lists)
