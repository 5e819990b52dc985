"""`finetune(config)` and `evaluate_checkpoint(path)`: fine-tuning runs and their evaluation.

`finetune` trains a Segmentor on the runner machinery of pre-training (Lightning; atomic step checkpoints
with `last.ckpt`, exact `--resume`, progress bar, TensorBoard: loss, batch mIoU, lr, gradient norm,
prediction pictures, and at each validation val/miou, val/macc, val/allacc, per-class IoU, pictures and
point-cloud snapshots), then scores the final weights on the validation split (gs3.train.evaluation) and
writes metrics.json, metrics.txt and confusion_matrix.csv into the run folder. It returns what
metrics.json holds, so benchmark scripts can call it in-process:

    from gs3.downstream.config import load_finetune_config
    from gs3.train.finetune import finetune
    metrics = finetune(load_finetune_config("demo_semseg_spunet_synthetic"), pretrained="encoder.pth")
    metrics["miou"], metrics["iou_per_class"]["wall"]

Run folder (default runs/<config name>): config.yaml, checkpoints/ (step-*.ckpt, last.ckpt), tensorboard/,
pretrained.json (what loading the pre-trained weights did), metrics.*. Evaluation runs on global rank 0.
`evaluate_checkpoint` rebuilds the segmentor from a fine-tuning checkpoint (its config, with overrides: e.g.
another `data.root` or `data.val_split`) and writes the same three files (default: <run>/evaluation/).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from gs3.downstream.config import FinetuneConfig, finetune_config_from_dict
from gs3.downstream.metrics import SegmentationScores
from gs3.errors import GS3Error
from gs3.train.checkpoint import LAST_NAME, atomic_write_text, load_checkpoint
from gs3.train.evaluation import evaluate_segmentor, summary_line, write_metrics
from gs3.train.finetune_data import FinetuneDataModule, evaluation_loader
from gs3.train.finetune_module import CHECKPOINT_KIND, FinetuneModule, build_segmentor, prediction_picture
from gs3.train.runner import (
    StepCheckpoint,
    build_trainer,
    close_distributed,
    prepare_run_folder,
    quiet_lightning_warnings,
    resolve_out_dir,
    resolve_precision,
    resolve_resume,
)

COMMAND = "gs3 finetune"


class Validation(Callback):
    """Scores the validation split every `evaluation.every` optimizer steps (global rank 0; the others wait)
    and logs val/* scalars, prediction pictures and point-cloud snapshots; `run` is also called at the end."""

    def __init__(self, datamodule: FinetuneDataModule, config: FinetuneConfig, class_names: tuple[str, ...]):
        self.datamodule = datamodule
        self.config = config
        self.class_names = class_names
        self.last_step = -1
        self.statistics_step = -1  # the step whose BatchNorm statistics were last recomputed
        self.skipped: Counter = Counter()  # bad validation samples replaced, in the latest validation

    def recompute_statistics(self, trainer: L.Trainer, module: Any) -> None:
        """Precise BatchNorm before evaluating (evaluation.precise_bn_batches > 0), once per step."""
        if self.config.evaluation.precise_bn_batches <= 0 or self.statistics_step == trainer.global_step:
            return
        from gs3.train.evaluation import recompute_batchnorm

        recompute_batchnorm(
            module.segmentor,
            self.datamodule.statistics_loader(),
            trainer.strategy.root_device,
            resolve_precision(self.config),
            self.config.evaluation.precise_bn_batches,
        )
        self.statistics_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before StepCheckpoint writes the last checkpoint (this callback comes first), so the checkpoint
        # holds the statistics the final evaluation uses and `gs3 evaluate` scores the same.
        if trainer.is_global_zero:
            self.recompute_statistics(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        every, step = self.config.evaluation.every, trainer.global_step
        if every > 0 and step > 0 and step % every == 0 and step != self.last_step:
            if trainer.is_global_zero:
                self.run(trainer, pl_module, self.config.evaluation.max_batches)
            trainer.strategy.barrier("gs3-validation")
            self.last_step = step

    def run(self, trainer: L.Trainer, module: Any, max_batches: int = 0) -> SegmentationScores:
        experiment = getattr(trainer.logger, "experiment", None)
        step, snapshots = trainer.global_step, self.config.evaluation.snapshots
        num_classes = len(self.class_names)

        def snapshot(index: int, batch: dict[str, Any], prediction: torch.Tensor) -> None:
            if experiment is None or index >= snapshots:
                return
            picture = prediction_picture(batch, prediction, num_classes)
            experiment.add_image(f"val/{index}/input|labels|prediction", picture, step, dataformats="HWC")
            if "coord" in batch:
                end = int(batch["offset"][0])
                from gs3.downstream.pictures import colorize_labels

                colors = (colorize_labels(prediction[:end], num_classes) * 255).to(torch.uint8)
                experiment.add_mesh(
                    f"val/{index}/prediction",
                    vertices=batch["coord"][None, :end].float().cpu(),
                    colors=colors[None],
                    global_step=step,
                )

        self.recompute_statistics(trainer, module)
        self.skipped = Counter()
        scores = evaluate_segmentor(
            module.segmentor,
            self.datamodule.evaluation_loader(),
            self.class_names,
            trainer.strategy.root_device,
            resolve_precision(self.config),
            max_batches,
            snapshot,
            skipped=self.skipped,
        )
        if trainer.logger is not None:
            scalars = {"val/miou": scores.miou, "val/macc": scores.macc, "val/allacc": scores.allacc}
            scalars |= {
                f"val_iou/{n}": v for n, v in zip(self.class_names, scores.iou_per_class) if v is not None
            }
            trainer.logger.log_metrics({k: v for k, v in scalars.items() if not math.isnan(v)}, step=step)
        return scores


def finetune(
    config: FinetuneConfig,
    pretrained: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """Fine-tune (or continue), then evaluate the final weights; returns metrics.json's content (global
    rank 0 prints the summary). `pretrained` overrides `config.pretrained`."""
    from gs3.downstream.data import class_set

    if pretrained is not None:
        config = dataclasses.replace(config, pretrained=str(pretrained))
    out = resolve_out_dir(config, out_dir)
    checkpoint_dir = out / "checkpoints"
    ckpt_path = resolve_resume(resume, checkpoint_dir, COMMAND)
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    quiet_lightning_warnings()
    # Linear probing keeps the encoder in eval mode on purpose (frozen BatchNorm statistics).
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    class_names = class_set(config.data.classes).names

    # Resuming restores every weight from the checkpoint: the pre-trained file is not read again.
    module = FinetuneModule(
        config, class_names, pretrained=None if ckpt_path else (config.pretrained or None)
    )
    datamodule = FinetuneDataModule(config)
    checkpointer = StepCheckpoint(
        checkpoint_dir, config.trainer.checkpoint_every, config.trainer.keep_checkpoints
    )
    validation = Validation(datamodule, config, class_names)
    trainer = build_trainer(config, out, [validation, checkpointer])  # validation first: see on_train_end
    prepare_run_folder(trainer, out, checkpoint_dir, config)
    if trainer.is_global_zero and module.pretrained_report is not None:
        print("\n".join(f"{COMMAND}: {line}" for line in module.pretrained_report.lines()), flush=True)
        atomic_write_text(json.dumps(module.pretrained_info, indent=2) + "\n", out / "pretrained.json")
    elif trainer.is_global_zero and not ckpt_path:
        frozen = (
            " and stays frozen (linear probing of random features)"
            if config.model.mode == "linear_probe"
            else ""
        )
        print(f"{COMMAND}: no pre-trained weights: the encoder starts from scratch{frozen}", flush=True)

    start = time.monotonic()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    train_seconds = time.monotonic() - start
    result: dict[str, Any] = {}
    if trainer.is_global_zero:
        start = time.monotonic()
        scores = validation.run(trainer, module)
        run = {
            "command": COMMAND,
            "config": config.name,
            "steps": trainer.global_step,
            "train_seconds": round(train_seconds, 2),
            "eval_seconds": round(time.monotonic() - start, 2),
            "pretrained": module.pretrained_info,
            "mode": config.model.mode,
            "checkpoint": str(checkpoint_dir / LAST_NAME) if checkpointer.last_path else None,
            "nonfinite_skipped": module.nonfinite_total,
            "bad_samples": dict(module.skipped_data),
            "val_bad_samples": dict(validation.skipped),
            "val_samples": len(datamodule.val_dataset),
            "out_dir": str(out),
        }
        result = write_metrics(scores, out, {"run": run})
        history = module.history
        losses = f"; loss {history[0][1]:.4f} -> {history[-1][1]:.4f}" if history else ""
        minutes, seconds = divmod(round(train_seconds), 60)
        print(f"{COMMAND}: {trainer.global_step} steps in {minutes}m{seconds:02d}s{losses}", flush=True)
        print(summary_line(COMMAND, scores, out, dict(validation.skipped)), flush=True)
    if trainer.world_size > 1:
        result = trainer.strategy.broadcast(result, src=0)
    close_distributed()
    return result


def default_evaluation_dir(checkpoint: Path) -> Path:
    """<run>/evaluation for a checkpoint in <run>/checkpoints/, else <stem>_evaluation/ beside it."""
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "evaluation"
    return checkpoint.with_name(f"{checkpoint.stem}_evaluation")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a fine-tuning checkpoint on its config's validation split (with overrides); write and return
    metrics.json's content."""
    from gs3.downstream.data import build_downstream_dataset, class_set, prepare_downstream_data

    path = Path(checkpoint)
    loaded = load_checkpoint(path)
    extras = loaded["gs3"]
    if extras.get("kind") != CHECKPOINT_KIND:
        raise GS3Error(f"{path}: a pre-training checkpoint; gs3 evaluate takes a gs3 finetune checkpoint")
    config = finetune_config_from_dict(extras["config"], f"{path} config", overrides)
    class_names = tuple(extras.get("class_names") or class_set(config.data.classes).names)
    if class_set(config.data.classes).names != class_names:
        raise GS3Error(f"data.classes={config.data.classes}: the checkpoint was trained on other classes")
    segmentor = build_segmentor(config, len(class_names))
    prefix = "segmentor."
    weights = {k[len(prefix) :]: v for k, v in loaded["state_dict"].items() if k.startswith(prefix)}
    segmentor.load_state_dict(weights)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    segmentor.to(target)
    prepare_downstream_data(config.data)
    dataset = build_downstream_dataset(config.data, "val", config.trainer.seed)
    start = time.monotonic()
    # as training resolves it: "auto" (and bf16-mixed) → bf16 autocast on a GPU, full precision elsewhere
    bf16 = config.trainer.precision in ("auto", "bf16-mixed") and target.type == "cuda"
    precision = "bf16-mixed" if bf16 else "32-true"
    skipped: Counter = Counter()
    scores = evaluate_segmentor(
        segmentor,
        evaluation_loader(dataset, config),
        class_names,
        target,
        precision,
        progress=progress,
        skipped=skipped,
    )
    out = Path(out_dir) if out_dir else default_evaluation_dir(path)
    run = {
        "command": "gs3 evaluate",
        "checkpoint": str(path.resolve()),
        "step": int(extras.get("step", 0)),
        "overrides": list(overrides),
        "val_samples": len(dataset),
        "val_bad_samples": dict(skipped),
        "eval_seconds": round(time.monotonic() - start, 2),
        "device": str(target),
    }
    result = write_metrics(scores, out, {"run": run})
    print(summary_line("gs3 evaluate", scores, out, dict(skipped)), flush=True)
    return result
