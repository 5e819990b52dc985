"""Augmentations (gs3.data.augment), grid sampling, sphere crop and the point / image pipelines."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator
from scipy.spatial.transform import Rotation

from gs3.data import augment
from gs3.downstream.data import (
    IGNORE_INDEX,
    DownstreamDataConfig,
    ImageTransform,
    LabelledImage,
    LabelledPoints,
    PointTransform,
    grid_sample,
    sphere_crop,
)
from gs3.downstream.data.config import ImageAugmentConfig, PointAugmentConfig
from gs3.downstream.data.image_transforms import resize_labels
from gs3.downstream.data.point_transforms import center_shift


def room_points(count: int = 4000, seed: int = 0) -> LabelledPoints:
    """Points in a 4 × 3 × 2.5 m box, colour and labels tied to position."""
    rng = np.random.default_rng(seed)
    coord = rng.uniform([1.0, -2.0, 0.3], [5.0, 1.0, 2.8], size=(count, 3)).astype(np.float32)
    color = rng.random((count, 3)).astype(np.float32)
    segment = (np.floor(coord[:, 0]).astype(np.int64) % 5) - (coord[:, 2] > 2.5)  # some -1
    return LabelledPoints.from_numpy("room", coord, color, segment)


def cells(coord: np.ndarray, size: float) -> np.ndarray:
    return np.floor(coord.astype(np.float64) / size).astype(np.int64)


# -- gs3.data.augment ----------------------------------------------------------------------------------------
def test_rotation_matrix_matches_scipy_euler():
    rng = np.random.default_rng(0)
    for angles in rng.uniform(-math.pi, math.pi, size=(5, 3)):
        expected = Rotation.from_euler("xyz", angles).as_matrix()  # extrinsic x, y, z = Rz · Ry · Rx
        np.testing.assert_allclose(augment.rotation_matrix(*angles)[:3, :3], expected, atol=1e-12)
        for axis, angle in zip("xyz", angles):
            np.testing.assert_allclose(
                augment.axis_rotation(axis, angle), Rotation.from_euler(axis, angle).as_matrix(), atol=1e-12
            )


def test_random_axis_rotation_probabilities_and_ranges():
    rng = np.random.default_rng(1)
    assert np.array_equal(augment.random_axis_rotation(rng, p=0.0), np.eye(3))
    z_angles, tilts = [], []
    for _ in range(400):
        rotation = augment.random_axis_rotation(rng, math.pi, math.pi / 64, p=0.5)
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
        z_angles.append(math.atan2(rotation[1, 0], rotation[0, 0]))
        tilts.append(math.acos(np.clip(rotation[2, 2], -1, 1)))  # angle of the rotated z axis
    assert max(tilts) <= math.sqrt(2) * math.pi / 64 + 1e-9
    unrotated = np.mean(np.abs(z_angles) < 1e-12)
    assert 0.4 < unrotated < 0.6  # Z turned with probability 0.5
    assert max(np.abs(z_angles)) > 0.9 * math.pi


def test_scale_flip_jitter():
    rng = np.random.default_rng(2)
    coord = rng.normal(size=(20000, 3)).astype(np.float32)
    scaled = augment.random_scale(rng, coord, 0.9, 1.1)
    ratio = scaled / coord
    assert np.allclose(ratio, ratio[0, 0], rtol=1e-5) and 0.9 <= ratio[0, 0] <= 1.1
    flips = {
        tuple(np.sign(augment.random_flip(rng, coord[:1], 0.5)[0] / coord[0]).astype(int)) for _ in range(64)
    }
    assert flips == {(1, 1, 1), (-1, 1, 1), (1, -1, 1), (-1, -1, 1)}  # z never flipped
    noise = augment.random_jitter(rng, coord, sigma=0.005, clip=0.02).astype(np.float64) - coord
    assert np.abs(noise).max() <= 0.02 + 1e-6
    assert abs(noise.std() - 0.005) < 2e-4
    clipped = augment.random_jitter(rng, coord, sigma=0.05, clip=0.02).astype(np.float64) - coord
    assert np.abs(clipped).max() <= 0.02 + 1e-6 and np.mean(np.abs(clipped) > 0.0199) > 0.6


def scipy_elastic(noise: np.ndarray, coord: np.ndarray, granularity: float, magnitude: float) -> np.ndarray:
    """Pointcept's formulation with scipy (the reference): box-smooth twice, interpolate trilinearly."""
    blur = [np.ones(shape, np.float32) / 3 for shape in ((3, 1, 1, 1), (1, 3, 1, 1), (1, 1, 3, 1))]
    for _ in range(2):
        for kernel in blur:
            noise = ndimage.convolve(noise, kernel, mode="constant", cval=0)
    low = coord.min(0)
    dims = noise.shape[:3]
    axes = [np.linspace(lo - granularity, lo + granularity * (d - 2), d) for lo, d in zip(low, dims)]
    interpolator = RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0)
    return coord + interpolator(coord) * magnitude


