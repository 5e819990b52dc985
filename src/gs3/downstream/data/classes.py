"""Semantic class sets and the one ignore index.

* ``IGNORE_INDEX = -1`` everywhere (Pointcept's value): unlabelled points/pixels, classes outside the
  benchmark, and labels hidden by the limited-annotation protocol.
* ``SCANNET20``: ScanNet's 20 benchmark classes, its VALID_CLASS_IDS (NYU40 ids 1, 2, 3, 4, 5, 6, 7, 8, 9,
  10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39) in that order → indices 0..19 (Pointcept's `segment20`);
  every other NYU40 id (0 = unlabelled included) → -1.
* ``S3DIS13``: S3DIS's 13 classes as Pointcept's preprocessing stores them in `segment.npy` (ceiling 0 …
  clutter 12; 'stairs' is folded into clutter there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gs3.data.labels import NYU40_MAX
from gs3.errors import ConfigError

IGNORE_INDEX = -1

# NYU40 class names by id (0 = unlabelled), as in ScanNet's label tables.
NYU40_NAMES: tuple[str, ...] = (
    "unlabelled", "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub",
    "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip


@dataclass(frozen=True)
class ClassSet:
    """A label set: ``names[i]`` is class index i. ``nyu40_ids[i]`` is the NYU40 id of class i for sets
    defined on NYU40 (ScanNet's), None for sets that are not (S3DIS)."""

    name: str
    names: tuple[str, ...]
    nyu40_ids: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def nyu40_lookup(self) -> np.ndarray:
        """int64 table ``index[nyu40_id]`` for ids 0..40 (-1 outside the set)."""
        if self.nyu40_ids is None:
            raise ConfigError(f"classes '{self.name}' are not defined on NYU40 ids (use scannet20)")
        lookup = np.full(NYU40_MAX + 1, IGNORE_INDEX, dtype=np.int64)
        lookup[list(self.nyu40_ids)] = np.arange(len(self.nyu40_ids))
        return lookup

    def from_nyu40(self, nyu40: np.ndarray) -> np.ndarray:
        """NYU40 ids (already checked to be 0..40) → class indices (int64), -1 outside the set."""
        return self.nyu40_lookup()[np.asarray(nyu40, dtype=np.int64)]


SCANNET20 = ClassSet(
    "scannet20",
    (
        "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
        "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
        "bathtub", "otherfurniture",
    ),
    (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39),
)  # fmt: skip

S3DIS13 = ClassSet(
    "s3dis13",
    (
        "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
        "bookcase", "board", "clutter",
    ),
)  # fmt: skip

CLASS_SETS: dict[str, ClassSet] = {SCANNET20.name: SCANNET20, S3DIS13.name: S3DIS13}


def class_set(name: str) -> ClassSet:
    """The class set called ``name`` ("scannet20" | "s3dis13"); ConfigError otherwise."""
    if name not in CLASS_SETS:
        raise ConfigError(f"data.classes: '{name}' is not one of {', '.join(CLASS_SETS)}")
    return CLASS_SETS[name]
