"""Per-pixel semantic labels of RGB-D frames: label images and ScanNet's raw-id → NYU40 mapping.

A labelled scene in the exported layout has one of these folders beside color/ (the first found is used):

    label-nyu40/<i>.png   NYU40 id per pixel (0 = unlabelled), 8- or 16-bit: ScanNet's converted labels
    label/<i>.png         NYU40 id per pixel, 16-bit: what gs3's synthetic scenes write
    label-filt/<i>.png    raw ScanNet category ids (ScanNet's `*_2d-label-filt.zip`), mapped to NYU40 through
                          scannetv2-labels.combined.tsv

The mapping ships with gs3 as `gs3/data/scannetv2_labels_nyu40.tsv`: only the `id` and `nyu40id` columns
of ScanNet v2's table, rows in the original order (its header says where it was read from). A user may pass
the full `scannetv2-labels.combined.tsv` instead; both are read the same way. As ScanNet's own
`read_label_mapping` does, a later row wins where an id appears twice, and (as its label-image converter
does) a raw id missing from the table becomes 0, unlabelled. An NYU40 id above 40 is an error.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from gs3.data.validation import InvalidFrameError
from gs3.errors import DataError

NYU40_MAX = 40
LABEL_FOLDERS = ("label-nyu40", "label", "label-filt")
RAW_LABEL_FOLDER = "label-filt"
PACKAGED_LABEL_MAP = "scannetv2_labels_nyu40.tsv"
LABEL_PNG_MODES = ("L", "I;16", "I;16L", "I;16B", "I")


def find_label_folder(scene_dir: Path) -> Path | None:
    """The scene's label folder (see the module docstring for the order), or None."""
    for name in LABEL_FOLDERS:
        if (scene_dir / name).is_dir():
            return scene_dir / name
    return None


@functools.lru_cache(maxsize=8)
def read_label_map(path: str | None = None) -> np.ndarray:
    """Lookup table ``nyu40[raw_id]`` (int64, 0 for ids not in the table) from a label tsv; None reads the
    packaged one. Raises DataError naming the file (and line) when the table is malformed."""
    if path is None:
        source = PACKAGED_LABEL_MAP
        text = resources.files("gs3.data").joinpath(PACKAGED_LABEL_MAP).read_text()
    else:
        source = str(path)
        try:
            text = Path(path).expanduser().read_text()
        except FileNotFoundError:
            raise DataError(f"{source}: label map file not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{source}: cannot read the label map ({error})") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.reader(lines, delimiter="\t")
    header = next(reader, None)
    if header is None or "id" not in header or "nyu40id" not in header:
        raise DataError(f"{source}: not a ScanNet label table (no tab-separated 'id' and 'nyu40id' columns)")
    id_column, nyu_column = header.index("id"), header.index("nyu40id")
    mapping: dict[int, int] = {}
    for number, row in enumerate(reader, start=2):
        try:
            raw_id, nyu40 = int(row[id_column]), int(row[nyu_column])
        except (IndexError, ValueError):
            raise DataError(f"{source}: row {number}: expected integer 'id' and 'nyu40id'") from None
        if raw_id < 0 or not 0 <= nyu40 <= NYU40_MAX:
            raise DataError(f"{source}: row {number}: id {raw_id} → nyu40id {nyu40} out of range")
        mapping[raw_id] = nyu40  # a later row wins, as in ScanNet's read_label_mapping
    if not mapping:
        raise DataError(f"{source}: the label table has no rows")
    lookup = np.zeros(max(mapping) + 1, dtype=np.int64)
    lookup[list(mapping)] = list(mapping.values())
    lookup.setflags(write=False)
    return lookup


def map_raw_labels(raw: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Raw ScanNet category ids → NYU40 ids (int64); ids beyond the table become 0 (unlabelled)."""
    raw = np.asarray(raw, dtype=np.int64)
    inside = (raw >= 0) & (raw < len(lookup))
    return np.where(inside, lookup[np.clip(raw, 0, len(lookup) - 1)], 0)


def read_label_png(path: Path) -> np.ndarray:
    """A single-channel 8/16-bit label PNG as int64. Raises InvalidFrameError naming the file."""
    try:
        with Image.open(path) as image:
            if image.mode not in LABEL_PNG_MODES:
                raise InvalidFrameError(
                    f"{path}: label image must be 8- or 16-bit single-channel, got Pillow mode {image.mode!r}"
                )
            return np.asarray(image).astype(np.int64)
    except FileNotFoundError:
        raise InvalidFrameError(f"{path}: label file is missing") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidFrameError(f"{path}: unreadable label image ({error})") from None


def check_nyu40(labels: np.ndarray, where: str) -> np.ndarray:
    """Return the labels, or raise InvalidFrameError naming ``where`` when an id is outside 0..40."""
    if labels.size and (labels.min() < 0 or labels.max() > NYU40_MAX):
        bad = int(labels.max()) if labels.max() > NYU40_MAX else int(labels.min())
        raise InvalidFrameError(f"{where}: label {bad} out of range (NYU40 ids are 0..{NYU40_MAX})")
    return labels


def read_frame_labels(label_dir: Path, frame_index: int, label_map: str | None = None) -> np.ndarray:
    """NYU40 ids (int64, native label size) of one frame from its label folder."""
    path = label_dir / f"{frame_index}.png"
    raw = read_label_png(path)
    if label_dir.name == RAW_LABEL_FOLDER:
        return map_raw_labels(raw, read_label_map(label_map))
    return check_nyu40(raw, str(path))
