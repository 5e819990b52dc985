"""SR-UNet (Pointcept SpUNet-v1m1 on spconv): voxelisation, sparse convs vs dense conv3d, the network."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gs3.encoders import ENCODERS, build_encoder
from gs3.encoders.spconv_compat import MISSING_SPCONV_MESSAGE, MissingDependencyError, require_spconv
from gs3.encoders.voxelize import voxelize
from gs3.errors import ConfigError, DataError

spconv_installed = True
try:
    require_spconv()
except MissingDependencyError:
    spconv_installed = False
needs_spconv = pytest.mark.skipif(not spconv_installed, reason="spconv is not installed")

KEYS_FILE = Path(__file__).parent / "data" / "spunet_v1m1_keys.txt"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A forward pass is ~1000 tiny parallel regions; on a shared, oversubscribed CPU each one waits for a
    descheduled thread (0.14 s vs 1-3 s for one forward here). Results do not depend on the thread count;
    the scatter-race test sets two threads itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def room_points(num_points: int, size: float, generator: torch.Generator) -> torch.Tensor:
    """Points on the floor and two walls of a size×size×size/2 corner: a surface, like depth points."""
    u = torch.rand(num_points, 2, generator=generator)
    plane = torch.randint(0, 3, (num_points,), generator=generator)
    zero = torch.zeros(num_points)
    floor = torch.stack([u[:, 0] * size, u[:, 1] * size, zero], 1)
    wall_x = torch.stack([zero, u[:, 0] * size, u[:, 1] * size / 2], 1)
    wall_y = torch.stack([u[:, 0] * size, zero, u[:, 1] * size / 2], 1)
    return torch.where((plane == 0)[:, None], floor, torch.where((plane == 1)[:, None], wall_x, wall_y))


def two_sample_batch(
    seed: int = 0, sizes: tuple[int, int] = (1700, 1300), extent: float = 1.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    first = room_points(sizes[0], extent, generator)
    second = room_points(sizes[1], extent * 0.8, generator) + torch.tensor([5.0, -3.0, 0.5])  # own min cell
    coord = torch.cat([first, second])
    color = torch.rand(coord.shape[0], 3, generator=generator)
    return coord, color, torch.tensor([sizes[0], sum(sizes)])


# ---------------------------------------------------------------- spconv import and its CPU fix


def test_missing_spconv_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "spconv" or name.startswith("spconv.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "spconv", None)  # makes `import spconv...` raise ImportError
    with pytest.raises(ImportError, match="pip install spconv") as raised:
        require_spconv()
    assert str(raised.value) == MISSING_SPCONV_MESSAGE
    assert "\n" not in str(raised.value)
    with pytest.raises(MissingDependencyError):
        build_encoder({"type": "SpUNet-v1m1"})


@needs_spconv
def test_cpu_fixes_are_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from spconv.pytorch import cppcore, ops

    require_spconv()
    require_spconv()  # idempotent: the fixes wrap spconv's functions once
    assert ops.get_current_stream is cppcore.get_current_stream
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ops.get_current_stream() == 0
    assert ops.SpconvOps.gs3_cpu_fix and not hasattr(ops.SpconvOps._spconv_ops, "gs3_cpu_fix")


@pytest.fixture(scope="module")
def model():
    """The default SpUNet-v1m1 (39 M parameters) at 5 cm voxels, built once for the network tests."""
    if not spconv_installed:
        pytest.skip("spconv is not installed")
    torch.manual_seed(0)
    return build_encoder({"type": "SpUNet-v1m1", "voxel_size": 0.05})


# ---------------------------------------------------------------- single sparse convs vs dense conv3d


def random_sites(grid: int, channels: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    occupied = torch.rand(grid, grid, grid, generator=generator) < 0.3
    cells = occupied.nonzero()
    return cells, torch.randn(cells.shape[0], channels, generator=generator)


def to_dense(cells: torch.Tensor, feat: torch.Tensor, grid: int) -> torch.Tensor:
    dense = torch.zeros(grid, grid, grid, feat.shape[1], dtype=feat.dtype)
    return dense.index_put(tuple(cells.T), feat).permute(3, 0, 1, 2)[None]


def at_sites(dense: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    return dense[0][:, cells[:, 0], cells[:, 1], cells[:, 2]].T


def sparse_input(sp, cells: torch.Tensor, feat: torch.Tensor, grid: int):
    indices = torch.cat([torch.zeros_like(cells[:, :1]), cells], 1).int()
    return sp.SparseConvTensor(feat, indices, [grid] * 3, 1)


def init_weights(conv: torch.nn.Module, generator: torch.Generator) -> None:
    fan_in = conv.weight[0].numel()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / math.sqrt(fan_in))
        if conv.bias is not None:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual.double(), expected, atol=1e-5, rtol=1e-5)


@needs_spconv
@pytest.mark.parametrize(("kernel", "padding"), [(3, 1), (5, 1)])  # (5, 1) is the stem: subm ignores padding
def test_submanifold_conv_matches_dense_conv3d_forward_and_backward(kernel: int, padding: int) -> None:
    sp = require_spconv()
    generator = torch.Generator().manual_seed(kernel)
    grid = 7
    cells, feat = random_sites(grid, 3, generator)
    conv = sp.SubMConv3d(3, 4, kernel_size=kernel, padding=padding, bias=True)
    init_weights(conv, generator)
    feat.requires_grad_(True)
    out = conv(sparse_input(sp, cells, feat, grid))
    assert torch.equal(out.indices[:, 1:].long(), cells)  # submanifold: output sites = input sites
    upstream = torch.randn(out.features.shape, generator=generator)
    (out.features * upstream).sum().backward()  # CPU backward: needs the stream fix

    feat64 = feat.detach().double().requires_grad_(True)
    weight64 = conv.weight.detach().double().requires_grad_(True)  # spconv layout (out, k, k, k, in)
    bias64 = conv.bias.detach().double().requires_grad_(True)
    dense = F.conv3d(
        to_dense(cells, feat64, grid), weight64.permute(0, 4, 1, 2, 3), bias64, padding=kernel // 2
    )
    expected = at_sites(dense, cells)
    (expected * upstream.double()).sum().backward()
    assert_close(out.features, expected)
    assert_close(feat.grad, feat64.grad)
    assert_close(conv.weight.grad, weight64.grad)
    assert_close(conv.bias.grad, bias64.grad)


@needs_spconv
def test_strided_and_inverse_conv_match_dense_conv3d_and_transpose_forward_and_backward() -> None:
    sp = require_spconv()
    generator = torch.Generator().manual_seed(1)
    grid = 8
    cells, feat = random_sites(grid, 3, generator)
    down = sp.SparseConv3d(3, 5, kernel_size=2, stride=2, bias=False, indice_key="spconv1")
    up = sp.SparseInverseConv3d(5, 4, kernel_size=2, bias=False, indice_key="spconv1")
    init_weights(down, generator)
    init_weights(up, generator)
    feat.requires_grad_(True)
    coarse = down(sparse_input(sp, cells, feat, grid))
    fine = up(coarse)
    upstream_coarse = torch.randn(coarse.features.shape, generator=generator)
    upstream_fine = torch.randn(fine.features.shape, generator=generator)
    ((coarse.features * upstream_coarse).sum() + (fine.features * upstream_fine).sum()).backward()

    feat64 = feat.detach().double().requires_grad_(True)
    down64 = down.weight.detach().double().requires_grad_(True)
    up64 = up.weight.detach().double().requires_grad_(True)
    coarse_dense = F.conv3d(to_dense(cells, feat64, grid), down64.permute(0, 4, 1, 2, 3), stride=2)
    coarse_cells = coarse.indices[:, 1:].long()
    # the active coarse cells are exactly the parents of active fine cells
    expected_cells = torch.unique(cells // 2, dim=0)
    assert torch.equal(torch.unique(coarse_cells, dim=0), expected_cells)
    coarse_expected = at_sites(coarse_dense, coarse_cells)
    # the inverse conv is a transposed conv evaluated at the original fine sites
    fine_dense = F.conv_transpose3d(
        to_dense(coarse_cells, coarse_expected, grid // 2), up64.permute(4, 0, 1, 2, 3), stride=2
    )
    assert torch.equal(fine.indices[:, 1:].long(), cells)
    fine_expected = at_sites(fine_dense, cells)
    loss = (coarse_expected * upstream_coarse.double()).sum() + (fine_expected * upstream_fine.double()).sum()
    loss.backward()
    assert_close(coarse.features, coarse_expected)
    assert_close(fine.features, fine_expected)
    assert_close(feat.grad, feat64.grad)
    assert_close(down.weight.grad, down64.grad)
    assert_close(up.weight.grad, up64.grad)


@needs_spconv
def test_multithreaded_cpu_conv_is_exact_on_a_real_sized_input() -> None:
    """spconv's CPU scatter-add races between threads (see spconv_compat); this caught it in every run."""
    sp = require_spconv()
    coord, color, offset = two_sample_batch()
    voxels = voxelize(coord, color, offset, 0.05)
    grid = int(voxels.grid_coord.max()) + 1
    generator = torch.Generator().manual_seed(5)
    conv = sp.SubMConv3d(3, 32, kernel_size=5, padding=1, bias=False)  # the stem conv
    init_weights(conv, generator)
    weight = conv.weight.detach().double().permute(0, 4, 1, 2, 3)
    expected = torch.zeros(voxels.feat.shape[0], 32, dtype=torch.float64)
    for sample in range(2):
        rows = voxels.batch == sample
        cells = voxels.grid_coord[rows]
        dense = F.conv3d(to_dense(cells, voxels.feat[rows].double(), grid), weight, padding=2)
        expected[rows] = at_sites(dense, cells)
    indices = torch.cat([voxels.batch[:, None], voxels.grid_coord], 1).int()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # the race needs two threads
    try:
        with torch.no_grad():
            outputs = [
                conv(sp.SparseConvTensor(voxels.feat, indices, [grid] * 3, 2)).features for _ in range(6)
            ]
    finally:
        torch.set_num_threads(threads)
    for output in outputs:
        assert_close(output, expected)


