"""`pretrain(config)`: Lightning Trainer + GS3Module + data, with atomic checkpoints and exact resumption.

The pieces that are not specific to pre-training (StepCheckpoint, build_trainer, resolve_*) take any run
config with `name`, `trainer` (TrainerConfig) and `optim.max_steps`; fine-tuning (gs3.train.finetune) uses
them too.

Multi-GPU / multi-node: set trainer.devices / trainer.num_nodes / trainer.strategy=ddp, or launch with
torchrun (Lightning detects the torchrun environment and does not spawn processes itself).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from gs3.config import PretrainConfig, TrainerConfig, config_to_yaml
from gs3.errors import GS3Error
from gs3.train.checkpoint import (
    LAST_NAME,
    AtomicCheckpointIO,
    atomic_link,
    atomic_write_text,
    latest_checkpoint,
    remove_stale_temporaries,
    step_checkpoint_name,
    step_checkpoints,
)
from gs3.train.data import GS3DataModule
from gs3.train.determinism import determinism_callbacks
from gs3.train.module import GS3Module


class RunConfig(Protocol):
    """What the shared runner pieces read: PretrainConfig and FinetuneConfig both have it."""

    name: str
    trainer: TrainerConfig
    optim: Any  # with max_steps (> 0: the run's length in optimizer steps)


class StepCheckpoint(Callback):
    """Every `every` optimizer steps and at the end: checkpoints/step-NNNNNNNN.ckpt, linked as last.ckpt."""

    def __init__(self, folder: Path, every: int, keep: int) -> None:
        self.folder = folder
        self.every = every
        self.keep = keep
        self.last_saved_step = -1
        self.last_path: Path | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every == 0 and step != self.last_saved_step:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self.last_saved_step:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        step = trainer.global_step
        path = self.folder / step_checkpoint_name(step)
        # Full state (optimizer, loops) to resume from; every rank calls (it synchronises), rank 0 writes.
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            atomic_link(path, self.folder / LAST_NAME)
            for _, old in step_checkpoints(self.folder)[: -self.keep] if self.keep > 0 else []:
                old.unlink(missing_ok=True)
        trainer.strategy.barrier("gs3-checkpoint")
        self.last_saved_step, self.last_path = step, path


@dataclass
class PretrainSummary:
    steps: int
    seconds: float
    first_loss: float
    first_psnr: float
    last_loss: float
    last_psnr: float
    nonfinite_skipped: int
    bad_samples: dict[str, int]
    checkpoint: Path | None
    out_dir: Path
    steps_this_run: int = -1  # optimizer steps this call took (0: a resumed run that had already ended)

    def line(self) -> str:
        if self.steps_this_run == 0:
            return (
                f"gs3 pretrain: nothing to do: the run in {self.out_dir} ended at step {self.steps} "
                f"(optim.max_steps); checkpoint {self.checkpoint}"
            )
        minutes, seconds = divmod(round(self.seconds), 60)
        bad = sum(self.bad_samples.values())
        bad_text = f"{bad} bad samples skipped" + (
            " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.bad_samples.items())) + ")" if bad else ""
        )
        return (
            f"gs3 pretrain: {self.steps} steps in {minutes}m{seconds:02d}s; loss {self.first_loss:.4f} -> "
            f"{self.last_loss:.4f}, PSNR {self.first_psnr:.2f} -> {self.last_psnr:.2f} dB; "
            f"{self.nonfinite_skipped} non-finite steps skipped; {bad_text}; checkpoint {self.checkpoint}"
        )


def resolve_precision(config: RunConfig) -> str:
    if config.trainer.precision != "auto":
        return config.trainer.precision
    on_gpu = config.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu else "32-true"


def resolve_out_dir(config: RunConfig, out_dir: str | os.PathLike | None) -> Path:
    return Path(out_dir or config.trainer.out_dir or Path("runs") / config.name).expanduser()


def resolve_resume(resume: str | None, checkpoint_dir: Path, command: str = "gs3 pretrain") -> str | None:
    """`auto`: the run folder's last checkpoint if there is one (else start fresh); a path must exist."""
    if resume is None:
        return None
    if resume == "auto":
        found = latest_checkpoint(checkpoint_dir)
        if found is None:
            print(f"{command}: --resume auto: no checkpoint in {checkpoint_dir}, starting fresh", flush=True)
        return str(found) if found else None
    if not Path(resume).is_file():
        raise GS3Error(f"--resume {resume}: checkpoint not found")
    return resume


