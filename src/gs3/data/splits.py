"""Opening scenes, finding them under a dataset root, and ScanNet v2's official splits.

The split lists (1201 train / 312 val / 100 test scene names) ship with the package in ``gs3/splits``.
A dataset root may hold, in any mix:
    ROOT/<scene>/color/…           exported layout (also the synthetic scenes)
    ROOT/<scene>/<scene>.sens      ScanNet's raw download layout (ROOT = …/scans)
    ROOT/<scene>.sens              bare .sens files
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from gs3.data.exported import ExportedScene
from gs3.data.scene import Scene
from gs3.data.sens import SensScene
from gs3.errors import DataError

SPLITS = ("train", "val", "test")


def open_scene(path: str | Path, labels: bool = True, label_map: str | Path | None = None) -> Scene:
    """A ScanNet exported folder, a .sens file, or a folder holding <name>.sens → a Scene.

    Exported folders with a label folder give labelled frames (``labels=False`` skips them; ``label_map``:
    see gs3.data.labels); .sens files carry no labels."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".sens":
            raise DataError(f"{path}: not a scene (expected a .sens file or an exported scene folder)")
        return SensScene(path)
    if not path.exists():
        raise DataError(f"{path}: scene does not exist")
    if (path / "color").is_dir():
        return ExportedScene(path, labels=labels, label_map=label_map)
    if (path / f"{path.name}.sens").is_file():
        return SensScene(path / f"{path.name}.sens")
    if not any(path.iterdir()):
        raise DataError(f"{path}: empty folder, not a scene")
    raise DataError(f"{path}: not a scene (no color/ folder and no {path.name}.sens)")


def split_scene_names(split: str | Path) -> list[str]:
    """Scene names of an official split ('train', 'val', 'test') or of a text file with one name per line."""
    if str(split) in SPLITS:
        text = resources.files("gs3").joinpath("splits", f"scannetv2_{split}.txt").read_text()
    else:
        path = Path(split)
        if not path.is_file():
            raise DataError(f"split {split!r}: neither one of {SPLITS} nor an existing file")
        text = path.read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def scene_path_in(root: Path, name: str) -> Path | None:
    """Where scene ``name`` lives under ``root`` (any supported layout), or None."""
    for candidate in (root / name / "color", root / name / f"{name}.sens", root / f"{name}.sens"):
        if candidate.exists():
            return candidate.parent if candidate.name == "color" else candidate
    return None


def list_scenes(root: str | Path, split: str | Path | None = None) -> list[Path]:
    """Scene paths under ``root`` sorted by name, optionally only those of a split (absent ones are left out;
    see `missing_scenes`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a directory")
    if split is not None:
        found = (scene_path_in(root, name) for name in split_scene_names(split))
        return [path for path in found if path is not None]
    scenes = {}
    for entry in root.iterdir():
        if entry.is_file() and entry.suffix == ".sens":
            scenes.setdefault(entry.stem, entry)
        elif entry.is_dir():
            path = scene_path_in(root, entry.name)
            if path is not None:
                scenes[entry.name] = path
    return [scenes[name] for name in sorted(scenes)]


def missing_scenes(root: str | Path, split: str | Path) -> list[str]:
    """Names of a split's scenes not found under ``root``."""
    return [name for name in split_scene_names(split) if scene_path_in(Path(root), name) is None]
