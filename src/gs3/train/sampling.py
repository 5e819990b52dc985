"""Deterministic, resumable data order.

The whole run is one stream of batches (Lightning sees a single long epoch): batch b belongs to data epoch
b // batches_per_epoch, whose order is a permutation seeded by (seed, data epoch), dealt out to the ranks.
The sampler yields `(dataset_index, data_epoch)`; `EpochIndexed` hands the epoch to the gs3.data dataset,
whose samples draw all randomness from (seed, epoch, index). So the data of every step is a pure function of
(seed, step): a resumed run skips the batches its checkpoint consumed and then sees exactly what an
uninterrupted run would, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64-style mixing), stable across processes and Python versions."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = ((state ^ (int(value) & _MASK64)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 31)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 29
    return state & _MASK63


class ResumableSampler(Sampler[tuple[int, int]]):
    """Shuffled, rank-sharded, resumable; every rank gets the same number of full batches.

    Positions of a data epoch are dealt round-robin (position p → rank p mod world_size). When the dataset is
    smaller than one global batch the permutation is repeated, so tiny datasets (the demo) still train.
    `total_batches` (per rank) is `epochs` data epochs, or exactly `max_batches` when that is > 0.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        epochs: int = 1,
        max_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("ResumableSampler: empty dataset")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batches_per_epoch = max(1, dataset_size // (batch_size * world_size))
        self.total_batches = max_batches if max_batches > 0 else self.batches_per_epoch * epochs
        self.start_batch = 0

    def resume_at(self, batches_done: int) -> None:
        """Iteration starts after the first `batches_done` batches (consumed before the checkpoint)."""
        self.start_batch = batches_done

    def __len__(self) -> int:
        return self.total_batches * self.batch_size

    def epoch_order(self, epoch: int) -> list[int]:
        total = self.batches_per_epoch * self.batch_size * self.world_size
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order: list[int] = []
        while len(order) < total:
            order += torch.randperm(self.dataset_size, generator=generator).tolist()
        return order[:total]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, []
        for batch in range(self.start_batch, self.total_batches):
            data_epoch, batch_in_epoch = divmod(batch, self.batches_per_epoch)
            if data_epoch != epoch:
                epoch, order = data_epoch, self.epoch_order(data_epoch)
            for j in range(self.batch_size):
                position = (batch_in_epoch * self.batch_size + j) * self.world_size + self.rank
                yield order[position], data_epoch


class EpochIndexed(Dataset):
    """`dataset[(index, epoch)]` = `inner[index]` with `inner.set_epoch(epoch)` first (a cheap attribute set
    in whichever process loads it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)
        return self.inner[index]
