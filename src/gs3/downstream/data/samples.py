"""What the labelled-data readers return: one labelled point cloud or one labelled image (CPU tensors)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from gs3.downstream.data.classes import IGNORE_INDEX
from gs3.errors import DataError


@dataclass
class LabelledPoints:
    """A labelled point cloud: coord (N, 3) metres, color (N, 3) in [0, 1], segment (N,) class index or -1,
    optional normal (N, 3) and instance (N,) ids."""

    name: str
    coord: Float[Tensor, "n 3"]
    color: Float[Tensor, "n 3"]
    segment: Int[Tensor, " n"]
    normal: Float[Tensor, "n 3"] | None = None
    instance: Int[Tensor, " n"] | None = None

    def __len__(self) -> int:
        return int(self.coord.shape[0])

    @classmethod
    def from_numpy(
        cls,
        name: str,
        coord: np.ndarray,
        color: np.ndarray,
        segment: np.ndarray,
        normal: np.ndarray | None = None,
        instance: np.ndarray | None = None,
    ) -> LabelledPoints:
        """float32 / int64 tensors from arrays (no copy where the dtype already matches)."""

        def floats(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

        def ints(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64).reshape(-1))

        return cls(
            name=name,
            coord=floats(coord),
            color=floats(color),
            segment=ints(segment),
            normal=None if normal is None else floats(normal),
            instance=None if instance is None else ints(instance),
        )

    def check(self, num_classes: int) -> LabelledPoints:
        """Raise DataError (naming the sample) unless shapes agree, values are finite and labels in range."""
        n = len(self)
        if self.coord.shape != (n, 3) or self.color.shape != (n, 3) or self.segment.shape != (n,):
            raise DataError(
                f"{self.name}: coord {tuple(self.coord.shape)}, color {tuple(self.color.shape)} and segment "
                f"{tuple(self.segment.shape)} do not describe the same N points"
            )
        for key in ("normal", "instance"):
            value = getattr(self, key)
            if value is not None and value.shape[0] != n:
                raise DataError(f"{self.name}: {key} has {value.shape[0]} rows for {n} points")
        if not bool(torch.isfinite(self.coord).all()):
            raise DataError(f"{self.name}: non-finite coordinates")
        check_segment(self.segment, num_classes, self.name)
        return self


@dataclass
class LabelledImage:
    """A labelled image: image (H, W, 3) in [0, 1], segment (H, W) class index or -1."""

    name: str
    image: Float[Tensor, "h w 3"]
    segment: Int[Tensor, "h w"]

    def check(self, num_classes: int) -> LabelledImage:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.segment.shape != self.image.shape[:2]:
            raise DataError(
                f"{self.name}: image {tuple(self.image.shape)} and segment {tuple(self.segment.shape)} differ"
            )
        check_segment(self.segment, num_classes, self.name)
        return self


def check_segment(segment: Tensor, num_classes: int, where: str) -> None:
    if segment.numel() and (int(segment.min()) < IGNORE_INDEX or int(segment.max()) >= num_classes):
        raise DataError(
            f"{where}: segment labels span {int(segment.min())}..{int(segment.max())}, "
            f"expected {IGNORE_INDEX}..{num_classes - 1}"
        )
