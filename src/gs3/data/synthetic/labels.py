"""The classes the generator builds, as NYU40 ids (the ids ScanNet's labels map to), and the ScanNet-20
benchmark index of each."""

from __future__ import annotations

import numpy as np

# NYU40 ids (the ids ScanNet's `nyu40id` column maps raw labels to) of the classes the generator builds.
CLASS_NAMES: dict[int, str] = {
    1: "wall",
    2: "floor",
    3: "cabinet",
    4: "bed",
    5: "chair",
    6: "sofa",
    7: "table",
    8: "door",
    9: "window",
    10: "bookshelf",
    11: "picture",
    12: "counter",
    14: "desk",
    22: "ceiling",
    23: "books",
    24: "refrigerator",
    39: "otherfurniture",
}
CLASS_IDS: dict[str, int] = {name: class_id for class_id, name in CLASS_NAMES.items()}
# The ScanNet-20 benchmark classes as NYU40 ids, in benchmark order (index = segment20 label).
SCANNET20_NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)


def scannet20_index(semantic: np.ndarray) -> np.ndarray:
    """NYU40 ids → ScanNet-20 benchmark index (0..19), -1 for classes outside the benchmark (and 0)."""
    lookup = np.full(max(max(CLASS_NAMES), max(SCANNET20_NYU40_IDS)) + 2, -1, dtype=np.int32)
    lookup[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS), dtype=np.int32)
    semantic = np.asarray(semantic)
    return np.where(semantic < len(lookup), lookup[np.clip(semantic, 0, len(lookup) - 1)], -1).astype(
        np.int32
    )
