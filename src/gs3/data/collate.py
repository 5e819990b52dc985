"""Batching samples into the shared batch dict (see COMMON "Data batch" / gs3.data.dataset.build_sample).

Per-view tensors are stacked to (B, V, …); point tensors are concatenated over the batch (Pointcept
convention) with ``offset`` (B,) the cumulative point counts (end indices), so sample b owns points
``offset[b-1]:offset[b]`` (offset[-1] = 0). ``point_view`` and ``point_pixel`` stay local to their sample.
``skipped`` sums the skip counts (reason → count) reported by the samples, i.e. by every worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from gs3.errors import DataError

VIEW_KEYS = ("image", "depth", "K", "cam_to_world", "pixel_visible", "frames")
POINT_KEYS = ("coord", "color", "point_view", "point_pixel", "point_visible")


def collate(samples: Sequence[dict]) -> dict:
    """List of samples → batch dict (built on one torch thread, see gs3.data.dataset.single_threaded)."""
    from gs3.data.dataset import single_threaded

    with single_threaded():
        return _collate(samples)


def _collate(samples: Sequence[dict]) -> dict:
    if not samples:
        raise DataError("collate: empty batch")
    shapes = {tuple(sample["image"].shape) for sample in samples}
    if len(shapes) != 1:
        raise DataError(f"collate: samples differ in views/resolution {sorted(shapes)}")
    batch = {key: torch.stack([sample[key] for sample in samples]) for key in VIEW_KEYS}
    for key in POINT_KEYS:
        batch[key] = torch.cat([sample[key] for sample in samples])
    counts = torch.tensor([sample["coord"].shape[0] for sample in samples], dtype=torch.long)
    batch["offset"] = torch.cumsum(counts, dim=0)
    batch["scene"] = [sample["scene"] for sample in samples]
    skipped: Counter = Counter()
    for sample in samples:
        skipped.update(sample.get("skipped", {}))
    batch["skipped"] = dict(skipped)
    return batch


def batch_sample_slices(offset: torch.Tensor) -> list[slice]:
    """The point slice of every sample of a batch, from its offsets."""
    ends = offset.tolist()
    starts = [0, *ends[:-1]]
    return [slice(start, end) for start, end in zip(starts, ends)]
