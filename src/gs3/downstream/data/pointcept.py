"""Pointcept-preprocessed scenes: one folder of .npy arrays per scene.

    ROOT/<split>/<scene>/coord.npy       (N, 3) float32 metres
                         color.npy       (N, 3) uint8, 0..255 (Pointcept divides by 255: NormalizeColor)
                         normal.npy      (N, 3) float32 (optional)
                         segment20.npy   (N,) int64, ScanNet-20 index, -1 = ignore      (ScanNet)
                         segment200.npy  (N,) int64, ScanNet-200 index                   (ScanNet, unused)
                         segment.npy     (N,) or (N, 1) int16, S3DIS-13 index             (S3DIS)
                         instance.npy    (N,) or (N, 1) int, -1 = none (optional)

What Pointcept's own preprocessing writes (read in Pointcept/Pointcept at d74c646:
pointcept/datasets/preprocessing/scannet/preprocess_scannet.py saves coord float32, color uint8, normal
float32, segment20 / segment200 / instance as int64 (`astype(int)`) with -1 = ignore;
preprocessing/s3dis/preprocess_s3dis.py saves coord float32, color uint8, segment and instance int16 of shape
(N, 1), normal float32 only with --parse_normal; its S3DIS split folders are Area_1 … Area_6, Area_5 held
out for validation). Labels are read from ``segment20.npy`` for scannet20 and ``segment.npy`` for s3dis13,
falling back to ``segment.npy`` (Pointcept's generic name) when the set's own file is absent.

Scene names follow Pointcept's datasets: the folder name for ScanNet, ``<area>-<room>`` for S3DIS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gs3.downstream.data.classes import IGNORE_INDEX, ClassSet
from gs3.downstream.data.samples import LabelledPoints
from gs3.errors import DataError

SEGMENT_FILES = {"scannet20": "segment20.npy", "s3dis13": "segment.npy"}
GENERIC_SEGMENT_FILE = "segment.npy"


def list_pointcept_scenes(
    root: str | Path, splits: str | list[str], classes: ClassSet
) -> list[tuple[str, Path]]:
    """(name, folder) of every scene under ROOT/<split>/ for each split folder, sorted by folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: Pointcept data root is not a directory")
    scenes = []
    for split in [splits] if isinstance(splits, str) else list(splits):
        folder = root / str(split)
        if not folder.is_dir():
            raise DataError(
                f"{folder}: split folder is missing (Pointcept layout ROOT/<split>/<scene>/*.npy)"
            )
        for scene in sorted(p for p in folder.iterdir() if (p / "coord.npy").is_file()):
            name = f"{split}-{scene.name}" if classes.name == "s3dis13" else scene.name
            scenes.append((name, scene))
    return scenes


def load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: unreadable .npy ({error})") from None


def read_pointcept_scene(folder: str | Path, classes: ClassSet, name: str | None = None) -> LabelledPoints:
    """One scene folder (see the module docstring); DataError names the file that is wrong."""
    folder = Path(folder)
    coord = load_array(folder / "coord.npy")
    if coord.ndim != 2 or coord.shape[1] != 3 or not np.issubdtype(coord.dtype, np.number):
        raise DataError(f"{folder / 'coord.npy'}: expected (N, 3) numbers, got {coord.shape} {coord.dtype}")
    count = len(coord)

    def rows(file: str, columns: int | None) -> np.ndarray:
        array = load_array(folder / file)
        shape_ok = len(array) == count and (
            array.shape[1:] == (columns,) if columns else array.reshape(count, -1).shape[1] == 1
        )
        if not shape_ok:
            expected = f"({count}, {columns})" if columns else f"({count},)"
            raise DataError(f"{folder / file}: shape {array.shape}, expected {expected} like coord.npy")
        return array if columns else array.reshape(count)

    color = rows("color.npy", 3).astype(np.float32)
    if color.size and (color.min() < 0 or color.max() > 255):
        raise DataError(f"{folder / 'color.npy'}: values outside 0..255 (Pointcept stores 8-bit colour)")
    segment_file = SEGMENT_FILES.get(classes.name, GENERIC_SEGMENT_FILE)
    if not (folder / segment_file).is_file():
        segment_file = GENERIC_SEGMENT_FILE
    if not (folder / segment_file).is_file():
        raise DataError(f"{folder}: no {SEGMENT_FILES.get(classes.name)} or {GENERIC_SEGMENT_FILE} (labels)")
    segment = rows(segment_file, None).astype(np.int64)
    if segment.size and (segment.min() < IGNORE_INDEX or segment.max() >= classes.num_classes):
        raise DataError(
            f"{folder / segment_file}: labels {int(segment.min())}..{int(segment.max())} outside "
            f"{IGNORE_INDEX}..{classes.num_classes - 1} ({classes.name})"
        )
    normal = rows("normal.npy", 3) if (folder / "normal.npy").is_file() else None
    instance = rows("instance.npy", None) if (folder / "instance.npy").is_file() else None
    points = LabelledPoints.from_numpy(
        name or folder.name, coord, color / 255.0, segment, normal=normal, instance=instance
    )
    if not bool(np.isfinite(coord).all()):
        raise DataError(f"{folder / 'coord.npy'}: non-finite coordinates")
    return points
