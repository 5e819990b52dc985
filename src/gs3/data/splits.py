"""Opening scenes, finding them under a dataset root, and ScanNet v2's official splits.

The split lists (1201 train / 312 val / 100 test scene names) ship with the package in ``gs3/splits``,
named ``train`` / ``val`` / ``test`` or by their file names ``scannetv2_train`` etc. Any other split is a
text file with one scene name per line (``#`` starts a comment line), except ``all``: every scene under
the root, in whichever layout (one's own scenes need no split file; a file named ``all`` is given as
``./all``). A dataset root may hold, in any mix:
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
ALL_SCENES = "all"  # the split of every scene under the root


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


def is_all_scenes(split: str | Path | None) -> bool:
    """Whether `split` selects every scene under the root (None or 'all')."""
    return split is None or (isinstance(split, str) and split == ALL_SCENES)


def _packaged_split(name: str) -> str | None:
    """The shipped list of an official split: 'train' or its file name 'scannetv2_train', etc."""
    for split in SPLITS:
        if name in (split, f"scannetv2_{split}"):
            return resources.files("gs3").joinpath("splits", f"scannetv2_{split}.txt").read_text()
    return None


def split_scene_names(split: str | Path) -> list[str]:
    """Scene names of an official split ('train', 'val', 'test', or 'scannetv2_train', ...) or of a text file
    with one name per line. 'all' has no fixed names (it depends on the root): see `list_scenes`."""
    if is_all_scenes(split):
        raise DataError(f"split {ALL_SCENES!r} is every scene under a dataset root, not a list of names")
    text = _packaged_split(str(split))
    if text is None:
        path = Path(split)
        if not path.is_file():
            raise DataError(
                f"split {str(split)!r}: neither {ALL_SCENES!r}, one of {SPLITS} (or scannetv2_<split>), "
                "nor an existing file"
            )
        text = path.read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def scene_path_in(root: Path, name: str) -> Path | None:
    """Where scene ``name`` lives under ``root`` (any supported layout), or None."""
    for candidate in (root / name / "color", root / name / f"{name}.sens", root / f"{name}.sens"):
        if candidate.exists():
            return candidate.parent if candidate.name == "color" else candidate
    return None


def list_scenes(root: str | Path, split: str | Path | None = None) -> list[Path]:
    """Scene paths under ``root`` sorted by name: every scene (split None or 'all'), or only those of a split
    in the split's order (absent ones are left out; see `missing_scenes`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a directory")
    if not is_all_scenes(split):
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


def report_missing_scenes(key: str, root: str | Path, missing: list[str], total: int) -> None:
    """One line when some of a split's scenes are absent: a run on a partial download should say so."""
    if missing:
        print(
            f"gs3: {key}: {len(missing)} of {total} scenes not under {root}, left out (e.g. {missing[0]})",
            flush=True,
        )


def missing_scenes(root: str | Path, split: str | Path) -> list[str]:
    """Names of a split's scenes not found under ``root`` (none for 'all')."""
    if is_all_scenes(split):
        return []
    return [name for name in split_scene_names(split) if scene_path_in(Path(root), name) is None]
