"""Checkpoints written atomically, and found again.

A checkpoint is written through `gs3.files.atomic_write`: a temporary file in the destination folder,
flushed and fsynced, renamed over the destination with `os.replace`, with the umask's permissions. A run
killed mid-write leaves at most a stray `.tmp` file; the previous checkpoint is untouched. `last.ckpt` is a
hard link (or, where links are unsupported, a copy) swapped in the same way.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _load as lightning_load
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gs3.errors import GS3Error
from gs3.files import TMP_SUFFIX, atomic_link, atomic_write, atomic_write_text

__all__ = [
    "LAST_NAME",
    "STEP_PATTERN",
    "TMP_SUFFIX",
    "AtomicCheckpointIO",
    "atomic_link",
    "atomic_torch_save",
    "atomic_write_text",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
    "step_checkpoint_name",
    "step_checkpoints",
]

LAST_NAME = "last.ckpt"
STEP_PATTERN = re.compile(r"^step-(\d{8})\.ckpt$")


def _write_checkpoint_file(obj: Any, file: io.BufferedWriter) -> None:
    torch.save(obj, file)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically."""
    atomic_write(path, lambda file: _write_checkpoint_file(obj, file))


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
