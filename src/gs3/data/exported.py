"""Reader for ScanNet's exported scene layout (what ScanNet's SensReader writes)::

    SCENE/color/<i>.jpg        colour (any size; resized to the depth size) — .png is accepted too
    SCENE/depth/<i>.png        uint16 PNG, millimetres; 0 and 65535 are invalid
    SCENE/pose/<i>.txt         4×4 camera-to-world (ScanNet writes -inf where tracking failed)
    SCENE/intrinsic/intrinsic_depth.txt   4×4 (or 3×3) K of the depth stream, upper-left 3×3 used

`write_intrinsics` / `write_frame` write the same layout (used by the .sens export and the synthetic scenes).

    SCENE/label-nyu40/<i>.png  (or label/, label-filt/)   optional per-pixel labels, see gs3.data.labels

``<i>`` are frame numbers, not zero-padded: frames are ordered numerically (0, 1, 2, …, 10). Frames are
listed from color/; a missing depth, pose or label file surfaces when that frame is read. Labels are resized
to the frame's size (the depth's, or the requested one) nearest-neighbour, with the depth's rule (the source
pixel containing the target pixel's centre), so they stay aligned with colour and depth and no label is ever
blended: ScanNet's 320×240 labels on its 640×480 depth become 2×2 blocks.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from gs3.data.labels import find_label_folder, read_frame_labels
from gs3.data.scene import Frame, as_frame
from gs3.data.transforms import decode_color, resize_depth, scale_K
from gs3.data.validation import UNREADABLE_FILE, InvalidFrameError, check_pose
from gs3.errors import DataError
from gs3.files import atomic_write_bytes

EXPORTED_DEPTH_SHIFT = 1000.0  # exported depth PNGs are millimetres
INVALID_DEPTH_RAW = 65535
COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")
DEPTH_PNG_MODES = ("I;16", "I;16L", "I;16B", "I")


def read_matrix(path: Path, rows: int = 4) -> np.ndarray:
    """A whitespace-separated text matrix (4×4 pose or intrinsic); InvalidFrameError names the file."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except FileNotFoundError:
        raise InvalidFrameError(f"{path}: file is missing", UNREADABLE_FILE) from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InvalidFrameError(f"{path}: cannot parse a matrix ({error})", UNREADABLE_FILE) from None
    if values.size not in (9, 16):
        raise InvalidFrameError(f"{path}: expected a 3x3 or 4x4 matrix, got {values.size} numbers")
    side = 3 if values.size == 9 else 4
    matrix = values.reshape(side, side)
    if rows == 4 and side != 4:
        raise InvalidFrameError(f"{path}: expected a 4x4 matrix, got 3x3")
    return matrix


def read_depth_png(path: Path) -> np.ndarray:
    """Raw uint16 depth of a 16-bit single-channel PNG. Raises InvalidFrameError for anything else."""
    try:
        with Image.open(path) as image:
            if image.mode not in DEPTH_PNG_MODES:
                raise InvalidFrameError(
                    f"{path}: depth PNG must be 16-bit single-channel, got Pillow mode {image.mode!r}"
                )
            raw = np.asarray(image)
    except FileNotFoundError:
        raise InvalidFrameError(f"{path}: file is missing") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidFrameError(f"{path}: unreadable depth image ({error})") from None
    if raw.dtype != np.uint16:
        if raw.min(initial=0) < 0 or raw.max(initial=0) > 65535:
            raise InvalidFrameError(f"{path}: depth PNG values outside uint16")
        raw = raw.astype(np.uint16)
    return raw


def raw_depth_to_metres(raw: np.ndarray, depth_shift: float) -> np.ndarray:
    """uint16 sensor units → float32 metres; 0 and 65535 → 0 (invalid)."""
    depth = raw.astype(np.float32) / np.float32(depth_shift)  # a division is correctly rounded: 1500 → 1.5
    depth[raw == INVALID_DEPTH_RAW] = 0.0
    return depth


