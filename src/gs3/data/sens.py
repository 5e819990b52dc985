"""ScanNet SensorData (``.sens``, version 4) reader with random access, and export to the exported layout.

Layout (little-endian): uint32 version = 4; uint64 name length + name; four float32 4×4 matrices
(intrinsic_color, extrinsic_color, intrinsic_depth, extrinsic_depth); int32 colour compression (0 raw RGB,
1 PNG, 2 JPEG); int32 depth compression (0 raw uint16, 1 zlib of uint16); uint32 colour width, height, depth
width, height; float32 depth shift (units per metre); uint64 frame count; then per frame a float32 4×4
camera-to-world pose, uint64 colour and depth timestamps, uint64 colour and depth byte counts and the bytes.
IMU records after the frames are ignored.

Opening a file reads the header and walks the frame records once, seeking over the image bytes, to index
every frame's offsets and pose; ``frame(i)`` then reads only that frame. Reads use ``os.pread`` (no shared
file position). Handles come from a per-process pool of at most ``MAX_OPEN_FILES`` (least recently used
closed first): a dataset of all 1513 ScanNet scans would otherwise hold a handle per scene and run into the
usual limit of 1024 open files. A forked DataLoader worker starts its own pool.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gs3.data.exported import (
    INVALID_DEPTH_RAW,
    matrix_text,
    raw_depth_to_metres,
    write_atomic,
    write_frame,
)
from gs3.data.scene import Frame, as_frame
from gs3.data.transforms import decode_color, resize_color_array, resize_depth, scale_K
from gs3.data.validation import InvalidFrameError, check_pose
from gs3.errors import DataError

COLOR_COMPRESSION = {0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {0: "raw_ushort", 1: "zlib_ushort"}
FRAME_RECORD = struct.Struct("<16f4Q")  # pose, colour/depth timestamps, colour/depth byte counts
MAX_OPEN_FILES = 64


class _HandlePool:
    """Read-only file descriptors by path, at most `limit` open, least recently used closed first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._fds: OrderedDict[Path, int] = OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def fd(self, path: Path) -> int:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its copies of the parent's handles are its own
                self._close_all()
                self._pid = os.getpid()
            if path in self._fds:
                self._fds.move_to_end(path)
                return self._fds[path]
            while len(self._fds) >= self.limit:
                os.close(self._fds.popitem(last=False)[1])
            self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def close(self, path: Path) -> None:
        with self._lock:
            if self._pid == os.getpid() and path in self._fds:
                os.close(self._fds.pop(path))

    def _close_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __len__(self) -> int:
        return len(self._fds)


_HANDLES = _HandlePool(MAX_OPEN_FILES)


@dataclass(frozen=True)
class SensHeader:
    version: int
    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: int
    depth_compression: int
    color_size: tuple[int, int]
    depth_size: tuple[int, int]
    depth_shift: float
    num_frames: int