# ---------------------------------------------------------------- voxelisation


def brute_force_voxelize(coord: torch.Tensor, feat: torch.Tensor, offset: torch.Tensor, size: float):
    """Per sample: cell = floor(coord/size) - the sample's min cell; a python dict of float64 feature sums."""
    sums: dict[tuple[int, int, int, int], list] = {}
    point_keys = []
    start = 0
    for sample, end in enumerate(offset.tolist()):
        cells = [tuple(math.floor(float(c) / size) for c in point) for point in coord[start:end].double()]
        lowest = [min(cell[axis] for cell in cells) for axis in range(3)]
        for i, cell in enumerate(cells):
            key = (sample, *(cell[axis] - lowest[axis] for axis in range(3)))
            total = sums.setdefault(key, [torch.zeros(feat.shape[1], dtype=torch.float64), 0])
            total[0] += feat[start + i].double()
            total[1] += 1
            point_keys.append(key)
        start = end
    means = {key: total / count for key, (total, count) in sums.items()}
    return means, point_keys


@pytest.mark.parametrize("voxel_size", [0.02, 0.05])
def test_voxelize_matches_brute_force(voxel_size: float) -> None:
    generator = torch.Generator().manual_seed(3)
    coord = torch.rand(1500, 3, generator=generator) * 0.4 - 0.2  # dense enough to share voxels
    coord[900:] += torch.tensor([10.0, 0.0, -4.0])
    feat = torch.rand(1500, 4, generator=generator)
    offset = torch.tensor([400, 900, 1500])
    voxels = voxelize(coord, feat, offset, voxel_size)
    means, point_keys = brute_force_voxelize(coord, feat, offset, voxel_size)

    keys = [(int(b), *map(int, cell)) for b, cell in zip(voxels.batch, voxels.grid_coord)]
    assert len(keys) == len(set(keys)) == len(means)
    assert keys == sorted(keys)  # sorted by (sample, x, y, z)
    assert voxels.count.sum() == 1500 and voxels.count.max() > 1
    for key, voxel_feat in zip(keys, voxels.feat):
        torch.testing.assert_close(voxel_feat.double(), means[key], atol=1e-6, rtol=1e-6)
    assert [keys[i] for i in voxels.inverse.tolist()] == point_keys
    assert voxels.offset.tolist() == [sum(1 for k in keys if k[0] <= b) for b in range(3)]


