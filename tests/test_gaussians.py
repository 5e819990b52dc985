"""Gaussians container (validation, indexing, concatenation, device/dtype moves) and the 3DGS PLY layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData

from gs3.gaussians import Gaussians, covariances, load_ply, quat_to_rotmat, save_ply


def make_gaussians(n: int = 6, degree: int = 2, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=gen),
        scales=0.01 + torch.rand(n, 3, generator=gen),
        quats=torch.randn(n, 4, generator=gen),
        opacities=0.01 + 0.98 * torch.rand(n, generator=gen),
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=gen),
    )


def _fields(g: Gaussians) -> dict[str, torch.Tensor]:
    return {k: getattr(g, k) for k in ("means", "scales", "quats", "opacities", "sh")}


@pytest.mark.parametrize(
    ("field", "bad", "match"),
    [
        ("means", lambda t: t[:, :2], "Gaussians.means: expected shape"),
        ("scales", lambda t: t[:-1], "Gaussians.scales: expected shape"),
        ("quats", lambda t: t[:, :3], "Gaussians.quats: expected shape"),
        ("opacities", lambda t: t[:, None], "Gaussians.opacities: expected shape"),
        ("sh", lambda t: t[:, :5], "Gaussians.sh: 5 coefficients"),
        ("sh", lambda t: t[..., :2], "Gaussians.sh: expected shape"),
        (
            "means",
            lambda t: t.index_fill(0, torch.tensor([2]), float("nan")),
            "Gaussians.means: contains NaN",
        ),
        ("sh", lambda t: t.index_fill(0, torch.tensor([1]), float("inf")), "Gaussians.sh: contains NaN"),
        ("quats", lambda t: t.index_fill(0, torch.tensor([3]), 0.0), "Gaussians.quats: zero-norm"),
        ("scales", lambda t: t.index_fill(0, torch.tensor([0]), 0.0), "Gaussians.scales: must be positive"),
        ("scales", lambda t: -t, "Gaussians.scales: must be positive"),
        ("opacities", lambda t: t + 1.0, r"Gaussians.opacities: must lie in \[0, 1\]"),
        ("means", lambda t: t.long(), "Gaussians.means: expected a floating-point"),
    ],
)
def test_validation_names_the_field_in_one_line(field, bad, match) -> None:
    fields = _fields(make_gaussians())
    fields[field] = bad(fields[field])
    with pytest.raises(ValueError, match=match) as info:
        Gaussians(**fields)
    assert "\n" not in str(info.value)


def test_validate_false_skips_checks() -> None:
    fields = _fields(make_gaussians())
    fields["scales"] = -fields["scales"]
    Gaussians(**fields, validate=False)


def test_indexing_with_int_slice_mask_and_tensor() -> None:
    g = make_gaussians(6)
    for index, expected in [
        (2, [2]),
        (-1, [5]),
        (-2, [4]),
        (slice(1, 4), [1, 2, 3]),
        (torch.tensor([True, False, True, False, False, True]), [0, 2, 5]),
        (torch.tensor([4, 0]), [4, 0]),
    ]:
        part = g[index]
        assert len(part) == len(expected)
        for name, value in _fields(part).items():
            assert torch.equal(value, getattr(g, name)[expected]), (index, name)


def test_cat_concatenates_and_rejects_mixed_degrees() -> None:
    a, b = make_gaussians(3, seed=1), make_gaussians(4, seed=2)
    both = Gaussians.cat([a, b])
    assert len(both) == 7 and both.sh_degree == 2
    for name, value in _fields(both).items():
        assert torch.equal(value, torch.cat([getattr(a, name), getattr(b, name)]))
    with pytest.raises(ValueError, match="different SH degrees"):
        Gaussians.cat([a, make_gaussians(2, degree=1)])
    with pytest.raises(ValueError, match="nothing to concatenate"):
        Gaussians.cat([])


def test_device_and_dtype_moves_keep_values() -> None:
    g = make_gaussians()
    moved = g.to(torch.float64)
    assert all(v.dtype == torch.float64 for v in _fields(moved).values())
    assert torch.equal(moved.means.float(), g.means)
    meta = g.to("meta")
    assert meta.device.type == "meta" and meta.sh.shape == g.sh.shape
    leaf = g.means.clone().requires_grad_()
    assert not Gaussians(leaf, g.scales, g.quats, g.opacities, g.sh).detach().means.requires_grad


def test_rotation_and_covariance() -> None:
    q = torch.randn(10, 4, dtype=torch.float64)
    r = quat_to_rotmat(q)
    assert torch.allclose(
        r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(10, 3, 3), atol=1e-12
    )
    assert torch.allclose(torch.linalg.det(r), torch.ones(10, dtype=torch.float64))
    assert torch.allclose(quat_to_rotmat(3.0 * q), r)  # scale invariant
    # 90° about z (wxyz): x → y
    rz = quat_to_rotmat(torch.tensor([[2**-0.5, 0, 0, 2**-0.5]], dtype=torch.float64))[0]
    assert torch.allclose(
        rz @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64)
    )
    s = torch.rand(10, 3, dtype=torch.float64) + 0.1
    cov = covariances(s, q)
    assert torch.allclose(torch.linalg.eigvalsh(cov), (s**2).sort(-1).values)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip(tmp_path, degree: int) -> None:
    g = make_gaussians(9, degree=degree)
    path = tmp_path / "sub" / "scene.ply"
    save_ply(g, path)
    back = load_ply(path)
    assert back.sh_degree == degree and len(back) == 9
    assert torch.allclose(back.means, g.means)
    assert torch.allclose(back.scales, g.scales, rtol=1e-6)
    assert torch.allclose(back.opacities, g.opacities, atol=1e-6)
    assert torch.allclose(back.sh, g.sh)
    assert torch.allclose(back.quats, g.normalized_quats(), atol=1e-7)


def test_ply_layout_is_what_viewers_read(tmp_path) -> None:
    g = make_gaussians(4, degree=1)
    path = tmp_path / "g.ply"
    save_ply(g, path)
    vertex = PlyData.read(str(path))["vertex"]
    names = list(vertex.data.dtype.names)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:] == [f"f_rest_{i}" for i in range(9)] + ["opacity"] + [f"scale_{i}" for i in range(3)] + [
        f"rot_{i}" for i in range(4)
    ]
    # f_rest is channel-major: all red coefficients 1..3, then green, then blue.
    sh = g.sh.numpy()
    for channel in range(3):
        for k in range(1, 4):
            np.testing.assert_allclose(vertex[f"f_rest_{channel * 3 + k - 1}"], sh[:, k, channel])
    np.testing.assert_allclose(vertex["opacity"], np.log(g.opacities / (1 - g.opacities)), rtol=1e-5)
    np.testing.assert_allclose(vertex["scale_1"], np.log(g.scales[:, 1]), rtol=1e-6)
    np.testing.assert_allclose(vertex["rot_0"], g.normalized_quats()[:, 0], rtol=1e-6)


def test_ply_missing_property_is_one_line(tmp_path) -> None:
    from plyfile import PlyElement

    data = np.zeros(2, dtype=[(n, "f4") for n in ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]])
    path = tmp_path / "bad.ply"
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    with pytest.raises(ValueError, match="missing vertex property 'scale_0'") as info:
        load_ply(path)
    assert "\n" not in str(info.value)
    (tmp_path / "garbage.ply").write_text("not a ply")
    with pytest.raises(ValueError, match=r"garbage\.ply"):
        load_ply(tmp_path / "garbage.ply")