class SensScene:
    """Random access to the frames of one ``.sens`` file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        if not self.path.is_file():
            raise DataError(f"{self.path}: .sens file is missing")
        try:
            self.header, first_frame_offset = self._read_header()
            self._index_frames(first_frame_offset)
        finally:
            self.close()

    # -- file access ---------------------------------------------------------------------------------------
    def _read(self, offset: int, size: int) -> bytes:
        data = os.pread(_HANDLES.fd(self.path), size, offset)
        if len(data) != size:
            raise DataError(f"{self.path}: truncated file (wanted {size} bytes at offset {offset})")
        return data

    def close(self) -> None:
        """Release this file's handle (it is reopened by the next read)."""
        _HANDLES.close(self.path)

    def _read_header(self) -> tuple[SensHeader, int]:
        (version,) = struct.unpack("<I", self._read(0, 4))
        if version != 4:
            raise DataError(f"{self.path}: unsupported .sens version {version} (expected 4)")
        (name_length,) = struct.unpack("<Q", self._read(4, 8))
        if name_length > 1 << 16:
            raise DataError(f"{self.path}: corrupt header (sensor name length {name_length})")
        offset = 12
        name = self._read(offset, name_length).decode("utf-8", errors="replace")
        offset += name_length
        matrices = np.frombuffer(self._read(offset, 4 * 64), dtype="<f4").reshape(4, 4, 4).astype(np.float64)
        offset += 4 * 64
        color_compression, depth_compression, cw, ch, dw, dh, shift, count = struct.unpack(
            "<ii4IfQ", self._read(offset, 36)
        )
        offset += 36
        if color_compression not in COLOR_COMPRESSION:
            raise DataError(f"{self.path}: unsupported colour compression {color_compression}")
        if depth_compression not in DEPTH_COMPRESSION:
            raise DataError(f"{self.path}: unsupported depth compression {depth_compression}")
        if not shift > 0:
            raise DataError(f"{self.path}: invalid depth shift {shift}")
        header = SensHeader(
            version, name, matrices[0], matrices[1], matrices[2], matrices[3],
            color_compression, depth_compression, (cw, ch), (dw, dh), float(shift), count,
        )  # fmt: skip
        return header, offset

    def _index_frames(self, offset: int) -> None:
        """One pass over the frame records: offsets of colour/depth bytes and the poses."""
        count = self.header.num_frames
        file_size = self.path.stat().st_size
        self._color_offsets = np.empty(count, dtype=np.int64)
        self._color_sizes = np.empty(count, dtype=np.int64)
        self._depth_offsets = np.empty(count, dtype=np.int64)
        self._depth_sizes = np.empty(count, dtype=np.int64)
        self._poses = np.empty((count, 4, 4), dtype=np.float64)
        for index in range(count):
            if offset + FRAME_RECORD.size > file_size:
                raise DataError(f"{self.path}: truncated file: frame {index} of {count} is missing")
            record = FRAME_RECORD.unpack(self._read(offset, FRAME_RECORD.size))
            self._poses[index] = np.array(record[:16], dtype=np.float64).reshape(4, 4)
            color_size, depth_size = record[18], record[19]
            self._color_offsets[index] = offset + FRAME_RECORD.size
            self._color_sizes[index] = color_size
            self._depth_offsets[index] = offset + FRAME_RECORD.size + color_size
            self._depth_sizes[index] = depth_size
            offset += FRAME_RECORD.size + color_size + depth_size
            if offset > file_size:
                raise DataError(f"{self.path}: truncated file: frame {index} of {count} is cut short")

    # -- scene protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.header.num_frames

    def __repr__(self) -> str:
        return f"SensScene({str(self.path)!r}, frames={len(self)})"

    def frame_index(self, position: int) -> int:
        return position

    @property
    def frame_indices(self) -> list[int]:
        return list(range(len(self)))

    @property
    def depth_size(self) -> tuple[int, int]:
        return self.header.depth_size

    @property
    def depth_intrinsics(self) -> np.ndarray:
        return self.header.intrinsic_depth[:3, :3].copy()

    def pose(self, position: int) -> np.ndarray:
        return self._poses[position].copy()

    def _where(self, position: int) -> str:
        return f"{self.path} frame {position}"

    def color_bytes(self, position: int) -> bytes:
        """The stored (compressed) colour bytes of a frame."""
        return self._read(int(self._color_offsets[position]), int(self._color_sizes[position]))

    def _color_image(self, position: int) -> Image.Image:
        data = self.color_bytes(position)
        width, height = self.header.color_size
        try:
            if self.header.color_compression == 0:
                return Image.frombuffer("RGB", (width, height), data, "raw", "RGB", 0, 1)
            image = Image.open(io.BytesIO(data))
            image.size  # noqa: B018 (parses the header)
            return image
        except (OSError, SyntaxError, ValueError) as error:
            raise InvalidFrameError(f"{self._where(position)}: unreadable colour image ({error})") from None

    def raw_color(self, position: int) -> np.ndarray:
        """uint8 (H, W, 3) colour at the colour stream's own resolution."""
        image = self._color_image(position)
        try:
            return np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as error:
            raise InvalidFrameError(f"{self._where(position)}: unreadable colour image ({error})") from None

    def raw_depth(self, position: int) -> np.ndarray:
        """uint16 (H, W) depth in sensor units (divide by ``header.depth_shift`` for metres)."""
        data = self._read(int(self._depth_offsets[position]), int(self._depth_sizes[position]))
        width, height = self.header.depth_size
        if self.header.depth_compression == 1:
            try:
                data = zlib.decompress(data)
            except zlib.error as error:
                raise InvalidFrameError(f"{self._where(position)}: corrupt zlib depth ({error})") from None
        if len(data) != width * height * 2:
            raise InvalidFrameError(
                f"{self._where(position)}: depth has {len(data)} bytes, expected {width}x{height} uint16"
            )
        return np.frombuffer(data, dtype="<u2").reshape(height, width)

    def frame(self, position: int, size: tuple[int, int] | None = None) -> Frame:
        """Frame at ``position`` (see ExportedScene.frame); raises InvalidFrameError for a bad frame."""
        if not 0 <= position < len(self):
            raise IndexError(f"{self.path}: frame position {position} out of range [0, {len(self)})")
        pose = check_pose(self._poses[position], self._where(position))
        size = self.depth_size if size is None else (int(size[0]), int(size[1]))
        raw = self.raw_depth(position)
        depth = raw_depth_to_metres(resize_depth(raw, size), self.header.depth_shift)
        color = self._color_image(position)
        try:
            if self.header.color_compression == 0:
                image = resize_color_array(np.asarray(color, dtype=np.float32) / 255.0, size)
            else:
                image = decode_color(color, size)
        except (OSError, SyntaxError, ValueError) as error:
            raise InvalidFrameError(f"{self._where(position)}: unreadable colour image ({error})") from None
        K = scale_K(self.depth_intrinsics, self.depth_size, size)
        return as_frame(image, depth, K, pose, position)