def test_voxelize_hand_computed_case_and_gradient() -> None:
    coord = torch.tensor([[0.01, 0.01, 0.01], [0.04, 0.03, 0.00], [0.11, 0.0, 0.0], [-0.01, 0.0, 0.0]])
    feat = torch.tensor([[1.0], [3.0], [5.0], [7.0]], requires_grad=True)
    voxels = voxelize(coord, feat, torch.tensor([4]), 0.05)
    # cells: (0,0,0), (0,0,0), (2,0,0), (-1,0,0) → minus min (-1,0,0): (1,0,0), (1,0,0), (3,0,0), (0,0,0)
    assert voxels.grid_coord.tolist() == [[0, 0, 0], [1, 0, 0], [3, 0, 0]]
    assert voxels.feat.squeeze(1).tolist() == [7.0, 2.0, 5.0]
    assert voxels.inverse.tolist() == [1, 1, 2, 0]
    voxels.feat.sum().backward()
    assert feat.grad.squeeze(1).tolist() == [0.5, 0.5, 1.0, 1.0]


def test_voxelize_rejects_bad_offset() -> None:
    with pytest.raises(DataError, match="offset"):
        voxelize(torch.zeros(5, 3), torch.zeros(5, 1), torch.tensor([2, 4]), 0.05)


