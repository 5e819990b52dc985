"""Scoring a segmentor on labelled data, and the files an evaluation writes.

Scores are taken on the ORIGINAL points or pixels: for a point batch that carries `inverse` (every original
point's row among the grid-sampled points), the prediction of a sampled point is carried to every original
point it represents and compared with `origin_segment`; otherwise (images, or point batches without an
inverse) predictions are compared with `segment` as they are. One forward pass per validation sample, as
Pointcept's SemSegEvaluator does during training (no test-time augmentation or fragment voting).

Files (written atomically into the output folder): metrics.json (miou, macc, allacc, iou_per_class,
acc_per_class, classes, confusion_matrix, plus what produced them), metrics.txt (a readable table) and
confusion_matrix.csv (rows = ground truth, columns = prediction).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gs3.downstream.metrics import ConfusionAccumulator, SegmentationScores
from gs3.downstream.segmentor import Segmentor
from gs3.train.checkpoint import atomic_write_text

METRICS_JSON, METRICS_TABLE, CONFUSION_CSV = "metrics.json", "metrics.txt", "confusion_matrix.csv"


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def autocast_context(device: torch.device, precision: str) -> Any:
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def scored_prediction(batch: dict[str, Any], prediction: Tensor) -> tuple[Tensor, Tensor]:
    """(prediction, labels) on the original points/pixels of a batch."""
    if "inverse" in batch:
        return prediction[batch["inverse"]], batch["origin_segment"]
    return prediction, batch["segment"]


@torch.no_grad()
def evaluate_segmentor(
    segmentor: Segmentor,
    batches: Iterable[dict[str, Any]],
    class_names: tuple[str, ...],
    device: torch.device | str = "cpu",
    precision: str = "32-true",
    max_batches: int = 0,
    on_batch: Callable[[int, dict[str, Any], Tensor], None] | None = None,
    progress: bool = False,
    skipped: Counter | None = None,
) -> SegmentationScores:
    """Confusion-matrix scores of `segmentor` over `batches` (all, or the first `max_batches`).
    `on_batch(index, batch, prediction)` sees each batch with its predictions (for pictures); `skipped`
    collects the batches' counts of bad samples the dataset replaced (reason → count)."""
    device = torch.device(device)
    was_training = segmentor.training
    segmentor.eval()
    accumulator = ConfusionAccumulator(class_names)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="evaluating", unit="batch", leave=False)
    try:
        for index, batch in enumerate(batches):
            if max_batches and index >= max_batches:
                break
            if skipped is not None:
                skipped.update(batch.get("skipped", {}))
            batch = move_batch(batch, device)
            with autocast_context(device, precision):
                logits = segmentor(batch)
            prediction = logits.argmax(-1)
            scored, labels = scored_prediction(batch, prediction)
            accumulator.update(scored.cpu(), labels.cpu())
            if on_batch is not None:
                on_batch(index, batch, prediction)
    finally:
        segmentor.train(was_training)
    return accumulator.scores()


@torch.no_grad()
def recompute_batchnorm(
    segmentor: Segmentor,
    batches: Iterable[dict[str, Any]],
    device: torch.device | str = "cpu",
    precision: str = "32-true",
    max_batches: int = 16,
) -> int:
    """ "Precise BatchNorm": replace the running statistics of every BatchNorm layer that trains by their
    plain average over `max_batches` training batches (forward passes in training mode, no gradients).

    Pointcept's SR-UNet updates its running statistics with momentum 0.01, so after a short run they still
    carry much of their initial (0, 1) and evaluation, which uses them, lags far behind training: on one
    synthetic room the slim SR-UNet scores 99 % mIoU with batch statistics but 44 % with its running ones
    after 300 steps. Frozen layers (linear probing's encoder) are left alone. Returns the batches used."""
    device = torch.device(device)
    was_training = segmentor.training
    segmentor.train()  # linear probing keeps the encoder in eval mode: its statistics stay frozen
    norms = [
        m for m in segmentor.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
    ]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: the plain mean over the batches seen
    used = 0
    try:
        if norms:
            for batch in batches:
                if used >= max_batches:
                    break
                with autocast_context(device, precision):
                    segmentor(move_batch(batch, device))
                used += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        segmentor.train(was_training)
    return used


def write_metrics(
    scores: SegmentationScores, out_dir: str | os.PathLike, extra: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json, metrics.txt and confusion_matrix.csv in `out_dir`; returns what metrics.json holds."""
    out = Path(out_dir)
    result = scores.to_dict() | extra
    atomic_write_text(json.dumps(result, indent=2, default=str) + "\n", out / METRICS_JSON)
    atomic_write_text(scores.table(), out / METRICS_TABLE)
    atomic_write_text(scores.confusion_csv(), out / CONFUSION_CSV)
    return result


def summary_line(
    command: str, scores: SegmentationScores, where: Path, skipped: dict[str, int] | None = None
) -> str:
    def percent(value: float) -> str:
        return "nan" if value != value else f"{100 * value:.2f}"

    bad = sum((skipped or {}).values())
    replaced = (
        f" ({bad} unreadable validation samples replaced by the next: {dict(skipped or {})})" if bad else ""
    )
    return (
        f"{command}: mIoU {percent(scores.miou)}, mAcc {percent(scores.macc)}, "
        f"allAcc {percent(scores.allacc)} on {scores.num_scored} points/pixels{replaced}; "
        f"{where / METRICS_JSON}"
    )