# -- export -------------------------------------------------------------------------------------------------
def export_sens(
    sens_path: str | Path, out_dir: str | Path, every: int = 1, progress: bool = True
) -> list[int]:
    """Write a .sens file as the exported layout; returns the frame numbers written.

    JPEG colour is copied byte for byte (no re-encoding, so the export decodes identically); other colour is
    written as PNG. Depth is written as uint16 millimetre PNGs (converted when the file's depth shift is not
    1000). Files keep the .sens frame number, so ``--every 10`` writes 0, 10, 20, …"""
    if every < 1:
        raise DataError(f"--every must be >= 1, got {every}")
    scene = SensScene(sens_path)
    out = Path(out_dir)
    for folder in ("color", "depth", "pose", "intrinsic"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    header = scene.header
    for name in ("intrinsic_color", "extrinsic_color", "intrinsic_depth", "extrinsic_depth"):
        write_atomic(out / "intrinsic" / f"{name}.txt", matrix_text(getattr(header, name)))
    positions = list(range(0, len(scene), every))
    iterator = positions
    if progress:
        from tqdm import tqdm

        iterator = tqdm(positions, desc=f"export {scene.name}", unit="frame")
    for position in iterator:
        if header.color_compression == 2:
            color, color_format = scene.color_bytes(position), "jpg"
        else:
            color, color_format = scene.raw_color(position), "png"
        raw = scene.raw_depth(position)
        if header.depth_shift != 1000.0:
            millimetres = np.rint(raw.astype(np.float64) * (1000.0 / header.depth_shift))
            millimetres[(raw == 0) | (raw == INVALID_DEPTH_RAW)] = 0
            raw = np.clip(millimetres, 0, INVALID_DEPTH_RAW - 1).astype(np.uint16)
        write_frame(
            out,
            position,
            color,
            np.ascontiguousarray(raw, dtype=np.uint16),
            scene.pose(position),
            color_format,
        )
    scene.close()
    return positions