def open_color(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.size  # noqa: B018 (header parsed: a truncated/garbage file fails here)
        return image
    except FileNotFoundError:
        raise InvalidFrameError(f"{path}: file is missing") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidFrameError(f"{path}: unreadable image ({error})") from None


def load_color(image: Image.Image, path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        with image:
            return decode_color(image, size)
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidFrameError(f"{path}: unreadable image ({error})") from None


class ExportedScene:
    """A scene in the exported layout, read frame by frame (nothing is cached but the file lists and K).

    ``labels=False`` skips reading label images (``frame.label`` is then None); ``label_map`` is a path to
    a ScanNet label table for ``label-filt`` scenes (default: the one shipped with gs3)."""

    def __init__(self, path: str | Path, labels: bool = True, label_map: str | Path | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.label_map = None if label_map is None else str(label_map)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: not a directory")
        for folder in ("color", "depth", "pose"):
            if not (self.path / folder).is_dir():
                raise DataError(f"{self.path / folder}: folder is missing (expected the exported layout)")
        intrinsic_path = self.path / "intrinsic" / "intrinsic_depth.txt"
        if not intrinsic_path.is_file():
            raise DataError(f"{intrinsic_path}: intrinsic file is missing")
        try:
            self._K = read_matrix(intrinsic_path, rows=3)[:3, :3].copy()
        except InvalidFrameError as error:
            raise DataError(str(error)) from None
        if not np.all(np.isfinite(self._K)) or self._K[0, 0] <= 0 or self._K[1, 1] <= 0:
            raise DataError(f"{intrinsic_path}: invalid intrinsics (need finite K with fx, fy > 0)")
        self._color_files: dict[int, str] = {}
        for entry in (self.path / "color").iterdir():
            if entry.suffix.lower() in COLOR_SUFFIXES and entry.stem.isdigit():
                self._color_files[int(entry.stem)] = entry.name
        if not self._color_files:
            raise DataError(f"{self.path / 'color'}: empty folder, no <i>.jpg/.png frames")
        self._indices = sorted(self._color_files)
        self._depth_size: tuple[int, int] | None = None
        self.label_dir = find_label_folder(self.path) if labels else None

    def __len__(self) -> int:
        return len(self._indices)

    def __repr__(self) -> str:
        return f"ExportedScene({str(self.path)!r}, frames={len(self)})"

    def frame_index(self, position: int) -> int:
        return self._indices[position]

    @property
    def frame_indices(self) -> list[int]:
        return list(self._indices)

    def pose_path(self, position: int) -> Path:
        return self.path / "pose" / f"{self._indices[position]}.txt"

    def depth_path(self, position: int) -> Path:
        return self.path / "depth" / f"{self._indices[position]}.png"

    def color_path(self, position: int) -> Path:
        return self.path / "color" / self._color_files[self._indices[position]]

    def label_path(self, position: int) -> Path | None:
        if self.label_dir is None:
            return None
        return self.label_dir / f"{self._indices[position]}.png"

    @property
    def has_labels(self) -> bool:
        return self.label_dir is not None

    def pose(self, position: int) -> np.ndarray:
        return read_matrix(self.pose_path(position))

    def raw_depth(self, position: int) -> np.ndarray:
        return read_depth_png(self.depth_path(position))

    @property
    def depth_intrinsics(self) -> np.ndarray:
        return self._K.copy()

    @property
    def depth_size(self) -> tuple[int, int]:
        """(width, height) of the depth PNGs, from the first readable header."""
        if self._depth_size is None:
            for position in range(len(self)):
                try:
                    with Image.open(self.depth_path(position)) as image:
                        self._depth_size = image.size
                        break
                except (OSError, SyntaxError, ValueError):
                    continue
            else:
                raise DataError(f"{self.path / 'depth'}: no readable depth PNG")
        return self._depth_size

    def frame(self, position: int, size: tuple[int, int] | None = None) -> Frame:
        """Frame at ``position``; colour resized to the depth size (or to ``size`` = (w, h), with depth and
        labels nearest-resized and K scaled). Raises InvalidFrameError (a DataError) naming the bad file."""
        if not 0 <= position < len(self):
            raise IndexError(f"{self.path}: frame position {position} out of range [0, {len(self)})")
        pose = check_pose(self.pose(position), str(self.pose_path(position)))
        color = open_color(self.color_path(position))
        raw = self.raw_depth(position)
        depth_size = (raw.shape[1], raw.shape[0])
        size = depth_size if size is None else (int(size[0]), int(size[1]))
        depth = raw_depth_to_metres(resize_depth(raw, size), EXPORTED_DEPTH_SHIFT)
        image = load_color(color, self.color_path(position), size)
        K = scale_K(self._K, depth_size, size)
        label = None
        if self.label_dir is not None:
            label = read_frame_labels(self.label_dir, self._indices[position], self.label_map)
            label = resize_depth(label, size)
        return as_frame(image, depth, K, pose, self._indices[position], label)


# -- writing ------------------------------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    """Write a file via a temporary name in the same folder and an atomic rename (no half-written files),
    with the umask's permissions. Not fsynced: a scene has thousands of files, and an export cut short by
    a power loss is simply run again."""
    atomic_write_bytes(data, path, sync=False)


def matrix_text(matrix: np.ndarray) -> bytes:
    """Rows of a matrix; 9 significant digits round-trip float32 exactly; -inf stays -inf."""
    rows = [" ".join(f"{float(value):.9g}" for value in row) for row in np.asarray(matrix)]
    return ("\n".join(rows) + "\n").encode()


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 (H, W[, 3]) or uint16 (H, W) array (uint16 → 16-bit greyscale)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(color: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(color, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_intrinsics(scene_dir: str | Path, K_depth: np.ndarray, K_color: np.ndarray | None = None) -> None:
    """intrinsic/{intrinsic,extrinsic}_{color,depth}.txt as 4×4 (extrinsics identity)."""
    folder = Path(scene_dir) / "intrinsic"
    folder.mkdir(parents=True, exist_ok=True)
    for name, K in (("depth", K_depth), ("color", K_depth if K_color is None else K_color)):
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(K)[:3, :3]
        write_atomic(folder / f"intrinsic_{name}.txt", matrix_text(matrix))
        write_atomic(folder / f"extrinsic_{name}.txt", matrix_text(np.eye(4)))


def write_frame(
    scene_dir: str | Path,
    index: int,
    color: np.ndarray | bytes,
    depth_mm: np.ndarray,
    cam_to_world: np.ndarray,
    color_format: str = "jpg",
) -> None:
    """One frame of the exported layout, each file written atomically.

    ``color``: uint8 (H, W, 3) (encoded as ``color_format``, "jpg" or "png") or already-encoded bytes;
    ``depth_mm``: uint16 (h, w) millimetres, 0 = invalid; ``cam_to_world``: 4×4."""
    scene_dir = Path(scene_dir)
    for folder in ("color", "depth", "pose"):
        (scene_dir / folder).mkdir(parents=True, exist_ok=True)
    if isinstance(color, bytes):
        data = color
    else:
        data = jpeg_bytes(color) if color_format == "jpg" else png_bytes(np.asarray(color, dtype=np.uint8))
    write_atomic(scene_dir / "color" / f"{index}.{color_format}", data)
    if np.asarray(depth_mm).dtype != np.uint16:
        raise DataError(f"write_frame: depth must be uint16 millimetres, got {np.asarray(depth_mm).dtype}")
    write_atomic(scene_dir / "depth" / f"{index}.png", png_bytes(depth_mm))
    write_atomic(scene_dir / "pose" / f"{index}.txt", matrix_text(cam_to_world))
