"""The Lightning side of pre-training: the GS3 model, its optimizer and schedule, logging, checkpoint extras.

The optimisation loop (manual optimisation, skipping non-finite steps, per-step reseeding, the run position
kept in checkpoints) is gs3.train.steps.SteppedModule, shared with fine-tuning.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

import gs3
from gs3.config import PretrainConfig, config_from_dict, config_to_dict
from gs3.train.steps import NonFiniteLossError, SteppedModule
from gs3.train.visualize import render_grid

__all__ = ["GS3Module", "NonFiniteLossError", "cosine_schedule", "parameter_groups"]


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


class GS3Module(SteppedModule):
    def __init__(self, config: dict[str, Any] | PretrainConfig) -> None:
        super().__init__()
        from gs3.model import build_model  # the model joins every part; imported late: quick CLI start-up

        config_dict = config if isinstance(config, dict) else config_to_dict(config)
        self.save_hyperparameters({"config": config_dict})
        self.config: PretrainConfig = config_from_dict(config_dict)
        self.model = build_model(self.config)  # GS3, or the NeRF baseline (model.renderer=volume)
        self.history: list[tuple[int, float, float]] = []  # (step, loss, psnr) of this process's run
        self.start_time = time.monotonic()

    # --- optimisation -------------------------------------------------------------------------------------
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

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self.begin_step(batch, batch_idx)
        output = self.model(batch)
        stepped = self.optimize(output.loss)
        if stepped is None:
            return None
        self._log_step(output, batch, *stepped)
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
            **self.step_state(),
        }
