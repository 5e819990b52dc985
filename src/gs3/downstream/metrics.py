"""Semantic-segmentation scores from a confusion matrix: mIoU, mAcc, allAcc and per-class IoU / accuracy.

The confusion matrix counts (ground truth, prediction) pairs: row = true class, column = predicted class.
Points or pixels whose label is the ignore index (-1) are not counted. From it, per class c:

    intersection_c = C[c, c],  target_c = Σ_j C[c, j],  predicted_c = Σ_i C[i, c]
    IoU_c = intersection_c / (target_c + predicted_c − intersection_c),  Acc_c = intersection_c / target_c

Convention for classes that do not occur (the one Pointcept's SemSegTester and torchmetrics' macro averages
use): a class absent from BOTH the ground truth and the predictions has no IoU and is left out of the mIoU;
a class absent from the ground truth has no accuracy and is left out of the mAcc. A class that is predicted
but absent from the ground truth has IoU 0 and counts. allAcc = Σ intersection / Σ target. With no scored
point at all every mean is NaN (JSON: null). Scores are fractions in [0, 1]; tables print percentages.
torchmetrics' macro averages agree (MulticlassJaccardIndex, and MulticlassAccuracy as long as every predicted
class is labelled somewhere: it scores a predicted-but-unlabelled class's accuracy 0 and counts it, where
Pointcept, and gs3, leave it out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from gs3.errors import DataError

IGNORE_INDEX = -1  # Pointcept's value; the one ignore label of every gs3 downstream dataset


def confusion_matrix(
    prediction: Int[Tensor, " *n"],
    target: Int[Tensor, " *n"],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> Int[Tensor, "k k"]:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction; ignored targets
    are skipped. A label or prediction outside 0..num_classes-1 (other than the ignore index) raises."""
    if prediction.shape != target.shape:
        raise DataError(
            f"prediction {tuple(prediction.shape)} and labels {tuple(target.shape)} differ in shape"
        )
    prediction, target = prediction.reshape(-1).long(), target.reshape(-1).long()
    valid = target != ignore_index
    prediction, target = prediction[valid], target[valid]
    for name, values in (("label", target), ("prediction", prediction)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)][0]
            raise DataError(f"{name} {int(bad)} is outside the {num_classes} classes (0..{num_classes - 1})")
    flat = target * num_classes + prediction
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _mean(values: Sequence[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else math.nan


@dataclass
class SegmentationScores:
    """Scores of one evaluation. Per-class lists hold None where the class has no score (see the module)."""

    miou: float
    macc: float
    allacc: float
    iou_per_class: list[float | None]
    acc_per_class: list[float | None]
    confusion: Int[Tensor, "k k"]
    class_names: tuple[str, ...]

    @property
    def num_scored(self) -> int:
        return int(self.confusion.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None (null); per-class scores are keyed by class name."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "miou": clean(self.miou),
            "macc": clean(self.macc),
            "allacc": clean(self.allacc),
            "iou_per_class": dict(zip(self.class_names, self.iou_per_class)),
            "acc_per_class": dict(zip(self.class_names, self.acc_per_class)),
            "num_scored": self.num_scored,
            "classes": list(self.class_names),
            "confusion_matrix": self.confusion.tolist(),
        }

    def table(self) -> str:
        """A readable per-class table (percentages) with the means underneath."""
        width = max(12, *(len(name) for name in self.class_names))
        target = self.confusion.sum(1).tolist()
        predicted = self.confusion.sum(0).tolist()
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'Acc %':>7}  {'labelled':>10}  {'predicted':>10}"]
        for index, name in enumerate(self.class_names):
            iou, acc = self.iou_per_class[index], self.acc_per_class[index]
            lines.append(
                f"{name:<{width}}  {_percent(iou):>7}  {_percent(acc):>7}  "
                f"{target[index]:>10}  {predicted[index]:>10}"
            )
        present = sum(value is not None for value in self.iou_per_class)
        lines.append(
            f"mIoU {_percent(self.miou)}  mAcc {_percent(self.macc)}  allAcc {_percent(self.allacc)}  "
            f"({self.num_scored} points/pixels scored; {present} of {len(self.class_names)} classes in the "
            "labels or predictions, the others have no IoU and are left out of the mean)"
        )
        return "\n".join(lines) + "\n"

    def confusion_csv(self) -> str:
        """The confusion matrix as CSV: rows = ground truth, columns = prediction, with class names."""
        header = "ground_truth\\prediction," + ",".join(self.class_names)
        rows = [
            f"{name}," + ",".join(str(int(v)) for v in row)
            for name, row in zip(self.class_names, self.confusion.tolist())
        ]
        return "\n".join([header, *rows]) + "\n"


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def scores_from_confusion(confusion: Int[Tensor, "k k"], class_names: Sequence[str]) -> SegmentationScores:
    """mIoU, mAcc, allAcc and per-class scores from a confusion matrix (rows = ground truth)."""
    confusion = confusion.detach().cpu().long()
    if tuple(confusion.shape) != (len(class_names), len(class_names)):
        raise DataError(f"confusion matrix {tuple(confusion.shape)} does not fit {len(class_names)} classes")
    intersection = confusion.diag().tolist()
    target = confusion.sum(1).tolist()
    predicted = confusion.sum(0).tolist()
    iou = [_ratio(i, t + p - i) for i, t, p in zip(intersection, target, predicted)]
    acc = [_ratio(i, t) for i, t in zip(intersection, target)]
    allacc = _ratio(sum(intersection), sum(target))
    return SegmentationScores(
        miou=_mean(iou),
        macc=_mean(acc),
        allacc=math.nan if allacc is None else allacc,
        iou_per_class=iou,
        acc_per_class=acc,
        confusion=confusion,
        class_names=tuple(class_names),
    )


class ConfusionAccumulator:
    """Sums confusion matrices over batches; `scores()` at the end."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX) -> None:
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(len(self.class_names), len(self.class_names), dtype=torch.long)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        self.confusion += confusion_matrix(prediction, target, len(self.class_names), self.ignore_index)

    def scores(self) -> SegmentationScores:
        return scores_from_confusion(self.confusion, self.class_names)
