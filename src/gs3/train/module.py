"""The Lightning side of pre-training: optimisation, skipping non-finite steps, logging, checkpoint extras.

Optimisation is manual (Lightning's `automatic_optimization = False`) so that a non-finite loss or gradient
norm skips the optimizer *and* scheduler step on every rank together, and is counted. Randomness inside the
model is reseeded from (seed, step, rank) at each step and the data of a step is a pure function of (seed,
step) (gs3.train.sampling), so a resumed run continues exactly without saving generator states.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

import gs3
from gs3.config import PretrainConfig, config_from_dict, config_to_dict
from gs3.errors import GS3Error
from gs3.train.sampling import mix_seed
from gs3.train.visualize import render_grid


class NonFiniteLossError(GS3Error):
    """Too many non-finite losses in a row: the run diverged."""


def cosine_schedule(step: int, total_steps: int, lr: float, min_lr: float, warmup_steps: int = 0) -> float:
    """Learning rate at `step`: linear warm-up, then cosine from lr to min_lr at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices / kernels only: biases, norm scales and learned embeddings
    (1-D or fewer dims) are not decayed, the usual AdamW practice."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class GS3Module(L.LightningModule):
    def __init__(self, config: dict[str, Any] | PretrainConfig) -> None:
        super().__init__()
        from gs3.model import build_model  # the model joins every part; imported late: quick CLI start-up

        config_dict = config if isinstance(config, dict) else config_to_dict(config)
        self.save_hyperparameters({"config": config_dict})
        self.config: PretrainConfig = config_from_dict(config_dict)
        self.model = build_model(self.config)  # GS3, or the NeRF baseline (model.renderer=volume)
        self.automatic_optimization = False
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.batches_done = 0  # batches consumed by the run (skipped steps included): the data position
        self.resume_batches = 0  # set from a checkpoint; the data module skips that many batches
        self.skipped_data: Counter = Counter()  # bad samples skipped by gs3.data, by reason (this rank)
        self.history: list[tuple[int, float, float]] = []  # (step, loss, psnr) of this process's run
        self.start_time = time.monotonic()

    # --- optimisation -------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        if self.config.optim.max_steps > 0:
            return self.config.optim.max_steps
        # Not trainer.estimated_stepping_batches: it would build the train dataloader before a checkpoint
        # restores the data position. The data module knows the run's length from the dataset already.
        return max(1, self.trainer.datamodule.total_batches(self.trainer.world_size))

    def configure_optimizers(self) -> Any:
        o = self.config.optim
        optimizer = torch.optim.AdamW(
            parameter_groups(self.model, o.weight_decay),
            lr=o.lr,
            betas=tuple(o.betas),
            weight_decay=o.weight_decay,
        )
        total = self.total_steps()
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_schedule(step, total, o.lr, o.min_lr, o.warmup_steps) / o.lr
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _all_ranks_finite(self, value: Tensor) -> bool:
        finite = torch.isfinite(value.detach()).all().float().reshape(1)
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def _skip(self, what: str) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        limit = self.config.trainer.max_nonfinite_in_row
        self._write_scalars({"train/nonfinite_skipped": float(self.nonfinite_total)})
        if self.nonfinite_in_row >= limit:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite {what} in a row at step {self.global_step} "
                f"(trainer.max_nonfinite_in_row={limit}): the run diverged; lower optim.lr or check the data"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self.batches_done = batch_idx + 1  # one long epoch (gs3.train.sampling): batch_idx counts the run
        self.skipped_data.update(batch.get("skipped", {}))
        seed = mix_seed(self.config.trainer.seed, self.global_step, batch_idx, self.global_rank)
        torch.manual_seed(seed)  # model-side randomness (e.g. dropout) is a function of (seed, step, rank)
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        output = self.model(batch)
        if not self._all_ranks_finite(output.loss):
            self._skip("losses")
            return None
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(output.loss)
        clip = self.config.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.parameters() if p.grad is not None], clip if clip > 0 else float("inf")
        )
        if not self._all_ranks_finite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            self._skip("gradient norms")
            return None
        lr = self._lr()  # the rate this step uses (the scheduler moves it on below)
        optimizer.step()
        scheduler.step()
        self.nonfinite_in_row = 0
        self._log_step(output, batch, grad_norm, lr)
        return output.loss.detach()

    # --- logging ------------------------------------------------------------------------------------------
    def _log_step(self, output: Any, batch: dict[str, Any], grad_norm: Tensor, lr: float) -> None:
        batch_size = int(batch["image"].shape[0])
        loss = float(output.loss.detach())
        psnr = float(output.metrics["psnr"].detach()) if "psnr" in output.metrics else float("nan")
        self.history.append((self.global_step, loss, psnr))
        self.log("loss", loss, prog_bar=True, batch_size=batch_size, logger=False)
        self.log("psnr", psnr, prog_bar=True, batch_size=batch_size, logger=False)
        if self.global_step % self.config.trainer.log_every == 0 or self.global_step == 1:
            scalars = {"train/loss": loss, "train/grad_norm": float(grad_norm), "train/lr": lr}
            scalars |= {f"train/{k}": float(v.detach()) for k, v in output.terms.items()}
            scalars |= {f"train/{k}": float(v.detach()) for k, v in output.metrics.items()}
            self._write_scalars(scalars)
        if self.global_step % self.config.trainer.image_every == 0 or self.global_step == 1:
            self._log_images(output, batch)

    def _write_scalars(self, scalars: dict[str, float]) -> None:
        # Straight to the logger at the optimizer step: Lightning's self.log would repeat stale values
        # at every step under manual optimisation.
        if self.global_rank == 0 and self.logger is not None:
            self.logger.log_metrics(scalars, step=self.global_step)

    def _lr(self) -> float:
        return float(self.optimizers().param_groups[0]["lr"])

    def _log_images(self, output: Any, batch: dict[str, Any]) -> None:
        if self.global_rank != 0 or self.logger is None or not hasattr(self.logger, "experiment"):
            return
        color, depth = output.color, output.depth
        if color is None:  # a ray-sampled renderer (the NeRF baseline) renders whole views for pictures only
            color, depth = self.model.preview(output, batch)
        grid = render_grid(batch["image"][0], color[0], depth[0], batch["depth"][0])
        self.logger.experiment.add_image(
            "train/real|rendered|rendered_depth|sensor_depth", grid, self.global_step, dataformats="HWC"
        )

    # --- checkpoint extras --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gs3"] = {
            "version": gs3.__version__,
            "config": config_to_dict(self.config),
            "step": int(self.global_step),
            "batches_done": int(self.batches_done),
            "skipped_data": dict(self.skipped_data),
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_in_row": self.nonfinite_in_row,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extras = checkpoint.get("gs3", {})
        self.nonfinite_total = int(extras.get("nonfinite_total", 0))
        self.nonfinite_in_row = int(extras.get("nonfinite_in_row", 0))
        self.batches_done = self.resume_batches = int(extras.get("batches_done", 0))
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "sampler", None) is not None:
            datamodule.sampler.resume_at(self.resume_batches)  # a loader built before the restore
        self.skipped_data = Counter(extras.get("skipped_data", {}))
