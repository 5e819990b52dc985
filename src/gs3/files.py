"""Files gs3 writes for a user: atomic, and with the permissions a plain `open()` would give.

A file is written to a temporary name in its destination folder, then renamed over the destination with
`os.replace` (atomic on POSIX and Windows), so a reader never sees half a file and a process killed mid-write
leaves at most a stray `.<name>.<random>.tmp`. The temporary file is created by `os.open(..., 0o666)` and a
temporary folder by `os.mkdir(..., 0o777)`, so the kernel applies the umask (and a folder's default ACL)
exactly as for any other new file: `tempfile.mkstemp` / `mkdtemp` would create them 0600 / 0700, which
colleagues on a shared machine cannot read. Reading the umask with `os.umask` is avoided on purpose: it
briefly sets the umask of the whole process, a race with other threads creating files.

`sync=True` (the default) also fsyncs the file before the rename and the folder after it, so the new file
survives a power loss too. Bulk writers of many small files (scene frames) pass `sync=False`: still atomic
against a killed process, and an export cut by a power loss is simply run again.

This module sits at the bottom of gs3's dependency order (standard library only), so every layer can use it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"
_TRIES = 100


def fsync_dir(folder: str | os.PathLike) -> None:
    """Persist the entries of `folder` (a rename in it); not possible (nor needed) on every platform."""
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


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def _create_temporary_file(path: Path) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TRIES):
        tmp = _temporary_name(path)
        try:
            return os.open(tmp, flags, 0o666), tmp  # the umask applies, as for open(path, "w")
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], sync: bool = True) -> None:
    """Call `write(file)` on a binary file that becomes `path` atomically once `write` returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary_file(path)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def atomic_write_bytes(data: bytes, path: str | os.PathLike, sync: bool = True) -> None:
    atomic_write(path, lambda file: file.write(data), sync=sync)


def atomic_write_text(text: str, path: str | os.PathLike, sync: bool = True) -> None:
    """UTF-8 text, newlines as given (no platform translation)."""
    atomic_write_bytes(text.encode("utf-8"), path, sync=sync)


def atomic_link(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Make `destination` name the same file as `source` (a hard link, or a copy where links are not
    supported), replacing it atomically."""
    source, destination = Path(source), Path(destination)
    tmp = _temporary_name(destination)
    try:
        os.link(source, tmp)
    except OSError:
        atomic_write(destination, lambda file: _copy_into(source, file))
        return
    try:
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(destination.parent)


def _copy_into(source: Path, file: BinaryIO) -> None:
    with open(source, "rb") as handle:
        shutil.copyfileobj(handle, file)


def make_temporary_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder `parent/<prefix><random>` with the umask's permissions (`tempfile.mkdtemp`
    makes it 0700), to be filled and then renamed into place."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_TRIES):
        folder = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            folder.mkdir(mode=0o777)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: no free temporary folder name for {prefix}")
