"""PointNet++ operators against brute force, and the PointNet2SASSG encoder's names, shapes and behaviour."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from gs3.encoders import point_ops
from gs3.encoders.pointnet2 import PointNet2SASSG
from gs3.encoders.registry import build_encoder
from gs3.errors import ConfigError, DataError

KEYS_FILE = Path(__file__).parent / "data" / "pointnet2_sassg_keys.txt"

# A narrow configuration with the reference radii and neighbour counts, for fast behavioural tests.
SMALL = dict(
    num_points=(128, 64, 32, 16),
    sa_channels=((16, 16, 32), (32, 32, 64), (32, 32, 64), (32, 32, 64)),
    fp_channels=((64, 64), (64, 64)),
    point_fp_channels=((32, 32), (32, 32)),
    out_channels=32,
    max_points=10_000,
)


def read_key_file(path: Path) -> dict[str, tuple[int, ...]]:
    entries = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            entries[key] = tuple(ast.literal_eval(shape))
    return entries


# ---------------------------------------------------------------- brute-force references (float64, loops)


def brute_fps(xyz: np.ndarray, count: int, num_samples: int) -> list[int]:
    points = xyz[:count].astype(np.float64)
    centre = (points.min(0) + points.max(0)) / 2
    start = max(range(count), key=lambda i: (float(((points[i] - centre) ** 2).sum()), -i))
    chosen, min_d = [start], [float("inf")] * count
    for _ in range(num_samples - 1):
        last = points[chosen[-1]]
        for i in range(count):
            min_d[i] = min(min_d[i], float(((points[i] - last) ** 2).sum()))
        best = max(range(count), key=lambda i: (min_d[i], -i))
        chosen.append(best)
    return chosen


def brute_ball_query(
    xyz: np.ndarray, count: int, center: np.ndarray, radius: float, k: int
) -> tuple[list[int], int]:
    found = []
    for i in range(count):
        if float(((xyz[i].astype(np.float64) - center) ** 2).sum()) < radius**2:
            found.append(i)
            if len(found) == k:
                break
    if not found:
        return [0] * k, 0
    return found + [found[0]] * (k - len(found)), len(found)


# ---------------------------------------------------------------- operators


@pytest.mark.parametrize("chunk", [1 << 24, 500])
def test_farthest_point_sample_matches_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(point_ops, "_CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(1)
    xyz = torch.rand(2, 120, 3, generator=generator) * torch.tensor([3.0, 2.0, 1.0])
    lengths = torch.tensor([120, 77])
    # Garbage in the padding must be ignored.
    xyz[1, 77:] = 100.0
    picked = point_ops.farthest_point_sample(xyz, 40, lengths)
    for b in range(2):
        assert picked[b].tolist() == brute_fps(xyz[b].numpy(), int(lengths[b]), 40)


def test_farthest_point_sample_with_few_points_repeats_valid_ones():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0.5, 0], [0.3, 3, 0], [9, 9, 9]]])
    picked = point_ops.farthest_point_sample(xyz, 6, torch.tensor([3]))[0].tolist()
    # Box centre (0.5, 1.5, 0): squared distances 2.5, 1.25, 2.29 -> start at 0; then 2 (9.09 from 0),
    # then 1; then every distance is 0 and the lowest index wins. The padding point 3 is never picked.
    assert picked == [0, 2, 1, 0, 0, 0]


@pytest.mark.parametrize("chunk", [1 << 24, 700])
def test_ball_query_matches_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(point_ops, "_CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(2)
    xyz = torch.rand(2, 300, 3, generator=generator)
    lengths = torch.tensor([300, 180])
    # Centres: some input points (saturated balls), random positions, and far-away ones (empty balls).
    centers = torch.cat(
        [xyz[:, :20], torch.rand(2, 20, 3, generator=generator), torch.full((2, 3, 3), 5.0)], dim=1
    )
    radius, k = 0.2, 8
    index = point_ops.ball_query(xyz, centers, radius, k, lengths)
    counts = []
    for b in range(2):
        for m in range(centers.shape[1]):
            center = centers[b, m].double().numpy()
            expected, found = brute_ball_query(xyz[b].numpy(), int(lengths[b]), center, radius, k)
            assert index[b, m].tolist() == expected, (b, m)
            counts.append(found)
    # The cases all occur: saturated balls, partly filled ones (padding with the first), empty ones.
    assert k in counts and any(1 < c < k for c in counts) and 0 in counts


def test_group_points_puts_offsets_before_features():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 2, 3]]])
    features = torch.tensor([[[10.0], [20.0]]])
    centers = torch.tensor([[[1.0, 1, 1]]])
    grouped = point_ops.group_points(xyz, centers, features, torch.tensor([[[1, 0]]]), normalize_radius=2.0)
    expected = torch.tensor([[[[0.0, 0.5, 1.0, 20.0], [-0.5, -0.5, -0.5, 10.0]]]])
    torch.testing.assert_close(grouped, expected)


def test_three_nn_interpolation_matches_brute_force(monkeypatch):
    monkeypatch.setattr(point_ops, "_CHUNK_ELEMENTS", 300)
    generator = torch.Generator().manual_seed(3)
    targets = torch.rand(2, 50, 3, generator=generator)
    sources = torch.rand(2, 17, 3, generator=generator)
    values = torch.randn(2, 17, 5, generator=generator, dtype=torch.float64).float()
    result = point_ops.interpolate_features(targets, sources, values)
    distances, _ = point_ops.three_nn(targets, sources)
    for b in range(2):
        for n in range(50):
            d = np.sqrt(((sources[b].double().numpy() - targets[b, n].double().numpy()) ** 2).sum(1))
            nearest = np.argsort(d)[:3]
            w = 1.0 / (d[nearest] + 1e-8)
            expected = (values[b, nearest].double().numpy() * (w / w.sum())[:, None]).sum(0)
            np.testing.assert_allclose(result[b, n].double().numpy(), expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(distances[b, n].double().numpy(), d[nearest], rtol=1e-5, atol=1e-7)


def test_three_nn_with_fewer_than_three_sources_reproduces_the_value():
    targets = torch.rand(1, 4, 3)
    sources = torch.rand(1, 1, 3)
    values = torch.tensor([[[2.0, -1.0]]])
    torch.testing.assert_close(
        point_ops.interpolate_features(targets, sources, values), values.expand(1, 4, 2)
    )


# ---------------------------------------------------------------- encoder


def test_backbone_keys_equal_mmdet3d_votenet_scannet():
    reference = read_key_file(KEYS_FILE)
    model = PointNet2SASSG(in_channels=1)  # mmdet3d in_channels=4: xyz + height
    assert model.mmdet3d_in_channels == 4
    backbone = model.backbone_state_dict()
    assert list(backbone) == list(reference)
    assert {k: tuple(v.shape) for k, v in backbone.items()} == reference
    # Our extension lives outside the mmdet3d key set.
    extra = set(model.state_dict()) - set(backbone)
    assert extra and all(key.startswith(("point_fp.", "head.")) for key in extra)


def sparse_cloud(counts, seed):
    """Points spread thinly (no first-level ball holds 64 of them), so equivariance must hold exactly."""
    generator = torch.Generator().manual_seed(seed)
    coord = torch.rand(sum(counts), 3, generator=generator) * torch.tensor([6.0, 6.0, 3.0])
    feat = torch.rand(sum(counts), 3, generator=generator)
    offset = torch.tensor(np.cumsum(counts))
    return coord, feat, offset


def trained_small_model(**overrides):
    torch.manual_seed(0)
    model = PointNet2SASSG(**{**SMALL, **overrides})
    coord, feat, offset = sparse_cloud([300, 220], seed=10)
    model.train()
    with torch.no_grad():
        model(coord, feat, offset)  # non-trivial BN running statistics
    return model.eval()


def test_features_follow_points_under_permutation():
    model = trained_small_model()
    coord, feat, offset = sparse_cloud([260, 200], seed=11)
    with torch.no_grad():
        reference = model(coord, feat, offset)
        generator = torch.Generator().manual_seed(12)
        permutation = torch.cat(
            [torch.randperm(260, generator=generator), 260 + torch.randperm(200, generator=generator)]
        )
        permuted = model(coord[permutation], feat[permutation], offset)
    assert reference.shape == (460, 32)
    torch.testing.assert_close(permuted, reference[permutation], rtol=1e-4, atol=1e-5)


def test_batch_equals_samples_processed_alone():
    model = trained_small_model()
    coord, feat, offset = sparse_cloud([260, 150], seed=13)
    with torch.no_grad():
        together = model(coord, feat, offset)
        first = model(coord[:260], feat[:260], torch.tensor([260]))
        second = model(coord[260:], feat[260:], torch.tensor([150]))
    torch.testing.assert_close(together, torch.cat([first, second]), rtol=1e-4, atol=1e-5)


def test_point_cap_carries_features_to_every_point():
    model = trained_small_model(max_points=200)
    coord, feat, _ = sparse_cloud([250], seed=14)
    # Every point twice: of each twin pair at most one may be among the 200 kept points, yet both
    # must receive the same feature.
    coord, feat = torch.cat([coord, coord]), torch.cat([feat, feat])
    with torch.no_grad():
        out = model(coord, feat, torch.tensor([500]))
        again = model(coord, feat, torch.tensor([500]))
    assert out.shape == (500, 32) and out.isfinite().all()
    torch.testing.assert_close(out[:250], out[250:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, again)  # eval is reproducible


def check_every_parameter_gets_a_gradient(model, counts):
    coord, feat, offset = sparse_cloud(counts, seed=15)
    out = model.train()(coord / 2, feat, offset)
    assert out.shape == (sum(counts), 128)
    (out * torch.randn_like(out)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_every_parameter_gets_a_gradient():
    # Reference channel widths (every parameter of the real model), fewer sampled points for speed; the
    # second sample has fewer points than the first level samples.
    torch.manual_seed(0)
    model = build_encoder({"type": "PointNet2SASSG", "num_points": (128, 64, 32, 16)})
    assert model.out_channels == 128 and model.modality == "points"
    check_every_parameter_gets_a_gradient(model, [300, 100])


@pytest.mark.slow
def test_default_config_shapes_and_gradients():
    torch.manual_seed(0)
    check_every_parameter_gets_a_gradient(build_encoder({"type": "PointNet2SASSG"}), [2300, 1500])


def test_offset_and_shape_errors():
    model = PointNet2SASSG(**SMALL)
    coord, feat, _ = sparse_cloud([10], seed=16)
    with pytest.raises(ValueError, match="offset"):
        model(coord, feat, torch.tensor([4, 4, 10]))
    with pytest.raises(ValueError, match="offset"):
        model(coord, feat, torch.tensor([9]))
    with pytest.raises(ValueError, match="feat"):
        model(coord, feat[:, :2], torch.tensor([10]))
    with pytest.raises(ConfigError, match="point_fp_channels"):
        PointNet2SASSG(point_fp_channels=((64, 64),))
    with pytest.raises(ConfigError, match="max_points"):
        PointNet2SASSG(max_points=0)


def test_backbone_state_dict_round_trip_and_detector_checkpoint():
    source, target = PointNet2SASSG(**SMALL), PointNet2SASSG(**SMALL)
    with torch.no_grad():
        for value in source.state_dict().values():
            value.copy_(torch.rand_like(value.float()).to(value.dtype) * 5)
    detector = {f"backbone.{k}": v for k, v in source.backbone_state_dict().items()}
    detector["bbox_head.conv_pred.weight"] = torch.zeros(3)
    report = target.load_backbone_state_dict(detector)
    assert (
        report.missing == [] and report.unexpected == [] and report.ignored == ["bbox_head.conv_pred.weight"]
    )
    for key, value in source.backbone_state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    partial = dict(source.backbone_state_dict())
    partial.pop("FP_modules.1.mlps.layer1.bn.running_var")
    with pytest.raises(DataError, match="1 missing"):
        target.load_backbone_state_dict(partial)
    assert target.load_backbone_state_dict(partial, strict=False).missing == [
        "FP_modules.1.mlps.layer1.bn.running_var"
    ]
    wrong = PointNet2SASSG(in_channels=1, **SMALL).backbone_state_dict()
    with pytest.raises(DataError, match="shape"):
        target.load_backbone_state_dict(wrong)
