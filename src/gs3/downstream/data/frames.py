"""Labelled RGB-D frames as 2D samples (one labelled image per frame) or 3D samples (the labelled pixels
of one or more frames back-projected into one labelled point cloud).

Frames come from `gs3.data.open_scene`, whose ``frame.label`` holds NYU40 ids aligned with colour and depth
(see gs3.data.labels for the label folders); they map here to the class set. A 3D sample holds every pixel
with valid depth (gs3.data.transforms.backproject), unlabelled pixels included as IGNORE_INDEX points, so
the encoder sees the whole geometry the frames saw.

Frame selection (``train_frames`` / ``val_frames``): a slice string over positions in numeric frame order
("::2", "1::2", "10:20"; "" or "all" = every frame) or a list of frame numbers (the file stems).
"""

from __future__ import annotations

from typing import Any

import torch

from gs3.data.scene import Scene
from gs3.data.transforms import backproject
from gs3.downstream.data.classes import ClassSet
from gs3.downstream.data.samples import LabelledImage, LabelledPoints
from gs3.errors import ConfigError, DataError


def parse_slice(spec: str, key: str = "frames") -> slice:
    parts = spec.split(":")
    if len(parts) > 3:
        raise ConfigError(f"data.{key}: '{spec}' is not a slice like '::2' or '1:20:5'")
    try:
        values = [int(part) if part.strip() else None for part in parts]
    except ValueError:
        raise ConfigError(f"data.{key}: '{spec}' is not a slice like '::2' or '1:20:5'") from None
    if len(values) == 1:  # a single number means that one position
        return slice(values[0], None if values[0] is None or values[0] == -1 else values[0] + 1)
    if len(values) == 3 and values[2] == 0:
        raise ConfigError(f"data.{key}: slice step cannot be 0")
    return slice(*values)


def select_positions(scene: Scene, spec: Any, key: str = "frames") -> list[int]:
    """Positions of the chosen frames of a scene (see the module docstring)."""
    positions = list(range(len(scene)))
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return positions
    if isinstance(spec, str):
        return positions[parse_slice(spec, key)]
    if isinstance(spec, (list, tuple)):
        by_number = {scene.frame_index(p): p for p in positions}
        missing = [number for number in spec if int(number) not in by_number]
        if missing:
            raise DataError(f"{scene.path}: data.{key} lists frames {missing} that the scene does not have")
        return [by_number[int(number)] for number in spec]
    raise ConfigError(f"data.{key}: expected a slice string or a list of frame numbers, got {spec!r}")


def group_positions(positions: list[int], per_sample: int) -> list[list[int]]:
    """Consecutive groups of ``per_sample`` chosen positions (the last may be shorter)."""
    return [positions[i : i + per_sample] for i in range(0, len(positions), per_sample)]


def _require_labels(scene: Scene, label: torch.Tensor | None) -> torch.Tensor:
    if label is None:
        raise DataError(f"{scene.path}: no per-pixel labels (label-nyu40/, label/ or label-filt/ folder)")
    return label


def labelled_image(
    scene: Scene, position: int, size: tuple[int, int] | None, classes: ClassSet
) -> LabelledImage:
    """One frame's colour and class map at ``size`` (w, h), or at the depth's size when None."""
    frame = scene.frame(position, size)
    label = _require_labels(scene, frame.label)
    segment = torch.from_numpy(classes.from_nyu40(label.numpy()))
    return LabelledImage(f"{scene.name}/{frame.index}", frame.image, segment)


def labelled_frame_points(
    scene: Scene, positions: list[int], size: tuple[int, int] | None, classes: ClassSet
) -> LabelledPoints:
    """Every valid-depth pixel of the frames, back-projected to world points with its colour and class."""
    frames = [scene.frame(position, size) for position in positions]
    labels = torch.stack([_require_labels(scene, frame.label) for frame in frames])
    coord, color, point_view, point_pixel = backproject(
        torch.stack([f.depth for f in frames]),
        torch.stack([f.K for f in frames]),
        torch.stack([f.cam_to_world for f in frames]),
        torch.stack([f.image for f in frames]),
    )
    nyu40 = labels.reshape(len(frames), -1)[point_view, point_pixel]
    name = f"{scene.name}/" + "+".join(str(f.index) for f in frames)
    return LabelledPoints(name, coord, color, torch.from_numpy(classes.from_nyu40(nyu40.numpy())))
