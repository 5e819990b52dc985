"""Spherical harmonics: orthonormality by quadrature, agreement with scipy's complex SH (up to the fixed 3DGS
sign per function), hand-computed values, the +0.5 / clamp rule and direction normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch

from gs3.render.sh import SH_C0, SH_C1, eval_sh, rgb_to_sh0, sh_basis, sh_to_color


def _sphere_quadrature(n_theta: int = 24, n_phi: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre in cos θ × uniform φ: exact for the degree ≤ 6 products of two degree ≤ 3 harmonics."""
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    cos_t, ph = np.meshgrid(nodes, phi, indexing="ij")
    sin_t = np.sqrt(1 - cos_t**2)
    dirs = np.stack([sin_t * np.cos(ph), sin_t * np.sin(ph), cos_t], axis=-1).reshape(-1, 3)
    w = np.repeat(weights, n_phi) * (2 * np.pi / n_phi)
    return torch.from_numpy(dirs), torch.from_numpy(w)


def test_basis_is_orthonormal_on_the_sphere() -> None:
    dirs, w = _sphere_quadrature()
    basis = sh_basis(3, dirs)  # (P, 16)
    gram = basis.T @ (basis * w[:, None])
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=1e-12)


def _scipy_real_sh(l: int, m: int, dirs: np.ndarray) -> np.ndarray:
    theta = np.arccos(np.clip(dirs[:, 2], -1, 1))  # polar
    phi = np.arctan2(dirs[:, 1], dirs[:, 0])  # azimuth
    if hasattr(scipy.special, "sph_harm_y"):
        y = scipy.special.sph_harm_y(l, abs(m), theta, phi)
    else:  # older scipy: sph_harm(m, l, azimuth, polar)
        y = scipy.special.sph_harm(abs(m), l, phi, theta)
    if m == 0:
        return y.real
    sign = (-1) ** m
    return np.sqrt(2) * sign * (y.imag if m < 0 else y.real)


def test_basis_matches_scipy_up_to_a_fixed_sign_per_function() -> None:
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, dtype=torch.float64), dim=-1)
    ours = sh_basis(3, dirs).numpy()
    k = 0
    for l in range(4):
        for m in range(-l, l + 1):
            theirs = _scipy_real_sh(l, m, dirs.numpy())
            sign = np.sign(np.dot(ours[:, k], theirs))
            assert sign != 0
            np.testing.assert_allclose(ours[:, k], sign * theirs, atol=1e-12, err_msg=f"l={l} m={m}")
            k += 1


def test_hand_computed_values_degree_one() -> None:
    # 3DGS: basis = (C0, −C1·y, C1·z, −C1·x)
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    expected = torch.tensor(
        [[SH_C0, 0, SH_C1, 0], [SH_C0, 0, 0, -SH_C1], [SH_C0, -SH_C1, 0, 0]], dtype=torch.float64
    )
    assert torch.allclose(sh_basis(1, dirs), expected)


def test_directions_are_normalised_and_degree_zero_ignores_them() -> None:
    sh = torch.randn(5, 16, 3, dtype=torch.float64)
    dirs = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(eval_sh(sh, dirs), eval_sh(sh, 7.5 * dirs))
    sh0 = torch.randn(5, 1, 3, dtype=torch.float64)
    assert torch.allclose(eval_sh(sh0, torch.zeros(5, 3, dtype=torch.float64)), SH_C0 * sh0[:, 0])


def test_color_adds_half_and_clamps_at_zero_only() -> None:
    rgb = torch.tensor([[0.0, 0.3, 1.7]], dtype=torch.float64)
    sh = rgb_to_sh0(rgb)[:, None, :]
    assert torch.allclose(sh_to_color(sh, torch.ones(1, 3, dtype=torch.float64)), rgb)  # > 1 is not clamped
    negative = torch.full((1, 1, 3), -5.0, dtype=torch.float64, requires_grad=True)
    color = sh_to_color(negative, torch.ones(1, 3, dtype=torch.float64))
    assert torch.equal(color, torch.zeros(1, 3, dtype=torch.float64))
    color.sum().backward()
    assert torch.equal(negative.grad, torch.zeros_like(negative))


def test_gradcheck_eval_sh() -> None:
    sh = torch.randn(4, 16, 3, dtype=torch.float64, requires_grad=True)
    dirs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(eval_sh, (sh, dirs))


def test_bad_coefficient_count() -> None:
    with pytest.raises(ValueError, match="coefficients"):
        eval_sh(torch.zeros(2, 5, 3), torch.ones(2, 3))
