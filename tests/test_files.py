"""Files gs3 writes for users: atomic, and with the permissions the umask gives a plain `open()`
(0o666 & ~umask for files, 0o777 & ~umask for folders), under several umasks — gs3.files and its users."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from gs3 import files
from gs3.data.exported import write_frame, write_intrinsics
from gs3.data.sens import export_sens
from gs3.data.views import PAIR_LIST_FORMAT, read_pair_list, write_pair_list
from gs3.gaussians import Gaussians, load_ply, save_ply
from gs3.train import checkpoint as ckpt


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_modes(root: Path, umask: int) -> int:
    """Every file and folder under root (root included when a folder) has the umask's permissions."""
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode(path) == expected, f"{path}: {oct(mode(path))} != {oct(expected)}"
    return len(paths)


def no_temporaries(folder: Path) -> bool:
    return not list(folder.rglob(f"*{files.TMP_SUFFIX}"))


def test_atomic_writers_give_the_umask_permissions(tmp_path, umask):
    files.atomic_write_bytes(b"\x00\x01", tmp_path / "a.bin")
    files.atomic_write_text("x\ny\n", tmp_path / "sub" / "b.txt")
    files.atomic_write(tmp_path / "c.bin", lambda file: file.write(b"abc"), sync=False)
    ckpt.atomic_torch_save({"x": torch.arange(3)}, tmp_path / "d.ckpt")
    ckpt.atomic_write_text("text", tmp_path / "e.txt")  # the name other modules import from checkpoint
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_bytes() == b"x\ny\n"
    assert torch.equal(torch.load(tmp_path / "d.ckpt")["x"], torch.arange(3))
    assert assert_modes(tmp_path / "a.bin", umask) == 1
    for name in ("sub/b.txt", "c.bin", "d.ckpt", "e.txt"):
        assert_modes(tmp_path / name, umask)
    assert no_temporaries(tmp_path)


def test_replacing_keeps_the_umask_not_the_old_mode(tmp_path, umask):
    path = tmp_path / "a.txt"
    path.write_text("old")
    path.chmod(0o600)
    files.atomic_write_text("new", path)
    assert path.read_text() == "new" and mode(path) == 0o666 & ~umask


def test_link_and_its_copy_fallback(tmp_path, umask, monkeypatch):
    source = tmp_path / "step.ckpt"
    ckpt.atomic_torch_save({"s": 1}, source)
    ckpt.atomic_link(source, tmp_path / "last.ckpt")
    assert os.path.samefile(source, tmp_path / "last.ckpt")

    def no_links(*args):
        raise OSError("links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    ckpt.atomic_link(source, tmp_path / "copy.ckpt")
    assert not os.path.samefile(source, tmp_path / "copy.ckpt")
    assert (tmp_path / "copy.ckpt").read_bytes() == source.read_bytes()
    for name in ("step.ckpt", "last.ckpt", "copy.ckpt"):
        assert_modes(tmp_path / name, umask)
    assert no_temporaries(tmp_path)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    files.atomic_write_text("before", path)

    def broken(file):
        file.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(path, broken)
    assert path.read_text() == "before"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temporary_folder(tmp_path, umask):
    folder = files.make_temporary_dir(tmp_path / "cache", prefix=".scenes.")
    assert folder.parent == tmp_path / "cache" and folder.name.startswith(".scenes.")
    assert not any(folder.iterdir())
    assert mode(folder) == 0o777 & ~umask  # tempfile.mkdtemp would give 0700
    assert files.make_temporary_dir(tmp_path / "cache", prefix=".scenes.") != folder


def test_ply(tmp_path, umask):
    n = 5
    gaussians = Gaussians(
        means=torch.randn(n, 3),
        scales=torch.rand(n, 3) + 0.1,
        quats=torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
        opacities=torch.rand(n) * 0.8 + 0.1,
        sh=torch.randn(n, 4, 3),
    )
    save_ply(gaussians, tmp_path / "out" / "gaussians.ply")
    assert_modes(tmp_path / "out", umask)
    loaded = load_ply(tmp_path / "out" / "gaussians.ply")
    torch.testing.assert_close(loaded.means, gaussians.means)
    assert no_temporaries(tmp_path)


def test_scene_export_and_pair_list(tmp_path, umask):
    from test_data_scenes import write_sens  # an independent .sens writer

    depth = np.full((6, 8), 1500, np.uint16)
    color = np.zeros((6, 8, 3), np.uint8)
    write_sens(tmp_path / "s.sens", [np.eye(4)] * 3, [depth] * 3, [color] * 3)
    export_sens(tmp_path / "s.sens", tmp_path / "exported", progress=False)
    assert assert_modes(tmp_path / "exported", umask) == 1 + 4 + 4 + 3 * 3  # folders, intrinsics, frames
    write_intrinsics(tmp_path / "written", np.eye(3))
    write_frame(tmp_path / "written", 0, color, depth, np.eye(4), color_format="png")
    assert_modes(tmp_path / "written", umask)
    pair_list = {"format": PAIR_LIST_FORMAT, "samples": [{"path": "written", "frames": [0, 0]}]}
    write_pair_list(tmp_path / "lists" / "pairs.json", pair_list)
    assert json.loads((tmp_path / "lists" / "pairs.json").read_text()) == pair_list
    assert [s.frames for s in read_pair_list(tmp_path / "lists" / "pairs.json")] == [(0, 0)]
    assert_modes(tmp_path / "lists" / "pairs.json", umask)
    assert no_temporaries(tmp_path)


def test_synthetic_scenes(tmp_path, umask):
    from gs3.data.synthetic import write_dataset

    write_dataset(tmp_path / "synthetic", 1, num_frames=1, width=16, height=12, point_density=20.0)
    assert assert_modes(tmp_path / "synthetic", umask) == 1 + 1 + 1 + 6 + 4 + 5 + 2  # folders and files
    assert no_temporaries(tmp_path)
