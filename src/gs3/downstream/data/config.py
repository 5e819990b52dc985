"""The data part of a fine-tuning config (``FinetuneConfig.data``): which labelled data, how it is split,
augmented, sampled and batched. Defaults are Pointcept's SpUNet ScanNet recipe
(configs/scannet/semseg-spunet-v1m1-0-base.py) where it has a value.

Splits (``train_split`` / ``val_split``), by source:
* ``scannet_mesh`` and ``frames``: scene names under ``root`` — "train" / "val" / "test" (ScanNet v2's
  official lists shipped with gs3), "all" (every scene folder under root), a path to a text file with one
  name per line, or a YAML list of names. Scenes of a list that are absent under root are left out.
* ``pointcept``: folder names under ``root`` ("train", "val"; S3DIS: ["Area_1", "Area_2", "Area_3",
  "Area_4", "Area_6"] and "Area_5"), a string or a list.
* ``synthetic``: "train" / "val" are the generated rooms minus / only the last ``synthetic_val_scenes``;
  otherwise as for ``frames``.

Frames (``frames`` source; ``synthetic`` with images or ``points_from: frames``): ``train_frames`` /
``val_frames`` choose frames in every scene of the split: a slice over positions in numeric frame order
("::2" every second frame, "1::2" the others, "" or "all" every frame) or a list of frame numbers (file
stems). 2D: one sample per frame. 3D: ``frames_per_sample`` consecutive chosen frames are back-projected
together into one labelled cloud. Frames are read at ``image_size`` ([width, height]; [] = the depth's size).

Data-efficient protocols (training split only, seeded by the run's seed):
* ``limited_scenes``: a fraction in (0, 1] of the training scenes, or a list / list file of their names;
* ``labelled_points``: N > 0 keeps the labels of N points per training sample (N pixels per image), the
  rest become IGNORE_INDEX; ``labelled_points_file`` instead reads the ScanNet data-efficient benchmark's
  point lists (Pointcept's ``la_file``: a torch file {scene name: point indices}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gs3.config import check_setting
from gs3.downstream.data.classes import CLASS_SETS

SOURCES = ("scannet_mesh", "pointcept", "frames", "synthetic")
MODALITIES = ("points", "images")
POINTS_FROM = ("cloud", "frames")


@dataclass
class PointAugmentConfig:
    """Training-time point augmentations (gs3.data.augment); angles in units of π as in Pointcept."""

    enabled: bool = True
    dropout_ratio: float = 0.2
    dropout_p: float = 0.2
    rotate_z: float = 1.0
    rotate_xy: float = 1.0 / 64.0
    rotate_p: float = 0.5
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    flip_p: float = 0.5
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    elastic: list[list[float]] = field(default_factory=lambda: [[0.2, 0.4], [0.8, 1.6]])
    elastic_p: float = 0.95
    auto_contrast_p: float = 0.2
    color_translation_p: float = 0.95
    color_translation_ratio: float = 0.05
    color_jitter_p: float = 0.95
    color_jitter_std: float = 0.05
    shuffle: bool = True


@dataclass
class ImageAugmentConfig:
    """Training-time image augmentations (gs3.downstream.data.image_transforms)."""

    enabled: bool = True
    scale: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip_p: float = 0.5
    photometric_p: float = 0.5
    brightness: float = 32.0 / 255.0
    contrast: list[float] = field(default_factory=lambda: [0.5, 1.5])
    saturation: list[float] = field(default_factory=lambda: [0.5, 1.5])


@dataclass
class DownstreamDataConfig:
    source: str = "synthetic"  # scannet_mesh | pointcept | frames | synthetic
    root: str = ""  # dataset root (synthetic: empty = generate into cache_dir)
    modality: str = "points"  # points (3D encoders) | images (2D encoder)
    classes: str = "scannet20"  # scannet20 | s3dis13
    train_split: Any = "train"
    val_split: Any = "val"
    # frames
    train_frames: Any = ""
    val_frames: Any = ""
    frames_per_sample: int = 1
    image_size: list[int] = field(default_factory=lambda: [320, 240])
    label_map: str = ""  # a full scannetv2-labels.combined.tsv for label-filt scenes (default: packaged)
    # synthetic rooms
    points_from: str = "cloud"  # cloud (points.npz) | frames (back-projected labelled frames)
    synthetic_seed: int = 100  # rooms of another seed than pre-training's demo (0): held out from it
    synthetic_scenes: int = 8
    synthetic_val_scenes: int = 2
    synthetic_frames: int = 20
    synthetic_point_density: float = 1000.0  # points per m² of visible surface
    cache_dir: str = "~/.cache/gs3/finetune"
    # 3D sampling and augmentation
    grid_size: float = 0.02  # metres
    sphere_crop: int = 100000  # training: at most this many points around a random centre (0 = off)
    mix_prob: float = 0.8  # Mix3D: probability that a training batch overlays pairs of its samples
    point_augment: PointAugmentConfig = field(default_factory=PointAugmentConfig)
    image_augment: ImageAugmentConfig = field(default_factory=ImageAugmentConfig)
    # data-efficient protocols (training split only)
    limited_scenes: Any = None
    labelled_points: int = 0
    labelled_points_file: str = ""
    # loading
    loop: int = 1  # training: every scene this many times per epoch (Pointcept's `loop`)
    batch_size: int = 8  # per process
    val_batch_size: int = 1
    num_workers: int = 4
    max_tries: int = 10  # a bad sample is replaced by the next one, at most this many times in a row


def _check(condition: bool, source: str, key: str, message: str) -> None:
    check_setting(condition, source, f"data.{key}", message)


def _pair(values: Any, source: str, key: str, low: float = -math.inf) -> None:
    ok = isinstance(values, (list, tuple)) and len(values) == 2 and low <= values[0] <= values[1]
    _check(ok, source, key, f"expected [min, max] with {low} <= min <= max, got {values}")


def validate_data_config(d: DownstreamDataConfig, source: str = "config") -> None:
    """Range checks beyond omegaconf's types; one line naming the key on failure."""
    _check(d.source in SOURCES, source, "source", f"'{d.source}' not one of {'|'.join(SOURCES)}")
    _check(d.modality in MODALITIES, source, "modality", f"'{d.modality}' not points|images")
    _check(d.classes in CLASS_SETS, source, "classes", f"'{d.classes}' not one of {'|'.join(CLASS_SETS)}")
    _check(d.source == "synthetic" or bool(d.root), source, "root", "empty (where is the labelled data?)")
    _check(
        d.modality == "points" or d.source in ("frames", "synthetic"),
        source,
        "modality",
        f"images need a frame source (frames|synthetic), not '{d.source}'",
    )
    _check(
        d.classes == "scannet20" or d.source == "pointcept",
        source,
        "classes",
        f"'{d.classes}' is only read from Pointcept folders; {d.source} labels are NYU40 (scannet20)",
    )
    _check(d.points_from in POINTS_FROM, source, "points_from", f"'{d.points_from}' not cloud|frames")
    _check(d.frames_per_sample >= 1, source, "frames_per_sample", "must be >= 1")
    _check(
        len(d.image_size) in (0, 2) and all(v > 0 for v in d.image_size),
        source,
        "image_size",
        f"expected [width, height] (or [] for the depth's size), got {list(d.image_size)}",
    )
    _check(d.modality == "points" or len(d.image_size) == 2, source, "image_size", "images need a size")
    _check(d.synthetic_scenes >= 2, source, "synthetic_scenes", "need >= 2 (training and validation rooms)")
    _check(
        1 <= d.synthetic_val_scenes < d.synthetic_scenes,
        source,
        "synthetic_val_scenes",
        f"must be in [1, synthetic_scenes - 1 = {d.synthetic_scenes - 1}]",
    )
    _check(d.synthetic_frames >= 1, source, "synthetic_frames", "must be >= 1")
    _check(d.synthetic_point_density > 0, source, "synthetic_point_density", "must be > 0")
    _check(d.synthetic_seed >= 0, source, "synthetic_seed", "must be >= 0")
    _check(d.grid_size > 0, source, "grid_size", "must be > 0 metres")
    _check(d.sphere_crop >= 0, source, "sphere_crop", "must be >= 0 (0 = off)")
    _check(0.0 <= d.mix_prob <= 1.0, source, "mix_prob", "must be in [0, 1]")
    _check(d.labelled_points >= 0, source, "labelled_points", "must be >= 0 (0 = every label)")
    _check(
        not (d.labelled_points and d.labelled_points_file),
        source,
        "labelled_points_file",
        "set either labelled_points or labelled_points_file, not both",
    )
    _check(not d.labelled_points_file or d.modality == "points", source, "labelled_points_file", "3D only")
    limited = d.limited_scenes
    _check(
        limited is None
        or (isinstance(limited, (int, float)) and not isinstance(limited, bool) and 0 < limited <= 1)
        or (isinstance(limited, str) and bool(limited))
        or (isinstance(limited, (list, tuple)) and len(limited) > 0),
        source,
        "limited_scenes",
        f"expected a fraction in (0, 1], a list of scene names or a list file, got {limited!r}",
    )
    _check(d.loop >= 1, source, "loop", "must be >= 1")
    _check(d.batch_size >= 1 and d.val_batch_size >= 1, source, "batch_size/val_batch_size", "must be >= 1")
    _check(d.num_workers >= 0, source, "num_workers", "must be >= 0")
    _check(d.max_tries >= 1, source, "max_tries", "must be >= 1")
    p = d.point_augment
    for key in (
        "dropout_p",
        "rotate_p",
        "flip_p",
        "elastic_p",
        "auto_contrast_p",
        "color_translation_p",
        "color_jitter_p",
    ):
        _check(0 <= getattr(p, key) <= 1, source, f"point_augment.{key}", "must be a probability in [0, 1]")
    _check(0 <= p.dropout_ratio < 1, source, "point_augment.dropout_ratio", "must be in [0, 1)")
    _pair(p.scale, source, "point_augment.scale", low=1e-6)
    _check(p.jitter_sigma >= 0 and p.jitter_clip > 0, source, "point_augment.jitter_sigma/clip", ">= 0 / > 0")
    _check(
        all(len(pair) == 2 and pair[0] > 0 and pair[1] >= 0 for pair in p.elastic),
        source,
        "point_augment.elastic",
        f"expected [[granularity > 0, magnitude >= 0], ...], got {p.elastic}",
    )
    i = d.image_augment
    _pair(i.scale, source, "image_augment.scale", low=1e-3)
    _pair(i.contrast, source, "image_augment.contrast", low=0.0)
    _pair(i.saturation, source, "image_augment.saturation", low=0.0)
    _check(0 <= i.flip_p <= 1 and 0 <= i.photometric_p <= 1, source, "image_augment.*_p", "must be in [0, 1]")
    _check(i.brightness >= 0, source, "image_augment.brightness", "must be >= 0")
