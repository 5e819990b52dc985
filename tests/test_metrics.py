"""Segmentation metrics against hand-computed confusion matrices and against torchmetrics."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from gs3.downstream.metrics import (
    IGNORE_INDEX,
    ConfusionAccumulator,
    confusion_matrix,
    scores_from_confusion,
)
from gs3.errors import DataError

NAMES = ("wall", "floor", "chair", "table")


def test_hand_computed_confusion_and_scores():
    # ground truth / prediction pairs, written out: (0,0) ×3, (0,1) ×1, (1,1) ×2, (2,0) ×1, (2,2) ×1,
    # plus two ignored points whose predictions must not count; class 3 (table) occurs nowhere.
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, -1, -1])
    prediction = torch.tensor([0, 0, 0, 1, 1, 1, 0, 2, 3, 2])
    expected = torch.tensor([[3, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    confusion = confusion_matrix(prediction, target, 4)
    assert torch.equal(confusion, expected)
    scores = scores_from_confusion(confusion, NAMES)
    # IoU: wall 3/(4+4-3)=3/5, floor 2/(2+3-2)=2/3, chair 1/(2+1-1)=1/2, table: absent → no IoU
    assert scores.iou_per_class == pytest.approx([3 / 5, 2 / 3, 1 / 2, None])
    assert scores.miou == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert scores.acc_per_class == pytest.approx([3 / 4, 1.0, 1 / 2, None])
    assert scores.macc == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert scores.allacc == pytest.approx(6 / 8)
    assert scores.num_scored == 8


def test_a_class_predicted_but_absent_from_the_labels_counts_with_iou_zero():
    target = torch.tensor([0, 0, 1, 1])
    prediction = torch.tensor([0, 3, 1, 1])  # table predicted once, never labelled
    scores = scores_from_confusion(confusion_matrix(prediction, target, 4), NAMES)
    assert scores.iou_per_class == pytest.approx([1 / 2, 1.0, None, 0.0])
    assert scores.miou == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert scores.acc_per_class[3] is None  # no labelled table: no accuracy, not in the mAcc
    assert scores.macc == pytest.approx((1 / 2 + 1) / 2)


def test_a_labelled_class_never_predicted_has_iou_and_accuracy_zero():
    target = torch.tensor([0, 0, 2, 2])
    prediction = torch.tensor([0, 0, 0, 0])  # chair never predicted ("empty prediction" for a class)
    scores = scores_from_confusion(confusion_matrix(prediction, target, 4), NAMES)
    assert scores.iou_per_class == pytest.approx([1 / 2, None, 0.0, None])
    assert scores.acc_per_class == pytest.approx([1.0, None, 0.0, None])
    assert scores.miou == pytest.approx(1 / 4)
    assert scores.allacc == pytest.approx(1 / 2)


def test_nothing_to_score_gives_nan_means_and_json_nulls():
    for prediction, target in [
        (torch.tensor([1, 2]), torch.tensor([IGNORE_INDEX, IGNORE_INDEX])),  # every label ignored
        (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)),  # no points at all
    ]:
        scores = scores_from_confusion(confusion_matrix(prediction, target, 4), NAMES)
        assert math.isnan(scores.miou) and math.isnan(scores.macc) and math.isnan(scores.allacc)
        data = json.loads(json.dumps(scores.to_dict()))
        assert data["miou"] is None and data["iou_per_class"] == dict.fromkeys(NAMES)
        assert "-" in scores.table()


def test_out_of_range_labels_and_shape_mismatch_raise_one_line():
    for prediction, target, needle in [
        (torch.tensor([0, 1]), torch.tensor([0, 4]), "label 4 is outside the 4 classes"),
        (torch.tensor([0, 7]), torch.tensor([0, 1]), "prediction 7 is outside"),
        (torch.tensor([0, 1]), torch.tensor([0, -2]), "label -2"),
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1]), "differ in shape"),
    ]:
        with pytest.raises(DataError, match=needle) as error:
            confusion_matrix(prediction, target, 4)
        assert "\n" not in str(error.value)


def test_table_and_csv_name_every_class():
    scores = scores_from_confusion(torch.tensor([[5, 1], [2, 7]]), ("wall", "floor"))
    table = scores.table()
    assert "wall" in table and "floor" in table and f"{100 * 5 / 8:.2f}" in table
    csv = scores.confusion_csv().splitlines()
    assert csv[0].endswith(",wall,floor") and csv[1] == "wall,5,1" and csv[2] == "floor,2,7"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_torchmetrics(seed):
    num_classes = 8
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (5000,), generator=generator)
    # Make some classes rare or absent: class 6 never labelled, class 7 neither labelled nor predicted.
    target[target == 6] = 0
    target[target == 7] = 1
    prediction = torch.where(
        torch.rand(5000, generator=generator) < 0.6, target, torch.randint(0, 7, (5000,), generator=generator)
    )
    target[torch.rand(5000, generator=generator) < 0.1] = IGNORE_INDEX
    names = tuple(f"c{i}" for i in range(num_classes))

    # accumulate in uneven batches; the sum is the one-shot matrix
    accumulator = ConfusionAccumulator(names)
    for chunk in torch.tensor_split(torch.arange(5000), [7, 1000, 3333]):
        accumulator.update(prediction[chunk], target[chunk])
    scores = accumulator.scores()

    kwargs = {"num_classes": num_classes, "ignore_index": IGNORE_INDEX}
    reference_confusion = MulticlassConfusionMatrix(**kwargs)(prediction, target)
    assert torch.equal(scores.confusion, reference_confusion)
    reference_iou = MulticlassJaccardIndex(average="none", **kwargs)(prediction, target)
    present = [i for i, iou in enumerate(scores.iou_per_class) if iou is not None]
    assert present == list(range(7))  # class 7 is absent from both
    ours = torch.tensor([scores.iou_per_class[i] for i in present], dtype=torch.float64)
    torch.testing.assert_close(ours, reference_iou[:7].double(), rtol=0, atol=1e-6)
    macro_iou = MulticlassJaccardIndex(average="macro", **kwargs)(prediction, target)
    assert scores.miou == pytest.approx(float(macro_iou), abs=1e-6)
    # Accuracy (recall) per class; class 6 is predicted but never labelled: it has no accuracy here
    # (Pointcept's mAcc averages over labelled classes), whereas torchmetrics' macro average counts it as 0.
    reference_acc = MulticlassAccuracy(average="none", **kwargs)(prediction, target)
    assert [i for i, acc in enumerate(scores.acc_per_class) if acc is not None] == list(range(6))
    ours = torch.tensor(scores.acc_per_class[:6], dtype=torch.float64)
    torch.testing.assert_close(ours, reference_acc[:6].double(), rtol=0, atol=1e-6)
    assert scores.macc == pytest.approx(float(reference_acc[:6].mean()), abs=1e-6)
    # Without such a class the two conventions agree: compare with torchmetrics' macro average directly.
    labelled = prediction != 6
    same = scores_from_confusion(confusion_matrix(prediction[labelled], target[labelled], 8), names)
    macro_acc = MulticlassAccuracy(average="macro", **kwargs)(prediction[labelled], target[labelled])
    assert same.macc == pytest.approx(float(macro_acc), abs=1e-6)
    micro_acc = MulticlassAccuracy(average="micro", **kwargs)(prediction, target)
    assert scores.allacc == pytest.approx(float(micro_acc), abs=1e-6)
