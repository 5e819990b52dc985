"""Checkpoints written atomically, and found again.

A checkpoint is first written to a temporary file in the destination folder, flushed and fsynced, then
renamed over the destination with `os.replace` (atomic on POSIX and Windows). A run killed mid-write leaves
at most a stray `.tmp` file; the previous checkpoint is untouched. `last.ckpt` is a hard link (or, where
links are unsupported, a copy) swapped in the same way.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.utilities.cloud_io import _load as lightning_load
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gs3.errors import GS3Error

LAST_NAME = "last.ckpt"
STEP_PATTERN = re.compile(r"^step-(\d{8})\.ckpt$")
TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    # Persist the rename itself; not possible (nor needed) on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_checkpoint_file(obj: Any, file: io.BufferedWriter) -> None:
    torch.save(obj, file)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask  # what open() would have given; mkstemp creates files 0600


def _atomic_write(path: str | os.PathLike, mode: str, write: Callable[[IO], None]) -> None:
    """Write `path` atomically: temp file in the same folder + fsync + os.replace (+ fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, _default_mode())
        with os.fdopen(fd, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically."""
    _atomic_write(path, "wb", lambda file: _write_checkpoint_file(obj, file))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    _atomic_write(path, "w", lambda file: file.write(text))


def atomic_link(source: Path, destination: Path) -> None:
    """Make `destination` name the same file as `source`, replacing it atomically."""
    tmp = destination.with_name(f".{destination.name}.link{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, destination)
    _fsync_dir(destination.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic writes (what `trainer.save_checkpoint` goes through)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)


def step_checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.ckpt"


def step_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), folder / m.group(0)) for p in folder.iterdir() if (m := STEP_PATTERN.match(p.name))
    ]
    return sorted(found)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete `.tmp` files left by a run killed mid-write (call on the main process before training)."""
    folder = Path(folder)
    stale = [p for p in folder.glob(f".*{TMP_SUFFIX}")] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    folder = Path(folder)
    if (folder / LAST_NAME).is_file():
        return folder / LAST_NAME
    steps = step_checkpoints(folder)
    return steps[-1][1] if steps else None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a gs3 checkpoint on the CPU; one-line GS3Error when missing or not a gs3 checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise GS3Error(f"{path}: checkpoint not found")
    try:
        checkpoint = lightning_load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:
        raise GS3Error(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or "gs3" not in checkpoint or "state_dict" not in checkpoint:
        raise GS3Error(f"{path}: not a gs3 pre-training checkpoint (no 'gs3' / 'state_dict' entries)")
    return checkpoint
