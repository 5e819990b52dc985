"""The LightningDataModule of fine-tuning: gs3.downstream.data datasets behind pre-training's resumable,
rank-sharded sampler (gs3.train.data.GS3DataModule), plus the validation loader used for evaluation."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from gs3.downstream.config import FinetuneConfig
from gs3.train.data import GS3DataModule
from gs3.train.sampling import EpochIndexed


class FinetuneDataModule(GS3DataModule):
    """Training batches: `data.batch_size` per process, `optim.epochs` passes (× data.loop) or exactly
    `optim.max_steps` batches, in an order that is a function of (seed, step), so resumption is exact.
    Validation: the `val` split in order, `data.val_batch_size` per batch."""

    config: FinetuneConfig  # type: ignore[assignment]

    def __init__(self, config: FinetuneConfig) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        self.val_dataset: Any = None

    def prepare_data(self) -> None:
        from gs3.downstream.data.datasets import prepare_downstream_data

        prepare_downstream_data(self.config.data)  # generates the synthetic rooms once

    def setup(self, stage: str) -> None:
        from gs3.downstream.data import build_downstream_dataset

        if self.dataset is None:
            self.dataset = build_downstream_dataset(self.config.data, "train", self.config.trainer.seed)

    def collate_fn(self) -> Any:
        return self.dataset.collate_fn

    def evaluation_loader(self) -> DataLoader:
        """The validation scenes, in order (built once)."""
        from gs3.downstream.data import build_downstream_dataset

        if self.val_dataset is None:
            self.prepare_data()
            self.val_dataset = build_downstream_dataset(self.config.data, "val", self.config.trainer.seed)
        return evaluation_loader(self.val_dataset, self.config)

    def statistics_loader(self) -> DataLoader:
        """Training batches (augmented as in training, a fixed seeded order) for recomputing BatchNorm
        statistics; independent of the training sampler, so it does not move the run's data position."""
        if self.dataset is None:
            self.setup("fit")
        generator = torch.Generator().manual_seed(self.config.trainer.seed)
        return DataLoader(
            EpochIndexed(self.dataset),
            batch_size=self.config.data.batch_size,
            sampler=[(int(i), 0) for i in torch.randperm(len(self.dataset), generator=generator)],
            num_workers=self.config.data.num_workers,
            collate_fn=self.collate_fn(),
            drop_last=True,
        )


def evaluation_loader(dataset: Any, config: FinetuneConfig) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=config.data.val_batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
        collate_fn=dataset.collate_fn,
        drop_last=False,
    )
