"""Writing scenes in the ScanNet exported layout, plus label/, instance/, points.npz and meta.json.

Every file is written atomically with the umask's permissions (gs3.files), not fsynced: a scene has many
small files, and a generation cut short by a power loss is simply run again."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gs3.files import atomic_write, atomic_write_text, make_temporary_dir

from .labels import CLASS_NAMES, SCANNET20_NYU40_IDS, scannet20_index
from .points import DEFAULT_POINT_DENSITY, PointCloud
from .raycast import RenderedView
from .scene import (
    DEFAULT_FRAMES,
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    SyntheticScene,
    check_positive,
    generate_scene,
)

GENERATOR_VERSION = "1"


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(f"{value:.9f}" for value in row) + "\n" for row in matrix)


def _save_uint16_png(array: np.ndarray, path: Path) -> None:
    if array.min() < 0 or array.max() > 65535:
        raise ValueError(f"{path}: values outside uint16")
    _save_image(np.ascontiguousarray(array, dtype=np.uint16), path, format="PNG")


def _save_image(array: np.ndarray, path: Path, **options) -> None:
    atomic_write(path, lambda file: Image.fromarray(array).save(file, **options), sync=False)


def _save_text(text: str, path: Path) -> None:
    atomic_write_text(text, path, sync=False)


def write_frame(view: RenderedView, pose: np.ndarray, directory: Path, frame: int) -> None:
    """Write one frame's colour, depth, pose and label images into a scene folder (subfolders exist)."""
    color = np.clip(np.rint(view.image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    _save_image(color, directory / "color" / f"{frame}.jpg", format="JPEG", quality=95)
    depth_mm = np.rint(view.depth.astype(np.float64) * 1000.0)
    _save_uint16_png(np.where(depth_mm > 65535, 0, depth_mm), directory / "depth" / f"{frame}.png")
    _save_text(_matrix_text(pose), directory / "pose" / f"{frame}.txt")
    _save_uint16_png(view.semantic, directory / "label" / f"{frame}.png")
    _save_uint16_png(view.instance, directory / "instance" / f"{frame}.png")


def write_point_cloud(cloud: PointCloud, path: Path) -> None:
    """points.npz: coord, color (uint8), normal, semantic (NYU40), segment20, instance."""
    arrays = {
        "coord": cloud.coord,
        "color": np.clip(np.rint(cloud.color.astype(np.float64) * 255.0), 0, 255).astype(np.uint8),
        "normal": cloud.normal,
        "semantic": cloud.semantic,
        "segment20": scannet20_index(cloud.semantic),
        "instance": cloud.instance,
    }
    atomic_write(path, lambda file: np.savez_compressed(file, **arrays), sync=False)


def write_scene(
    scene: SyntheticScene, directory: Path, point_density: float | None = DEFAULT_POINT_DENSITY
) -> Path:
    """Write a scene in the ScanNet exported layout plus label/, instance/, points.npz and meta.json.

    `point_density=None` skips the point cloud. Returns the scene folder.
    """
    directory = Path(directory)
    for sub in ("color", "depth", "pose", "intrinsic", "label", "instance"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    K4 = np.eye(4)
    K4[:3, :3] = scene.K
    for stream in ("color", "depth"):
        _save_text(_matrix_text(K4), directory / "intrinsic" / f"intrinsic_{stream}.txt")
        _save_text(_matrix_text(np.eye(4)), directory / "intrinsic" / f"extrinsic_{stream}.txt")
    for frame in range(len(scene)):
        write_frame(scene.render(frame), scene.poses[frame], directory, frame)
    num_points = 0
    if point_density is not None:
        cloud = scene.point_cloud(point_density)
        write_point_cloud(cloud, directory / "points.npz")
        num_points = len(cloud)
    meta = {
        "generator": "gs3.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": scene.seed,
        "scene_index": scene.index,
        "name": scene.name,
        "num_frames": len(scene),
        "width": scene.width,
        "height": scene.height,
        "depth_unit": "millimetre",
        "room_size": [round(float(v), 6) for v in scene.room.size],
        "num_boxes": len(scene.room),
        "num_points": num_points,
        "point_density": point_density,
        "label_ids": "nyu40",
        "classes": {str(k): v for k, v in sorted(CLASS_NAMES.items())},
        "scannet20_nyu40_ids": list(SCANNET20_NYU40_IDS),
        "instances": [
            {"id": instance, "semantic": semantic, "name": CLASS_NAMES[semantic]}
            for instance, semantic in sorted(scene.room.instance_semantic.items())
        ],
    }
    _save_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", directory / "meta.json")
    return directory


def write_dataset(
    out: Path,
    num_scenes: int,
    num_frames: int = DEFAULT_FRAMES,
    seed: int = 0,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    point_density: float | None = DEFAULT_POINT_DENSITY,
    progress: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write scenes synthetic_0000 .. synthetic_{N-1} under `out` (plus scenes.txt listing them)."""
    check_positive(scenes=num_scenes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for index in range(num_scenes):
        scene = generate_scene(seed, index, num_frames, width, height)
        folders.append(write_scene(scene, out / scene.name, point_density))
        if progress is not None:
            progress(folders[-1])
    _save_text("".join(f"{folder.name}\n" for folder in folders), out / "scenes.txt")
    return folders


def write_dataset_once(root: Path, num_scenes: int, what: str = "synthetic scenes", **kwargs: object) -> Path:
    """`write_dataset` into `root` unless a complete one is there. It is written into a temporary sibling
    folder renamed into place when complete, so an interrupted generation is never taken for a dataset,
    and two processes generating at once end with one complete copy."""
    root = Path(root)
    if (root / "scenes.txt").is_file():
        return root
    temporary = make_temporary_dir(root.parent, prefix=f".{root.name}.")  # the umask's permissions
    try:
        print(f"gs3: generating {num_scenes} {what} into {root} (once)", flush=True)
        write_dataset(temporary, num_scenes, **kwargs)  # type: ignore[arg-type]
        try:
            os.replace(temporary, root)
        except OSError:  # another process finished first
            if not (root / "scenes.txt").is_file():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return root
