"""Batching downstream samples (the batch contract of issue 14).

Points (Pointcept's convention): every sample's points are concatenated; ``offset`` (B,) holds the cumulative
point counts (end indices, offset[-1] == N). Evaluation batches add, per ORIGINAL point, ``inverse`` (the row
of this batch's N points that represents it: the sample's local inverse shifted by its start),
``origin_segment`` and ``origin_offset``.
Mix3D (Pointcept's ``mix_prob``, training only): when the batch's draw is below ``mix_prob``, consecutive
pairs of samples are overlaid into one (their offsets are merged: (0, 1), (2, 3), …; an odd last sample stays
alone), as Pointcept's point_collate_fn does. The draw is the first sample's own ``mix`` value, so the
decision is a function of the samples (seed, epoch, index), like everything else.
Images: stacked to (B, H, W, 3) and (B, H, W).
``skipped`` sums the samples' counts of bad data skipped on the way (reason → count).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from gs3.errors import DataError

POINT_KEYS = ("coord", "color", "segment")


def _skipped(samples: Sequence[dict]) -> dict[str, int]:
    counts: Counter = Counter()
    for sample in samples:
        counts.update(sample.get("skipped", {}))
    return dict(counts)


def collate_points(samples: Sequence[dict], mix_prob: float = 0.0) -> dict:
    """Point samples → one batch (see the module docstring)."""
    if not samples:
        raise DataError("collate: empty batch")
    batch = {key: torch.cat([sample[key] for sample in samples]) for key in POINT_KEYS}
    counts = torch.tensor([len(sample["coord"]) for sample in samples], dtype=torch.long)
    offset = torch.cumsum(counts, 0)
    names = [sample["name"] for sample in samples]
    if "inverse" in samples[0]:
        starts = offset - counts
        batch["inverse"] = torch.cat([s["inverse"] + start for s, start in zip(samples, starts.tolist())])
        batch["origin_segment"] = torch.cat([sample["origin_segment"] for sample in samples])
        origin_counts = torch.tensor([len(sample["origin_segment"]) for sample in samples], dtype=torch.long)
        batch["origin_offset"] = torch.cumsum(origin_counts, 0)
    elif mix_prob > 0 and len(samples) > 1 and samples[0].get("mix", 1.0) < mix_prob:
        offset = torch.cat([offset[1:-1:2], offset[-1:]])
        names = ["+".join(names[i : i + 2]) for i in range(0, len(names), 2)]
    batch["offset"] = offset
    batch["name"] = names
    batch["skipped"] = _skipped(samples)
    return batch


def collate_images(samples: Sequence[dict]) -> dict:
    """Image samples → {"image" (B, H, W, 3), "segment" (B, H, W), "name", "skipped"}."""
    if not samples:
        raise DataError("collate: empty batch")
    shapes = {tuple(sample["image"].shape) for sample in samples}
    if len(shapes) != 1:
        raise DataError(f"collate: images of different sizes {sorted(shapes)} (set data.image_size)")
    return {
        "image": torch.stack([sample["image"] for sample in samples]),
        "segment": torch.stack([sample["segment"] for sample in samples]),
        "name": [sample["name"] for sample in samples],
        "skipped": _skipped(samples),
    }


class PointCollate:
    """A picklable ``collate_fn`` with the training dataset's Mix3D probability."""

    def __init__(self, mix_prob: float = 0.0) -> None:
        self.mix_prob = mix_prob

    def __call__(self, samples: Sequence[dict]) -> dict:
        return collate_points(samples, self.mix_prob)
