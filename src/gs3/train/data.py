"""The LightningDataModule of pre-training: gs3.data datasets behind a resumable, rank-sharded sampler."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from torch.utils.data import DataLoader

from gs3.config import DataConfig, PretrainConfig
from gs3.errors import DataError
from gs3.train.sampling import EpochIndexed, ResumableSampler


def sample_config(data: DataConfig) -> Any:
    from gs3.data.dataset import SampleConfig

    extra = {k: v for k, v in data.extra.items() if k != "samples_per_scene"}
    try:
        return SampleConfig(
            num_views=data.num_views,
            interval=data.frame_interval,
            resolution=(data.width, data.height),
            augment=data.rotation_augment,
            mask_ratio=data.mask_ratio,
            **extra,
        )
    except TypeError as error:
        raise DataError(f"data.extra: {error}") from None


def synthetic_root(config: PretrainConfig) -> Path:
    d = config.data
    name = f"seed{config.trainer.seed}_{d.synthetic_scenes}x{d.synthetic_frames}_{d.width}x{d.height}"
    return Path(d.cache_dir).expanduser() / name


def prepare_synthetic(config: PretrainConfig) -> Path:
    """Generate the synthetic scenes once (gs3.data.synthetic.write_dataset_once); then reuse them."""
    from gs3.data.synthetic import write_dataset_once

    d = config.data
    return write_dataset_once(
        synthetic_root(config),
        d.synthetic_scenes,
        num_frames=d.synthetic_frames,
        seed=config.trainer.seed,
        width=d.width,
        height=d.height,
        point_density=None,
    )


def scene_paths(config: PretrainConfig, split: str) -> list[Path]:
    """The scenes of data.train_split / data.val_split under data.root ('all': every scene there)."""
    from gs3.data.splits import is_all_scenes, list_scenes, missing_scenes, report_missing_scenes

    data = config.data
    if data.source == "synthetic":
        return list_scenes(synthetic_root(config))
    key = f"data.{split}_split"
    value = data.train_split if split == "train" else data.val_split
    if not Path(data.root).expanduser().is_dir():
        raise DataError(f"data.root {data.root}: not a folder (the dataset root, one folder per scene)")
    try:
        scenes = list_scenes(Path(data.root).expanduser(), value)
    except DataError as error:
        raise DataError(f"{key}: {error}") from None
    if not scenes and is_all_scenes(value):
        raise DataError(
            f"data.root {data.root}: no scenes there ({key}=all takes every <scene>/color/ folder, "
            "<scene>/<scene>.sens and <scene>.sens)"
        )
    if not scenes:
        raise DataError(f"data.root {data.root}: none of the scenes of {key}={value} found there")
    missing = missing_scenes(Path(data.root).expanduser(), value)
    report_missing_scenes(f"{key}={value}", data.root, missing, len(scenes) + len(missing))
    return scenes


def build_dataset(config: PretrainConfig, split: str = "train") -> Any:
    from gs3.data.dataset import GS3Dataset

    samples_per_scene = int(config.data.extra.get("samples_per_scene", 1))
    return GS3Dataset(
        scene_paths(config, split), sample_config(config.data), config.trainer.seed, samples_per_scene
    )


class GS3DataModule(L.LightningDataModule):
    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.config = config
        self.dataset: Any = None
        self.sampler: ResumableSampler | None = None

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before the others build datasets.
        if self.config.data.source == "synthetic":
            prepare_synthetic(self.config)

    def setup(self, stage: str) -> None:
        if self.dataset is None:
            self.dataset = build_dataset(self.config, "train")

    def total_batches(self, world_size: int = 1) -> int:
        """Batches per rank in the whole run (what ResumableSampler yields)."""
        if self.config.optim.max_steps > 0:
            return self.config.optim.max_steps
        per_epoch = max(1, len(self.dataset) // (self.config.data.batch_size * world_size))
        return per_epoch * self.config.optim.epochs

    def collate_fn(self) -> Any:
        from gs3.data.collate import collate

        return collate

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        self.sampler = ResumableSampler(
            len(self.dataset),
            self.config.data.batch_size,
            self.config.trainer.seed,
            epochs=self.config.optim.epochs,
            max_batches=self.config.optim.max_steps,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        module = trainer.lightning_module if trainer else None
        if module is not None and getattr(module, "resume_batches", 0):
            self.sampler.resume_at(module.resume_batches)
        workers = self.config.data.num_workers
        return DataLoader(
            EpochIndexed(self.dataset),
            batch_size=self.config.data.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=self.collate_fn(),
            pin_memory=trainer is not None and trainer.strategy.root_device.type == "cuda",
            persistent_workers=False,
            drop_last=True,
        )

    def bad_sample_counts(self) -> dict[str, int]:
        """Skipped samples by reason, summed over every rank (counted from the batches' `skipped`)."""
        module = self.trainer.lightning_module if self.trainer else None
        counts = Counter(getattr(module, "skipped_data", {}))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, dict(counts))
            counts = Counter()
            for part in gathered:
                counts.update(part)
        return dict(counts)
