"""Segmentation pictures: label colours, the top-down view (highest point wins, gaps filled, no wrap)."""

from __future__ import annotations

import torch

from gs3.downstream.pictures import colorize_labels, image_panels, palette, top_down


def test_palette_colours_are_distinct_and_ignored_is_black():
    colors = palette(20)
    assert len({tuple(c.tolist()) for c in colors}) == 20
    labels = torch.tensor([[0, -1], [19, 25]])
    out = colorize_labels(labels, 20)
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[0, 0], colors[0]) and torch.equal(out[1, 0], colors[19])
    assert torch.equal(out[0, 1], torch.zeros(3)) and torch.equal(out[1, 1], torch.zeros(3))


def test_top_down_shows_the_highest_point_of_each_pixel():
    coord = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    image = top_down(coord, colors, size=4, fill=0)
    assert torch.equal(image[3, 0], colors[1])  # (0, 0): the higher (green) point; y is up in the picture
    assert torch.equal(image[0, 3], colors[2])
    assert int((image != 1).any(-1).sum()) == 2  # nothing else drawn without filling


def test_top_down_fills_gaps_from_neighbours_without_wrapping():
    coord = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image = top_down(coord, colors, size=8, fill=1)
    # one round grows each point into its 2×2 neighbourhood inside the picture (the directions run one
    # after the other), and nothing wraps around to the opposite edge
    red, blue = (image == colors[0]).all(-1), (image == colors[1]).all(-1)
    assert red.sum() == 4 and red[6:, :2].all() and blue.sum() == 4 and blue[:2, 6:].all()


def test_image_panels_put_image_labels_and_prediction_side_by_side():
    image = torch.rand(4, 5, 3)
    labels = torch.zeros(4, 5, dtype=torch.long)
    panels = image_panels(image, labels, labels, num_classes=3)
    assert panels.shape == (4, 15, 3)
    assert torch.equal(panels[:, :5], image) and torch.equal(panels[:, 5:10], panels[:, 10:])
