"""From a labelled image to a training or evaluation sample (2D segmentation with the ResNet-50 encoder).

The training recipe is the usual one of image segmentation codebases (mmsegmentation's RandomResize /
RandomCrop / RandomFlip / PhotoMetricDistortion), at the frame size ``image_size`` (320×240 by default, the
paper's pre-training resolution), each step drawing from the sample's generator:
  1. random rescale by a factor uniform in ``scale`` ([0.5, 2.0]): colour bilinear (antialiased when
     shrinking), labels nearest (the source pixel containing the target pixel's centre, as for depth);
  2. random crop back to ``image_size``; where the rescaled image is smaller it is padded (colour 0, label
     IGNORE_INDEX);
  3. horizontal flip with probability ``flip_p``;
  4. photometric distortion, each with probability ``photometric_p``: brightness (add a value uniform in
     ±``brightness``), contrast (blend with the image's mean grey by a factor in ``contrast``), saturation
     (blend with the pixel's grey by a factor in ``saturation``), clipped to [0, 1]. (mmsegmentation also
     shifts hue; left out.)
Evaluation: the frame as read, at ``image_size``, scored at that resolution (no resampling of predictions).
Under the limited-annotation protocol, the labels are thinned before the augmentation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gs3.data.transforms import nearest_source_indices
from gs3.downstream.data.classes import IGNORE_INDEX
from gs3.downstream.data.config import DownstreamDataConfig
from gs3.downstream.data.protocols import keep_labels
from gs3.downstream.data.samples import LabelledImage

GREY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as Pillow's "L" conversion


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) → (h, w, 3) bilinear with half-pixel centres, antialiased when shrinking."""
    width, height = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height < image.shape[0] or width < image.shape[1]
    resized = F.interpolate(
        image.permute(2, 0, 1)[None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
        antialias=shrinking,
    )
    return resized[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous()


def resize_labels(segment: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour (source pixel containing the target pixel's centre) to size = (w, h)."""
    rows = torch.from_numpy(nearest_source_indices(segment.shape[0], size[1]))
    cols = torch.from_numpy(nearest_source_indices(segment.shape[1], size[0]))
    return segment[rows[:, None], cols[None, :]]


def grey(image: torch.Tensor) -> torch.Tensor:
    return (image * GREY_WEIGHTS.to(image.dtype)).sum(-1, keepdim=True)


class ImageTransform:
    """``transform(labelled_image, rng, labelled)`` → {"image", "segment", "name"} (see the module doc)."""

    def __init__(self, config: DownstreamDataConfig, train: bool) -> None:
        self.config = config
        self.train = train

    def __call__(
        self, sample: LabelledImage, rng: np.random.Generator, labelled: np.ndarray | None = None
    ) -> dict:
        image, segment = sample.image, sample.segment
        if labelled is not None:
            segment = keep_labels(segment, labelled)
        if self.train and self.config.image_augment.enabled:
            image, segment = self._augment(image, segment, rng)
        return {"image": image.contiguous(), "segment": segment.contiguous(), "name": sample.name}

    def _augment(
        self, image: torch.Tensor, segment: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.config.image_augment
        width, height = self.config.image_size
        factor = float(rng.uniform(a.scale[0], a.scale[1]))
        scaled = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        image, segment = resize_image(image, scaled), resize_labels(segment, scaled)
        pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
        if pad_h or pad_w:
            image = F.pad(image.permute(2, 0, 1), (0, pad_w, 0, pad_h), value=0.0).permute(1, 2, 0)
            segment = F.pad(segment, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(rng.integers(0, image.shape[0] - height + 1))
        left = int(rng.integers(0, image.shape[1] - width + 1))
        image = image[top : top + height, left : left + width]
        segment = segment[top : top + height, left : left + width]
        if rng.random() < a.flip_p:
            image, segment = image.flip(1), segment.flip(1)
        if rng.random() < a.photometric_p:
            image = image + float(rng.uniform(-a.brightness, a.brightness))
        if rng.random() < a.photometric_p:
            image = torch.lerp(grey(image).mean().expand_as(image), image, float(rng.uniform(*a.contrast)))
        if rng.random() < a.photometric_p:
            image = torch.lerp(grey(image).expand_as(image), image, float(rng.uniform(*a.saturation)))
        return image.clamp(0.0, 1.0), segment