def test_elastic_distortion_matches_the_scipy_formulation():
    coord = room_points(3000).coord.numpy().astype(np.float64)
    for granularity, magnitude in ((0.2, 0.4), (0.8, 1.6)):
        ours = augment.elastic_distortion(np.random.default_rng(5), coord, granularity, magnitude)
        dims = ((coord - coord.min(0)).max(0) // granularity).astype(int) + 3
        noise = np.random.default_rng(5).standard_normal((*dims, 3)).astype(np.float32)
        reference = scipy_elastic(noise, coord, granularity, magnitude)
        np.testing.assert_allclose(ours, reference, atol=2e-6)
        assert np.abs(ours - coord).max() > 0.01  # it does move the points


def test_chromatic_augmentations():
    rng = np.random.default_rng(3)
    color = rng.uniform(0.2, 0.6, size=(1000, 3)).astype(np.float32)
    stretched = augment.chromatic_auto_contrast(rng, color, p=1.0, blend=1.0)
    np.testing.assert_allclose(stretched.min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(stretched.max(0), 1.0, atol=1e-6)
    half = augment.chromatic_auto_contrast(rng, color, p=1.0, blend=0.5)
    np.testing.assert_allclose(half, 0.5 * color + 0.5 * stretched, atol=1e-6)
    assert augment.chromatic_auto_contrast(rng, color, p=0.0) is color
    moved = augment.chromatic_translation(rng, color, p=1.0, ratio=0.05) - color
    assert np.allclose(moved, moved[0], atol=1e-6) and np.abs(moved).max() <= 0.05 + 1e-6
    jittered = augment.chromatic_jitter(rng, color, p=1.0, std=0.05)
    assert 0.045 < (jittered - color).std() < 0.055 and jittered.min() >= 0 and jittered.max() <= 1
    assert augment.random_dropout(rng, 100, 0.2, p=0.0) is None
    kept = augment.random_dropout(rng, 100, 0.2, p=1.0)
    assert len(kept) == 80 and len(np.unique(kept)) == 80 and np.all(np.diff(kept) > 0)


# -- grid sampling and sphere crop ---------------------------------------------------------------------------
def test_grid_sample_one_point_per_cell_and_inverse():
    coord = room_points(20000).coord.numpy()
    size = 0.1
    for rng in (None, np.random.default_rng(0)):
        sampled = grid_sample(coord, size, rng)
        chosen = cells(coord[sampled.index], size)
        all_cells = {tuple(c) for c in cells(coord, size)}
        assert len({tuple(c) for c in chosen}) == len(chosen) == len(all_cells)  # one point per occupied cell
        # inverse: every original point's representative lies in its own cell
        np.testing.assert_array_equal(cells(coord[sampled.index[sampled.inverse]], size), cells(coord, size))
    first = grid_sample(coord, size).index
    for cell_points in [
        np.flatnonzero((cells(coord, size) == cells(coord[i : i + 1], size)).all(1)) for i in first[:20]
    ]:
        assert cell_points.min() in first  # without rng: the lowest-index point of each cell
    a, b = (
        grid_sample(coord, size, np.random.default_rng(1)),
        grid_sample(coord, size, np.random.default_rng(2)),
    )
    assert 0 < np.mean(a.index != b.index) and np.array_equal(a.inverse, b.inverse)
    keep = np.array([0, 1, 2, 3, 4, 5000])
    kept = grid_sample(coord, size, np.random.default_rng(1), keep=keep)
    assert set(keep) <= set(kept.index) and kept.inverse is None


def test_sphere_crop_keeps_the_nearest_points():
    coord = room_points(5000).coord.numpy()
    index = sphere_crop(coord, 1000, np.random.default_rng(0))
    assert len(index) == 1000 == len(np.unique(index))
    # the kept set is a ball around the drawn point (the generator's first draw): every kept point is nearer
    # to it than every dropped one
    dropped = np.setdiff1d(np.arange(5000), index)
    centre = coord[np.random.default_rng(0).integers(5000)]
    d_kept = np.linalg.norm(coord[index] - centre, axis=1)
    d_dropped = np.linalg.norm(coord[dropped] - centre, axis=1)
    assert d_kept.max() <= d_dropped.min() + 1e-6
    np.testing.assert_array_equal(sphere_crop(coord, 6000, np.random.default_rng(0)), np.arange(5000))


# -- point pipeline ------------------------------------------------------------------------------------------
def test_train_pipeline_gives_one_point_per_encoder_voxel_and_is_seeded():
    points = room_points(30000)
    config = DownstreamDataConfig(grid_size=0.05, sphere_crop=2000)
    transform = PointTransform(config, train=True)
    sample = transform(points, np.random.default_rng(7))
    coord = sample["coord"].numpy()
    assert sample["coord"].dtype == torch.float32 and sample["segment"].dtype == torch.int64
    assert len(coord) == 2000 == len(sample["color"]) == len(sample["segment"])
    assert len(np.unique(cells(coord, 0.05), axis=0)) == len(coord)  # the encoder's floor(coord / voxel)
    assert abs(coord[:, 0].min() + coord[:, 0].max()) / 2 <= 0.025 + 1e-6  # x centred to half a cell
    assert set(sample["segment"].tolist()) <= set(points.segment.tolist())
    again = transform(points, np.random.default_rng(7))
    assert all(torch.equal(sample[k], again[k]) for k in ("coord", "color", "segment"))
    other = transform(points, np.random.default_rng(8))
    assert not torch.equal(sample["coord"], other["coord"])


def test_train_pipeline_keeps_labels_with_their_points():
    """With geometric augmentation only, labels still follow their points: undo nothing, but check that each
    output point's label is the label of an input point of the same colour (colour is a point's identity)."""
    points = room_points(5000)
    off = PointAugmentConfig(auto_contrast_p=0, color_translation_p=0, color_jitter_p=0)
    sample = PointTransform(DownstreamDataConfig(grid_size=0.05, point_augment=off), True)(
        points, np.random.default_rng(3)
    )
    by_colour = {tuple(c): s for c, s in zip(points.color.numpy().tolist(), points.segment.tolist())}
    assert all(by_colour[tuple(c)] == s for c, s in zip(sample["color"].tolist(), sample["segment"].tolist()))


def test_limited_annotation_points_survive_dropout_and_grid_sampling():
    points = room_points(20000)
    config = DownstreamDataConfig(
        grid_size=0.2, sphere_crop=0, point_augment=PointAugmentConfig(dropout_p=1.0)
    )
    labelled = np.random.default_rng(0).choice(20000, 50, replace=False)
    sample = PointTransform(config, True)(points, np.random.default_rng(4), labelled)
    expected = np.sort(points.segment.numpy()[labelled])
    expected = expected[expected != IGNORE_INDEX]
    got = sample["segment"].numpy()
    np.testing.assert_array_equal(np.sort(got[got != IGNORE_INDEX]), expected)


def test_eval_pipeline_inverse_maps_original_points():
    points = room_points(20000)
    config = DownstreamDataConfig(grid_size=0.1)
    transform = PointTransform(config, train=False)
    sample = transform(points, np.random.default_rng(0))
    assert torch.equal(sample["origin_segment"], points.segment)
    inverse = sample["inverse"].numpy()
    assert inverse.shape == (20000,) and inverse.max() == len(sample["coord"]) - 1
    # every original point (centred the same way) falls in the cell of its representative, up to the final
    # x/y centring, which moves every point by the same whole number of cells
    centred = center_shift(points.coord.numpy())
    delta = cells(sample["coord"].numpy(), 0.1)[inverse] - cells(centred, 0.1)
    assert (delta == delta[0]).all() and delta[0, 2] == 0
    assert torch.equal(transform(points, np.random.default_rng(0))["coord"], sample["coord"])


# -- image pipeline ------------------------------------------------------------------------------------------
def labelled_picture(height=24, width=32, seed=0) -> LabelledImage:
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.random((height, width, 3)).astype(np.float32))
    segment = torch.from_numpy(
        np.kron(rng.integers(-1, 5, size=(height // 4, width // 4)), np.ones((4, 4), np.int64))
    )
    return LabelledImage("picture", image, segment)


def test_image_eval_is_identity_and_train_is_seeded():
    picture = labelled_picture()
    config = DownstreamDataConfig(modality="images", source="frames", root="x", image_size=[32, 24])
    out = ImageTransform(config, train=False)(picture, np.random.default_rng(0))
    assert torch.equal(out["image"], picture.image) and torch.equal(out["segment"], picture.segment)
    train = ImageTransform(config, train=True)
    a, b = train(picture, np.random.default_rng(1)), train(picture, np.random.default_rng(1))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["segment"], b["segment"])
    assert a["image"].shape == (24, 32, 3) and a["segment"].shape == (24, 32)
    assert set(a["segment"].unique().tolist()) <= set(picture.segment.unique().tolist()) | {IGNORE_INDEX}
    assert 0 <= a["image"].min() and a["image"].max() <= 1


def test_image_geometry_moves_labels_with_pixels():
    """Scale 1 and no photometric change: the output is a flipped (or not) crop of the input, so image and
    labels must be the same crop of their inputs."""
    picture = labelled_picture()
    augment_config = ImageAugmentConfig(scale=[1.0, 1.0], photometric_p=0.0, flip_p=0.5)
    config = DownstreamDataConfig(image_size=[32, 24], image_augment=augment_config)
    seen_flip = set()
    for seed in range(8):
        out = ImageTransform(config, train=True)(picture, np.random.default_rng(seed))
        flipped = torch.equal(out["image"], picture.image.flip(1))
        assert flipped or torch.equal(out["image"], picture.image)
        expected = picture.segment.flip(1) if flipped else picture.segment
        assert torch.equal(out["segment"], expected)
        seen_flip.add(flipped)
    assert seen_flip == {True, False}
    small = dataclasses.replace(config, image_augment=dataclasses.replace(augment_config, scale=[0.5, 0.5]))
    out = ImageTransform(small, train=True)(picture, np.random.default_rng(0))
    assert (out["segment"] == IGNORE_INDEX).sum() >= 24 * 32 * 3 // 4  # padding carries no label
    np.testing.assert_array_equal(
        resize_labels(picture.segment, (16, 12)).numpy(), picture.segment.numpy()[1::2, 1::2]
    )


@pytest.mark.parametrize("labelled", [np.array([0, 5, 100, 700])])
def test_limited_pixels(labelled):
    picture = labelled_picture()
    config = DownstreamDataConfig(image_size=[32, 24], image_augment=ImageAugmentConfig(enabled=False))
    out = ImageTransform(config, train=True)(picture, np.random.default_rng(0), labelled)
    flat = out["segment"].reshape(-1)
    mask = np.zeros(24 * 32, bool)
    mask[labelled] = True
    assert (flat[~torch.from_numpy(mask)] == IGNORE_INDEX).all()
    assert torch.equal(flat[labelled], picture.segment.reshape(-1)[labelled])