# ---------------------------------------------------------------- the network


def reference_keys() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split(" ", 1)
        rows.append((name, tuple(int(size) for size in shape.split(",") if size.strip())))
    return rows


@needs_spconv
def test_state_dict_matches_pointcept_spunet_v1m1_keys_and_shapes() -> None:
    model = build_encoder({"type": "SpUNet-v1m1", "in_channels": 6, "out_channels": 20})
    ours = [(name, tuple(value.shape)) for name, value in model.backbone_state_dict().items()]
    expected = reference_keys()
    assert len(expected) == 356
    assert ours == expected  # same names, shapes and order


@needs_spconv
def test_load_backbone_state_dict_round_trip_prefixes_and_errors() -> None:
    small = {"type": "SpUNet-v1m1", "base_channels": 8, "channels": [8, 16, 16, 8], "layers": [1, 2, 1, 1]}
    source, target = build_encoder(small), build_encoder(small)
    checkpoint = {f"module.backbone.{k}": v for k, v in source.backbone_state_dict().items()}  # Pointcept's
    target.load_backbone_state_dict(checkpoint)
    loaded = target.backbone_state_dict()
    for name, value in source.backbone_state_dict().items():
        assert torch.equal(loaded[name], value), name

    partial = dict(source.backbone_state_dict())
    partial.pop("final.bias")
    partial["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match="1 missing"):
        target.load_backbone_state_dict(partial)
    result = target.load_backbone_state_dict(partial, strict=False)
    assert result.missing_keys == ["final.bias"] and result.unexpected_keys == ["extra.weight"]
    wrong_width = {**source.backbone_state_dict(), "conv_input.0.weight": torch.zeros(8, 5, 5, 5, 6)}
    with pytest.raises(ConfigError, match=r"conv_input\.0\.weight"):
        target.load_backbone_state_dict(wrong_width)


@needs_spconv
def test_registry_builds_from_omegaconf_and_rejects_bad_settings() -> None:
    from omegaconf import OmegaConf

    config = OmegaConf.create({"type": "SpUNet-v1m1", "channels": [16, 16, 16, 16], "layers": [1, 1, 1, 1]})
    model = build_encoder(config)
    assert "SpUNet-v1m1" in ENCODERS.names()
    assert (model.out_channels, model.modality, model.voxel_size, model.num_stages) == (
        128,
        "points",
        0.02,
        2,
    )
    with pytest.raises(ConfigError, match="even length"):
        build_encoder({"type": "SpUNet-v1m1", "channels": [16, 16, 16], "layers": [1, 1, 1]})
    with pytest.raises(ConfigError, match="in_channels=3"):
        model(torch.zeros(4, 3), torch.zeros(4, 6), torch.tensor([4]))


def test_forward_shape_permutation_and_batch_independence(model) -> None:
    torch.manual_seed(0)
    model.eval()
    # give BatchNorm non-trivial statistics so eval mode is not the identity map
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    coord, color, offset = two_sample_batch(sizes=(1200, 800), extent=0.9)
    permutation = torch.cat([torch.randperm(1200), 1200 + torch.randperm(800)])
    with torch.no_grad():
        features = model(coord, color, offset)
        permuted = model(coord[permutation], color[permutation], offset)
        first_alone = model(coord[:1200], color[:1200], torch.tensor([1200]))
    assert features.shape == (2000, 128) and features.dtype == torch.float32
    scale = float(features.abs().max())
    assert scale > 0
    # equal up to float rounding of the voxel means (summed in another order), not just roughly
    torch.testing.assert_close(permuted, features[permutation], atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(first_alone, features[:1200], atol=1e-4 * scale, rtol=0)
    # points in one voxel share its feature; different voxels generally differ
    voxels = voxelize(coord, color, offset, 0.05)
    shared = voxels.inverse == voxels.inverse[voxels.count[voxels.inverse] > 1][0]
    assert torch.equal(features[shared], features[shared][:1].expand(int(shared.sum()), -1))
    assert torch.unique(features[:, 0]).numel() > voxels.count.numel() // 2


def test_every_parameter_gets_a_gradient(model) -> None:
    model.train()
    model.zero_grad()
    coord, color, offset = two_sample_batch(seed=1, sizes=(1200, 800), extent=0.9)
    color.requires_grad_(True)
    features = model(coord, color, offset)
    (features**2).mean().backward()
    no_gradient = [
        name for name, p in model.named_parameters() if p.grad is None or not bool((p.grad != 0).any())
    ]
    assert no_gradient == []
    assert color.grad is not None and bool((color.grad != 0).any())