def build_trainer(config: RunConfig, out: Path, callbacks: list[Callback]) -> L.Trainer:
    t = config.trainer
    progress: list[Callback] = [TQDMProgressBar(refresh_rate=1)] if t.progress_bar else []
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=resolve_precision(config),
        max_epochs=1,  # the whole run is one stream of batches (gs3.train.sampling); its length is the run
        max_steps=config.optim.max_steps,
        logger=TensorBoardLogger(str(out), name="tensorboard", version=""),
        callbacks=[*callbacks, *determinism_callbacks(config), *progress],
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,  # StepCheckpoint writes them
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=False,  # ResumableSampler shards by rank itself
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=1,  # the module decides what to log when
        default_root_dir=str(out),
    )


def quiet_lightning_warnings() -> None:
    # Lightning warns that a mid-epoch resume is unreliable for plain dataloaders; ours skips exactly.
    warnings.filterwarnings(
        "ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*"
    )
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def prepare_run_folder(trainer: L.Trainer, out: Path, checkpoint_dir: Path, config: Any) -> None:
    """On global rank 0: the checkpoint folder (stale temporaries of a killed run removed), config.yaml."""
    if trainer.is_global_zero:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(checkpoint_dir)
        atomic_write_text(config_to_yaml(config), out / "config.yaml")


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        # Lightning leaves its process group up; tearing it down here lets every rank exit cleanly (an
        # un-destroyed gloo group can abort a rank at interpreter exit).
        dist.barrier()
        dist.destroy_process_group()


def pretrain(
    config: PretrainConfig, out_dir: str | os.PathLike | None = None, resume: str | None = None
) -> PretrainSummary:
    """Run (or continue) pre-training; returns the summary (also printed by global rank 0)."""
    out = resolve_out_dir(config, out_dir)
    checkpoint_dir = out / "checkpoints"
    ckpt_path = resolve_resume(resume, checkpoint_dir)
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    quiet_lightning_warnings()

    module = GS3Module(config)
    datamodule = GS3DataModule(config)
    checkpointer = StepCheckpoint(
        checkpoint_dir, config.trainer.checkpoint_every, config.trainer.keep_checkpoints
    )
    trainer = build_trainer(config, out, [checkpointer])
    prepare_run_folder(trainer, out, checkpoint_dir, config)
    start = time.monotonic()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    history = module.history or [(trainer.global_step, float("nan"), float("nan"))]
    window = max(1, min(5, len(history) // 4))  # first/last figures: means over a few steps (batches vary)
    first, last = history[:window], history[-window:]
    summary = PretrainSummary(
        steps=trainer.global_step,
        seconds=time.monotonic() - start,
        first_loss=sum(h[1] for h in first) / window,
        first_psnr=sum(h[2] for h in first) / window,
        last_loss=sum(h[1] for h in last) / window,
        last_psnr=sum(h[2] for h in last) / window,
        nonfinite_skipped=module.nonfinite_total,
        bad_samples=datamodule.bad_sample_counts(),
        checkpoint=(checkpoint_dir / LAST_NAME) if checkpointer.last_path or ckpt_path else None,
        out_dir=out,
        steps_this_run=len(module.history),
    )
    if trainer.is_global_zero:
        print(summary.line(), flush=True)
    close_distributed()
    return summary
