"""Pictures of segmentations for TensorBoard: class colours, label maps, top-down views of labelled points."""

from __future__ import annotations

import colorsys

import torch
from jaxtyping import Float, Int
from torch import Tensor

IGNORED_COLOR = (0.0, 0.0, 0.0)  # ignored / unlabelled points and pixels are black


def palette(num_classes: int) -> Float[Tensor, "k 3"]:
    """Distinct colours: hues spaced by the golden ratio, alternating lightness so neighbours differ."""
    colors = []
    for index in range(num_classes):
        hue = (index * 0.618033988749895) % 1.0
        lightness = (0.45, 0.6, 0.35)[index % 3]
        colors.append(colorsys.hls_to_rgb(hue, lightness, 0.75))
    return torch.tensor(colors, dtype=torch.float32)


def colorize_labels(labels: Int[Tensor, " *shape"], num_classes: int) -> Float[Tensor, "*shape 3"]:
    """Class index → colour; the ignore index (or anything outside 0..K-1) → black."""
    table = torch.cat([palette(num_classes), torch.tensor([IGNORED_COLOR])])
    index = labels.detach().long().cpu()
    index = torch.where((index >= 0) & (index < num_classes), index, num_classes)
    return table[index]


def top_down(
    coord: Float[Tensor, "n 3"],
    colors: Float[Tensor, "n 3"],
    size: int = 256,
    ceiling_cut: float = 0.15,
    fill: int = 3,
) -> Float[Tensor, "h w 3"]:
    """Orthographic view from above (z up): each pixel shows the highest point that falls into it.

    A room seen from above is its ceiling: points in the top `ceiling_cut` of the height range are left out
    when the cloud is over 1.5 m tall. Pixels between sparse points take a neighbour's colour (`fill`
    rounds of one-pixel growth), so a grid-sampled cloud reads as surfaces rather than dots."""
    coord, colors = coord.detach().float().cpu(), colors.detach().float().cpu()
    image = torch.ones(size, size, 3)
    if coord.shape[0] == 0:
        return image
    low_z, high_z = float(coord[:, 2].min()), float(coord[:, 2].max())
    if high_z - low_z > 1.5:
        keep = coord[:, 2] <= high_z - ceiling_cut * (high_z - low_z)
        coord, colors = coord[keep], colors[keep]
    low, high = coord[:, :2].amin(0), coord[:, :2].amax(0)
    scale = (size - 1) / float((high - low).max().clamp_min(1e-6))
    pixel = ((coord[:, :2] - low) * scale).long().clamp(0, size - 1)
    flat = (size - 1 - pixel[:, 1]) * size + pixel[:, 0]  # y up in the picture
    order = torch.argsort(coord[:, 2])  # low to high: the highest point of a pixel is written last
    image.view(-1, 3)[flat[order]] = colors[order]
    filled = torch.zeros(size * size, dtype=torch.bool)
    filled[flat] = True
    filled = filled.view(size, size)
    for _ in range(fill):
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            source_filled = torch.roll(filled, (dy, dx), (0, 1))
            # no wrap-around: the row / column that the roll brought in from the other side takes nothing
            source_filled[0 if dy == 1 else -1, :] &= dy == 0
            source_filled[:, 0 if dx == 1 else -1] &= dx == 0
            take = ~filled & source_filled
            image[take] = torch.roll(image, (dy, dx), (0, 1))[take]
            filled = filled | take
    return image


def point_panels(
    coord: Float[Tensor, "n 3"],
    color: Float[Tensor, "n 3"],
    target: Int[Tensor, " n"],
    prediction: Int[Tensor, " n"],
    num_classes: int,
    size: int = 256,
) -> Float[Tensor, "h w3 3"]:
    """Top-down colour | ground truth | prediction, side by side."""
    return torch.cat(
        [
            top_down(coord, color, size),
            top_down(coord, colorize_labels(target, num_classes), size),
            top_down(coord, colorize_labels(prediction, num_classes), size),
        ],
        dim=1,
    )


def image_panels(
    image: Float[Tensor, "h w 3"],
    target: Int[Tensor, "h w"],
    prediction: Int[Tensor, "h w"],
    num_classes: int,
) -> Float[Tensor, "h w3 3"]:
    """Image | ground truth | prediction, side by side."""
    return torch.cat(
        [
            image.detach().float().cpu().clamp(0, 1),
            colorize_labels(target, num_classes),
            colorize_labels(prediction, num_classes),
        ],
        dim=1,
    )
