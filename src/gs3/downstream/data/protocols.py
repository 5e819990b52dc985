"""Data-efficient protocols (the ScanNet data-efficient benchmark's, as Pointcept runs them), seeded.

* Limited scenes (Pointcept's ``lr_file``): train on a subset of the training scenes. A fraction f picks
  max(1, round(f · n)) scenes uniformly without replacement with ``numpy.random.default_rng([seed,
  SCENES_STREAM])`` over the sorted names, so the subset depends on (seed, the set of names) only; a list
  (or a file with one name per line) names them, and every listed name must be a training scene.
* Limited annotations (Pointcept's ``la_file``): only N points per scene keep their label, every other
  point's label becomes IGNORE_INDEX. The benchmark's point lists were drawn uniformly at random over all
  points of each scene (Contrastive Scene Contexts' sampling_points.py, method "random", with replacement),
  so a listed point may be unlabelled. Here: N distinct points uniformly over all points, drawn once per
  scene from ``default_rng([seed, POINTS_STREAM, crc32(name)])``: the annotation is fixed for the whole run
  (it is the dataset, not an augmentation) and independent of the scene's position in the list. As in
  Pointcept, the labelled points are kept through random dropout and grid sampling. Pointcept's own
  ``la_file`` (the benchmark's lists) can be read instead with `read_labelled_points_file`.
  For images: N pixels per image, drawn the same way over the image's pixels at the read resolution.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gs3.downstream.data.classes import IGNORE_INDEX
from gs3.errors import ConfigError, DataError

SCENES_STREAM = 0x5CE5E
POINTS_STREAM = 0x1ABE1


def read_name_list(path: str | Path, key: str) -> list[str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.{key}: '{path}' is not a file (expected one scene name per line)")
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def limit_scenes(names: list[str], limited: Any, seed: int) -> list[str]:
    """The training scenes kept by ``data.limited_scenes`` (None keeps all), in their original order."""
    if limited is None:
        return list(names)
    if isinstance(limited, (int, float)) and not isinstance(limited, bool):
        if not 0 < limited <= 1:
            raise ConfigError(f"data.limited_scenes: fraction {limited} outside (0, 1]")
        count = max(1, round(limited * len(names)))
        rng = np.random.default_rng([int(seed), SCENES_STREAM])
        chosen = set(rng.choice(sorted(names), size=count, replace=False).tolist())
    else:
        listed = read_name_list(limited, "limited_scenes") if isinstance(limited, str) else list(limited)
        unknown = sorted(set(map(str, listed)) - set(names))
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise DataError(f"data.limited_scenes: {len(unknown)} names are not training scenes: {shown}")
        chosen = set(map(str, listed))
    return [name for name in names if name in chosen]


def labelled_subset(name: str, total: int, count: int, seed: int) -> np.ndarray:
    """Sorted indices of the ``count`` points (of ``total``) of sample ``name`` that keep their labels."""
    rng = np.random.default_rng([int(seed), POINTS_STREAM, zlib.crc32(name.encode())])
    return np.sort(rng.choice(total, size=min(count, total), replace=False))


def keep_labels(segment: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """A copy of ``segment`` (any shape; indices into its flattened form) with all labels but ``keep``'s
    set to IGNORE_INDEX."""
    flat = torch.full((segment.numel(),), IGNORE_INDEX, dtype=segment.dtype)
    index = torch.from_numpy(np.asarray(keep, dtype=np.int64))
    flat[index] = segment.reshape(-1)[index]
    return flat.reshape(segment.shape)


def read_labelled_points_file(path: str | Path) -> dict[str, np.ndarray]:
    """The ScanNet data-efficient benchmark's point lists as Pointcept loads them (``torch.load`` of a dict
    scene name → point indices). The file is the user's own: it is unpickled (numpy arrays need it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.labelled_points_file: '{path}' is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a pickle can fail in many ways; any of them means the file is unusable
        raise DataError(
            f"{path}: cannot load the labelled-point lists ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a dict scene name → point indices, got {type(loaded).__name__}")
    lists = {}
    for name, indices in loaded.items():
        array = np.asarray(indices.numpy() if isinstance(indices, torch.Tensor) else indices).reshape(-1)
        if not np.issubdtype(array.dtype, np.integer) or (array.size and array.min() < 0):
            raise DataError(f"{path}: the entry for {name!r} is not a list of point indices")
        lists[str(name)] = array.astype(np.int64)
    return lists
