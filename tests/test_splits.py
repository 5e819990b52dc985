"""Splits of pre-training: 'all' (every scene under the root, exported layout and .sens), the official
lists by either name, one-line errors naming the key — gs3.data.splits and gs3.train.data.scene_paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gs3.config import load_config
from gs3.data.splits import list_scenes, missing_scenes, split_scene_names
from gs3.errors import ConfigError, DataError
from gs3.train.data import build_dataset, scene_paths

# an exported-scene writer and an independent .sens writer
from test_data_scenes import small_scene, write_sens  # isort: skip


def sens(path: Path, frames: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    depth = np.full((6, 8), 2000, np.uint16)
    write_sens(path, [np.eye(4)] * frames, [depth] * frames, [np.zeros((6, 8, 3), np.uint8)] * frames)


@pytest.fixture
def root(tmp_path) -> Path:
    """Own scenes with no split file: two exported folders, a ScanNet download folder, a bare .sens, and
    things that are not scenes."""
    small_scene(tmp_path, name="kitchen")
    small_scene(tmp_path, name="scene0000_00")  # in ScanNet's official train list
    sens(tmp_path / "office" / "office.sens")
    sens(tmp_path / "lab.sens")
    (tmp_path / "notes").mkdir()
    (tmp_path / "readme.txt").write_text("not a scene")
    return tmp_path


def config(root: Path, *overrides: str):
    return load_config("gs3_rgbd_spunet", [f"data.root={root}", *overrides])


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_all_is_every_scene_under_the_root(root):
    expected = ["kitchen", "lab.sens", "office.sens", "scene0000_00"]
    assert [p.name for p in list_scenes(root, "all")] == expected
    assert list_scenes(root, "all") == list_scenes(root)
    assert missing_scenes(root, "all") == []
    train = scene_paths(config(root, "data.train_split=all"), "train")
    assert [p.name for p in train] == expected
    val = scene_paths(config(root, "data.train_split=all", "data.val_split=all"), "val")
    assert val == train


def test_all_builds_a_dataset_of_exported_scenes_and_sens_files(root):
    dataset = build_dataset(config(root, "data.train_split=all", "data.width=8", "data.height=6"), "train")
    assert sorted(Path(p).name for p in dataset.scenes) == [
        "kitchen",
        "lab.sens",
        "office.sens",
        "scene0000_00",
    ]
    sample = dataset[0]  # real frames are read from whichever layout
    assert sample is not None


def test_official_lists_by_either_name(root):
    assert split_scene_names("scannetv2_train") == split_scene_names("train")
    assert len(split_scene_names("scannetv2_val")) == 312
    # the packaged configs' default: ScanNet's official training scenes present under the root
    assert [p.name for p in scene_paths(config(root), "train")] == ["scene0000_00"]


def test_no_scenes_under_the_root_is_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as error:
        scene_paths(config(tmp_path / "empty", "data.train_split=all"), "train")
    assert "data.root" in one_line(error) and "no scenes there" in one_line(error)
    with pytest.raises(DataError) as error:
        scene_paths(config(tmp_path / "missing", "data.train_split=all"), "train")
    assert "data.root" in one_line(error) and "not a folder" in one_line(error)


def test_bad_split_values_name_the_key(root):
    with pytest.raises(DataError) as error:
        scene_paths(config(root, "data.train_split=no_such_list"), "train")
    assert one_line(error).startswith("data.train_split: split 'no_such_list'")
    with pytest.raises(DataError) as error:
        scene_paths(config(root, "data.train_split=scannetv2_val"), "train")  # none of them present
    assert "data.train_split=scannetv2_val" in one_line(error)
    with pytest.raises(ConfigError) as error:
        config(root, "data.val_split=")
    assert "data.val_split" in one_line(error)
    with pytest.raises(DataError, match="every scene under a dataset root"):
        split_scene_names("all")


def test_a_list_file_named_all_is_reachable_as_a_path(root, monkeypatch):
    monkeypatch.chdir(root)
    (root / "all").write_text("kitchen\n# a comment\nlab\n")
    assert [p.name for p in list_scenes(root, "./all")] == ["kitchen", "lab.sens"]
    assert len(list_scenes(root, "all")) == 4


def test_scenes_of_a_split_missing_under_the_root_are_reported_in_one_line(root, capsys):
    (root / "mine.txt").write_text("kitchen\nlab\nscene0999_00\nscene0998_00\n")
    train = scene_paths(config(root, f"data.train_split={root / 'mine.txt'}"), "train")
    assert [p.name for p in train] == ["kitchen", "lab.sens"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "2 of 4 scenes not under" in lines[0] and "scene0999_00" in lines[0]
    scene_paths(config(root, "data.train_split=all"), "train")
    assert capsys.readouterr().out == ""
