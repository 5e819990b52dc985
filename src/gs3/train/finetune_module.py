"""The Lightning side of fine-tuning: a Segmentor, cross-entropy, the optimizer and schedule, logging.

The optimisation loop (non-finite steps skipped and counted, per-step reseeding, the run position kept in
checkpoints) is gs3.train.steps.SteppedModule, shared with pre-training. The loss is cross-entropy over the
labelled points/pixels (ignore index -1), averaged over them; a batch without any labelled point gives a
zero loss (not NaN), so a protocol with few labels does not count as a diverging run.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import gs3
from gs3.config import config_to_dict
from gs3.downstream.config import FinetuneConfig, finetune_config_from_dict
from gs3.downstream.metrics import IGNORE_INDEX, confusion_matrix, scores_from_confusion
from gs3.downstream.pictures import image_panels, point_panels
from gs3.downstream.pretrained import LoadReport, load_pretrained_encoder
from gs3.downstream.segmentor import Segmentor
from gs3.train.module import cosine_schedule, parameter_groups
from gs3.train.steps import SteppedModule

CHECKPOINT_KIND = "finetune"


def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over labelled points/pixels (target != -1); 0 when there is none."""
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_target = target.reshape(-1).long()
    total = F.cross_entropy(flat_logits, flat_target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (flat_target != IGNORE_INDEX).sum().clamp_min(1)


def build_segmentor(config: FinetuneConfig, num_classes: int) -> Segmentor:
    m = config.model
    return Segmentor(
        m.encoder,
        num_classes,
        head=m.head,
        linear_probe=m.mode == "linear_probe",
        seed=config.trainer.seed,
    )


def poly_factor(step: int, total_steps: int, power: float) -> float:
    """Pointcept's PolyLR: (1 − step / (total + 1)) ** power."""
    return (1.0 - min(step, total_steps) / (total_steps + 1)) ** power


def build_optimizer(config: FinetuneConfig, segmentor: Segmentor, total_steps: int) -> dict[str, Any]:
    """The optimizer over the trainable parameters (linear probing: the head's) and its per-step schedule."""
    o = config.optim
    if o.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            segmentor.trainable_parameters(),
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov and o.momentum > 0,
        )
    elif o.optimizer == "adam":  # L2 weight decay on every parameter (mmdet3d's PointNet++ recipe)
        optimizer = torch.optim.Adam(
            segmentor.trainable_parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay
        )
    else:
        groups = parameter_groups(segmentor, o.weight_decay)  # only parameters that require grad
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.scheduler == "onecycle":
        scheduler: Any = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=o.lr,
            total_steps=max(2, total_steps),
            pct_start=o.pct_start,
            anneal_strategy=o.anneal_strategy,
            cycle_momentum=o.cycle_momentum and (o.optimizer != "sgd" or o.momentum > 0),
            base_momentum=o.base_momentum,
            max_momentum=o.max_momentum,
            div_factor=o.div_factor,
            final_div_factor=o.final_div_factor,
        )
    else:
        factors = {
            "cosine": lambda s: cosine_schedule(s, total_steps, o.lr, o.min_lr, o.warmup_steps) / o.lr,
            "poly": lambda s: poly_factor(s, total_steps, o.poly_power),
            "constant": lambda s: 1.0,
        }
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors[o.scheduler])
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class FinetuneModule(SteppedModule):
    """`pretrained`: a file to load into the encoder now (None: from scratch, or weights a checkpoint
    restores); its load report is kept in the module and the checkpoints."""

    def __init__(
        self,
        config: dict[str, Any] | FinetuneConfig,
        class_names: tuple[str, ...],
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        config_dict = config if isinstance(config, dict) else config_to_dict(config)
        self.save_hyperparameters({"config": config_dict, "class_names": list(class_names)})
        self.config: FinetuneConfig = finetune_config_from_dict(config_dict)
        self.class_names = tuple(class_names)
        self.segmentor = build_segmentor(self.config, len(class_names))
        self.pretrained_report: LoadReport | None = None
        self.pretrained_info: dict[str, Any] | None = None
        if pretrained:
            self.pretrained_report = load_pretrained_encoder(
                self.segmentor.encoder, pretrained, dict(self.config.model.encoder)
            )
            self.pretrained_info = self.pretrained_report.to_dict()
        self.history: list[tuple[int, float, float]] = []  # (step, loss, batch mIoU) of this process's run
        self.start_time = time.monotonic()

    # --- optimisation -------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return build_optimizer(self.config, self.segmentor, self.total_steps())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self.begin_step(batch, batch_idx)
        logits = self.segmentor(batch)
        loss = segmentation_loss(logits, batch["segment"])
        stepped = self.optimize(loss)
        if stepped is None:
            return None
        self._log_step(batch, logits, loss, *stepped)
        return loss.detach()

    # --- logging ------------------------------------------------------------------------------------------
    def _log_step(
        self, batch: dict[str, Any], logits: Tensor, loss: Tensor, grad_norm: Tensor, lr: float
    ) -> None:
        prediction = logits.detach().argmax(-1)
        scores = scores_from_confusion(
            confusion_matrix(prediction, batch["segment"], len(self.class_names)), self.class_names
        )
        loss_value = float(loss.detach())
        batch_miou = scores.miou if not math.isnan(scores.miou) else 0.0
        self.history.append((self.global_step, loss_value, batch_miou))
        batch_size = len(batch.get("name", [])) or 1
        self.log("loss", loss_value, prog_bar=True, batch_size=batch_size, logger=False)
        self.log("miou", batch_miou, prog_bar=True, batch_size=batch_size, logger=False)
        step = self.global_step
        if step % self.config.trainer.log_every == 0 or step == 1:
            self._write_scalars(
                {
                    "train/loss": loss_value,
                    "train/batch_miou": batch_miou,
                    "train/batch_allacc": 0.0 if math.isnan(scores.allacc) else scores.allacc,
                    "train/grad_norm": float(grad_norm),
                    "train/lr": lr,
                }
            )
        if step % self.config.trainer.image_every == 0 or step == 1:
            self.log_prediction_picture("train/input|labels|prediction", batch, prediction)

    def log_prediction_picture(
        self, tag: str, batch: dict[str, Any], prediction: Tensor, index: int = 0
    ) -> None:
        """Sample `index` of a batch: colour | ground truth | prediction (points: seen from above)."""
        experiment = getattr(self.logger, "experiment", None) if self.global_rank == 0 else None
        if experiment is None:
            return
        picture = prediction_picture(batch, prediction, len(self.class_names), index)
        experiment.add_image(tag, picture, self.global_step, dataformats="HWC")

    # --- checkpoint extras --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gs3"] = {
            "version": gs3.__version__,
            "kind": CHECKPOINT_KIND,
            "config": config_to_dict(self.config),
            "class_names": list(self.class_names),
            "pretrained": self.pretrained_info,
            **self.step_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.pretrained_info = checkpoint.get("gs3", {}).get("pretrained")


def prediction_picture(batch: dict[str, Any], prediction: Tensor, num_classes: int, index: int = 0) -> Tensor:
    """(H, W', 3) colour | ground truth | prediction of one sample of a batch (points: seen from above)."""
    if "image" in batch:
        return image_panels(batch["image"][index], batch["segment"][index], prediction[index], num_classes)
    offset = batch["offset"].tolist()
    start, end = (offset[index - 1] if index > 0 else 0), offset[index]
    return point_panels(
        batch["coord"][start:end],
        batch["color"][start:end],
        batch["segment"][start:end],
        prediction[start:end],
        num_classes,
    )
