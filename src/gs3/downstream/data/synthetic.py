"""gs3's synthetic rooms as labelled data: generated once into a cache folder, read as labelled point clouds
(``points.npz``: points sampled on the visible surfaces) or as labelled frames (``label/<i>.png``).

The rooms come from gs3.data.synthetic with ``synthetic_seed`` (default 100, not the pre-training demo's
seed 0, so fine-tuning rooms are held out from pre-training); "train" / "val" are all rooms but / only the
last ``synthetic_val_scenes``. A user may point ``root`` at rooms written by `gs3 data synthetic` instead.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from gs3.data.labels import NYU40_MAX
from gs3.downstream.data.classes import ClassSet
from gs3.downstream.data.config import DownstreamDataConfig
from gs3.downstream.data.samples import LabelledPoints
from gs3.errors import DataError

CLOUD_FILE = "points.npz"
CLOUD_KEYS = ("coord", "color", "normal", "semantic", "instance")


def synthetic_root(config: DownstreamDataConfig) -> Path:
    """Where the rooms of this config live: ``root`` when given, else a cache folder named by its settings."""
    if config.root:
        return Path(config.root).expanduser()
    width, height = config.image_size if len(config.image_size) == 2 else (320, 240)
    name = (
        f"seed{config.synthetic_seed}_{config.synthetic_scenes}x{config.synthetic_frames}_{width}x{height}"
        f"_density{config.synthetic_point_density:g}"
    )
    return Path(config.cache_dir).expanduser() / name


def prepare_synthetic(config: DownstreamDataConfig) -> Path:
    """Generate the rooms once (gs3.data.synthetic.write_dataset_once), then reuse them."""
    from gs3.data.synthetic import write_dataset_once

    root = synthetic_root(config)
    if config.root:
        return root
    width, height = config.image_size if len(config.image_size) == 2 else (320, 240)
    return write_dataset_once(
        root,
        config.synthetic_scenes,
        what="labelled synthetic rooms",
        num_frames=config.synthetic_frames,
        seed=config.synthetic_seed,
        width=width,
        height=height,
        point_density=config.synthetic_point_density,
    )


def synthetic_split(root: Path, split: str, val_scenes: int) -> list[str]:
    """Room names of the "train" / "val" split of a generated dataset (scenes.txt order)."""
    listing = root / "scenes.txt"
    if listing.is_file():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    else:
        names = sorted(p.name for p in root.iterdir() if (p / "color").is_dir()) if root.is_dir() else []
    if len(names) <= val_scenes:
        raise DataError(
            f"{root}: {len(names)} synthetic rooms, need more than synthetic_val_scenes={val_scenes}"
        )
    return names[-val_scenes:] if split == "val" else names[:-val_scenes]


def read_synthetic_cloud(scene_dir: str | Path, classes: ClassSet) -> LabelledPoints:
    """A room's labelled point cloud (points.npz: coord, color uint8, normal, semantic NYU40, instance)."""
    path = Path(scene_dir) / CLOUD_FILE
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in CLOUD_KEYS if key not in archive]
            if missing:
                raise DataError(f"{path}: arrays {missing} missing")
            arrays = {key: archive[key] for key in CLOUD_KEYS}
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing (rooms written without a point cloud?)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: unreadable ({error})") from None
    semantic = arrays["semantic"].astype(np.int64)
    if semantic.size and (semantic.min() < 0 or semantic.max() > NYU40_MAX):
        raise DataError(f"{path}: semantic label out of range (NYU40 ids are 0..{NYU40_MAX})")
    count = len(arrays["coord"])
    if any(len(arrays[key]) != count for key in CLOUD_KEYS):
        raise DataError(f"{path}: arrays of different lengths {[len(arrays[k]) for k in CLOUD_KEYS]}")
    return LabelledPoints.from_numpy(
        Path(scene_dir).name,
        arrays["coord"],
        arrays["color"].astype(np.float32) / 255.0,
        classes.from_nyu40(semantic),
        normal=arrays["normal"],
        instance=arrays["instance"],
    )
