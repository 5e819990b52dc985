"""The numba backend beyond the shared suites of test_render.py: parity with the torch backend on real
pixel-aligned Gaussians, the per-pixel exp fallback of its row recurrence, thread-count independence, a
quiet first call, and the compile cache when the package folder is read-only."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gs3.cameras import Cameras
from gs3.gaussians import Gaussians
from gs3.render import rasterize
from gs3.render.numba_backend import numba_available, rasterize_numba
from gs3.render.projection import project_gaussians
from gs3.render.sh import SH_C0
from gs3.render.torch_backend import rasterize_torch

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba not installed")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scannet_format" / "redkitchen_a"
SRC = Path(__file__).resolve().parents[1] / "src"
FIELDS = ("means", "scales", "quats", "opacities", "sh")


def pixel_aligned_scene(width: int, height: int) -> tuple[Gaussians, Cameras, torch.Tensor]:
    """As benchmarks/rasterizer.py case (a), at width×height: one Gaussian per pixel of frames 0 and 5 of the
    real kitchen (invalid depth: the view's median), on its pixel's ray at its depth, isotropic scale one
    pixel footprint, opacity 0.8, the pixel's colour as SH degree 0. Unlike the benchmark, the scales get a
    random ±30 % per axis, the rotations are random and SH has a small random degree-1 part, so that every
    gradient (quaternions included) is exercised."""
    from gs3.data import open_scene

    scene = open_scene(DATA)
    frames = [scene.frame(i, (width, height)) for i in (0, 5)]
    images = torch.stack([f.image for f in frames])
    depth = torch.stack([f.depth for f in frames])
    for i in range(2):
        depth[i][depth[i] <= 0] = depth[i][depth[i] > 0].median()
    cameras = Cameras(
        torch.stack([f.K for f in frames]), torch.stack([f.cam_to_world for f in frames]), width, height
    )
    means = cameras.backproject_depth(depth).reshape(-1, 3)
    n = means.shape[0]
    fx = cameras.K[:, 0, 0].reshape(2, 1, 1).expand_as(depth).reshape(-1)
    sh = torch.zeros(n, 4, 3)
    sh[:, 0] = (images.reshape(-1, 3) - 0.5) / SH_C0
    sh[:, 1:] = 0.1 * torch.randn(n, 3, 3, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(0)
    gaussians = Gaussians(
        means=means,
        scales=(depth.reshape(-1) / fx)[:, None] * (0.7 + 0.6 * torch.rand(n, 3, generator=gen)),
        quats=torch.randn(n, 4, generator=gen),
        opacities=torch.full((n,), 0.8),
        sh=sh,
    )
    return gaussians, cameras, images


def _render_and_grads(g: Gaussians, cameras: Cameras, target: torch.Tensor, backend: str):
    leaves = {f: getattr(g, f).detach().clone().requires_grad_() for f in FIELDS}
    background = torch.tensor([0.2, 0.3, 0.4], dtype=g.means.dtype, requires_grad=True)
    out = rasterize(Gaussians(**leaves, validate=False), cameras, background, backend=backend)
    loss = ((out.color - target) ** 2).mean() + 0.3 * out.alpha.mean() + 0.05 * out.depth.mean()
    loss.backward()
    return out, {f: leaves[f].grad for f in FIELDS} | {"background": background.grad}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
def test_parity_with_torch_backend_on_real_pixel_aligned_scene() -> None:
    """38,400 real pixel-aligned Gaussians (two 160×120 views rendered into both), float64: forward within
    1e-5 and every gradient within 1e-4 of its largest entry of the torch backend's (both compute in
    float64 here and agree to ~1e-10). Both sort by the same depth keys: real depth is quantised to the
    mm, so near-equal depths abound and their order must not be left to rounding."""
    g, cameras, images = pixel_aligned_scene(160, 120)
    g, cameras, images = g.to(torch.float64), cameras.to(torch.float64), images.double()
    ours, our_grads = _render_and_grads(g, cameras, images, "numba")
    theirs, their_grads = _render_and_grads(g, cameras, images, "torch")
    assert ours.color.dtype == torch.float64
    assert theirs.alpha.mean() > 0.99  # the views are covered
    for name in ("color", "alpha", "depth"):
        diff = (getattr(ours, name) - getattr(theirs, name)).abs()
        assert diff.max() <= 1e-5, f"{name}: max abs difference {diff.max():.3g}"
    for name, grad in their_grads.items():
        scale = grad.abs().max()
        assert scale > 0, name
        error = (our_grads[name] - grad).abs().max() / scale
        assert error <= 1e-4, f"{name}: max difference {error:.3g} of the largest gradient"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
def test_parity_with_torch_backend_in_float32() -> None:
    """The same scene in float32, the dtype of training. The numba backend computes in float64 from the
    float32 inputs, the torch backend evaluates projection and α in float32, so a few pixels differ by
    more than 1e-5 where a pair sits within float32 rounding of the 1/255 threshold (measured: 6 of
    115,200 colour values, at most 2.5e-4). Bounds: 99.99 % of values within 1e-5, all within 1e-3, and
    every gradient within 1e-4 relative in norm (measured ≤ 3e-5)."""
    g, cameras, images = pixel_aligned_scene(160, 120)
    ours, our_grads = _render_and_grads(g, cameras, images, "numba")
    theirs, their_grads = _render_and_grads(g, cameras, images, "torch")
    assert ours.color.dtype == torch.float32
    for name in ("color", "alpha", "depth"):
        diff = (getattr(ours, name) - getattr(theirs, name)).abs()
        assert (diff > 1e-5).float().mean() <= 1e-4 and diff.max() <= 1e-3, name
    for name, grad in their_grads.items():
        error = (our_grads[name] - grad).norm() / grad.norm()
        assert error <= 1e-4, f"{name}: relative difference {error:.3g}"


@pytest.mark.parametrize("tile", [16, 48])
def test_row_recurrence_fallback_on_needle_gaussians(tile: int) -> None:
    """Needle-like Gaussians across the image: their pixel boxes are large squares whose corners lie far
    off the needle (σ ≫ 300), where exp(−σ) underflows, so the row recurrence must give way to per-pixel
    exp there. With 48-pixel tiles a row segment does run from σ > 745 (exp underflows to 0) to visible
    pixels on the needle; render and gradients still match the torch backend."""
    n = 6
    half = torch.linspace(0.3, 1.2, n) / 2  # rotation about the optical axis: wxyz = (cos, 0, 0, sin)
    quats = torch.stack([half.cos(), torch.zeros(n), torch.zeros(n), half.sin()], -1).double()
    gen = torch.Generator().manual_seed(0)
    xy = 0.1 * torch.randn(n, 2, generator=gen)
    means = torch.cat([xy, torch.linspace(1.5, 2.5, n)[:, None]], -1).double()
    scales = torch.tensor([[1.5, 0.002, 0.002]]).double().expand(n, 3).contiguous()
    sh = torch.rand(n, 1, 3, generator=gen).double()
    g = Gaussians(means, scales, quats, torch.full((n,), 0.9).double(), sh)
    width, height = 160, 120
    K = torch.tensor([[120.0, 0, 80], [0, 120, 60], [0, 0, 1]]).double()
    cameras = Cameras(K[None], torch.eye(4).double()[None], width, height)
    # 48-pixel row segments running from σ > 745 to σ < ln(255·0.9) exist
    proj = project_gaussians(
        g.means, g.scales, g.quats, g.opacities, cameras.K, cameras.world_to_cam, width, height
    )
    dy = torch.arange(height, dtype=torch.float64)[None, :, None] + 0.5 - proj.means2d[0, :, 1, None, None]
    dx = torch.arange(width, dtype=torch.float64)[None, None, :] + 0.5 - proj.means2d[0, :, 0, None, None]
    a, b, c = (proj.conics[0, :, k, None, None] for k in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy  # (n, H, W)
    segments = sigma[..., : width // 48 * 48].reshape(n, height, -1, 48)
    assert ((segments[..., 0] > 745) & (segments.min(-1).values < math.log(255 * 0.9))).sum() > 100

    def render(backend: str):
        leaves = [t.clone().requires_grad_() for t in (g.means, g.scales, g.quats, g.opacities, g.sh)]
        if backend == "numba":
            color, alpha, depth = rasterize_numba(
                Gaussians(*leaves), cameras, torch.zeros(1, 3).double(), tile
            )
        else:
            color, alpha, depth = rasterize_torch(Gaussians(*leaves), cameras, torch.zeros(1, 3).double())
        (color.square().sum() + alpha.sum() + depth.sum()).backward()
        return color, [t.grad for t in leaves]

    (ours, our_grads), (theirs, their_grads) = render("numba"), render("torch")
    assert theirs.max() > 0.3
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    for mine, grad in zip(our_grads, their_grads):
        torch.testing.assert_close(mine, grad, rtol=1e-9, atol=1e-9 * grad.abs().max().item())


def test_gradients_where_the_jacobian_clamps_x_over_z() -> None:
    """Large Gaussians centred beyond 1.3× the half field of view but reaching into the image: J uses the
    clamped x/z, y/z there (constant in x, proportional to z), a branch of the compiled backward the other
    scenes barely reach. Gradients against the torch backend's autograd, float64."""
    gen = torch.Generator().manual_seed(3)
    n = 24
    z = 1.0 + 2.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    side = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1.0, 1.0).double()
    xy = side * z[:, None] * (0.75 + 0.2 * torch.rand(n, 2, generator=gen, dtype=torch.float64))
    xy[: n // 2, 1] *= 0.2  # half of them off to the side only, half off a corner
    g = Gaussians(
        torch.cat([xy, z[:, None]], -1),
        0.2 + 0.3 * torch.rand(n, 3, generator=gen, dtype=torch.float64),
        torch.randn(n, 4, generator=gen, dtype=torch.float64),
        0.5 + 0.4 * torch.rand(n, generator=gen, dtype=torch.float64),
        0.3 * torch.randn(n, 4, 3, generator=gen, dtype=torch.float64),
    )
    K = torch.tensor([[40.0, 0, 20], [0, 40, 15], [0, 0, 1]], dtype=torch.float64)
    cameras = Cameras(K[None], torch.eye(4, dtype=torch.float64)[None], 40, 30)
    proj = project_gaussians(g.means, g.scales, g.quats, g.opacities, cameras.K, cameras.world_to_cam, 40, 30)
    limit = (40 - 20) / 40 + 0.3 * 0.5  # lim_x_pos = lim_x_neg here
    clamped = proj.visible[0] & ((g.means[:, 0] / g.means[:, 2]).abs() > limit)
    assert clamped.sum() >= 5
    target = torch.full((1, 30, 40, 3), 0.5, dtype=torch.float64)
    ours, our_grads = _render_and_grads(g, cameras, target, "numba")
    theirs, their_grads = _render_and_grads(g, cameras, target, "torch")
    torch.testing.assert_close(ours.color, theirs.color, rtol=0, atol=1e-12)
    for name, grad in their_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-9, atol=1e-10 * grad.abs().max().item())


def test_result_does_not_depend_on_thread_count() -> None:
    """Per-entry gradient rows summed in a fixed order: 1, 2 or 3 threads give bit-identical results, with
    one camera (tiles split over threads) and three (cameras side by side)."""
    from test_render import make_cameras, random_scene

    g = random_scene(5, n=300, degree=2)
    results = []
    threads_before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for num_cameras in (1, 3):
                cameras = make_cameras(3)[:num_cameras]
                out, grads = _render_and_grads(g, cameras, torch.full((num_cameras, 30, 40, 3), 0.5), "numba")
                results.append((threads, num_cameras, out, grads))
    finally:
        torch.set_num_threads(threads_before)
    for threads, num_cameras, out, grads in results:
        _, _, ref_out, ref_grads = next(r for r in results if r[0] == 1 and r[1] == num_cameras)
        assert torch.equal(out.color, ref_out.color), (threads, num_cameras)
        for name in grads:
            assert torch.equal(grads[name], ref_grads[name]), (threads, num_cameras, name)


def test_refuses_cameras_that_require_grad_and_bad_tiles() -> None:
    from test_render import make_cameras, random_scene

    g, cameras = random_scene(0, n=40), make_cameras(1)
    with pytest.raises(ValueError, match="no gradient with respect to cameras"):
        rasterize(g, Cameras(cameras.K.requires_grad_(), cameras.cam_to_world, 40, 30), backend="numba")
    with pytest.raises(ValueError, match="tile size"):
        rasterize_numba(g, make_cameras(1), torch.zeros(1, 3), tile=63)


def test_thread_pool_works_in_a_forked_child() -> None:
    """The kernels' thread pool is per process: a child forked after the parent ran ranges on two threads
    runs its own (instead of waiting forever on the parent's pool object, whose threads it does not have).
    The ranges are given to a plain Python function here: torch itself must stay single-threaded in a
    forked child (GNU OpenMP cannot fork)."""
    import multiprocessing

    from gs3.render.numba_backend import _parallel

    ranges = np.zeros(100, dtype=np.int64)
    _parallel(_mark_range, 100, ranges, threads=2)
    assert (ranges == os.getpid()).all()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pid, marks = pool.apply_async(_ranges_in_child).get(timeout=60)
    assert pid != os.getpid() and marks == [pid] * 100


def _mark_range(first: int, last: int, out: np.ndarray) -> None:
    out[first:last] = os.getpid()


def _ranges_in_child() -> tuple[int, list[int]]:
    from gs3.render.numba_backend import _parallel

    out = np.zeros(100, dtype=np.int64)
    _parallel(_mark_range, 100, out, threads=2)
    return os.getpid(), out.tolist()


def _run_python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


_FIRST_CALL = """
import torch
from gs3.gaussians import Gaussians
from gs3.cameras import Cameras
from gs3.render import rasterize
g = Gaussians(torch.tensor([[0.0, 0, 2]]), torch.full((1, 3), 0.05), torch.tensor([[1.0, 0, 0, 0]]),
              torch.tensor([0.9]), torch.zeros(1, 4, 3, requires_grad=True))
K = torch.tensor([[[20.0, 0, 8], [0, 20, 8], [0, 0, 1]]])
out = rasterize(g, Cameras(K, torch.eye(4)[None], 16, 16), backend="numba")
out.color.sum().backward()
assert out.alpha.max() > 0.5
"""


def test_first_call_in_a_new_process_prints_nothing() -> None:
    """With the compile cache warm (this test run has compiled the kernels already), a fresh process
    renders and backpropagates without a word on stdout or stderr (no numba warnings)."""
    env = os.environ | {"PYTHONPATH": str(SRC), "PYTHONWARNINGS": "default"}
    result = _run_python(_FIRST_CALL, env, SRC.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def _read_only_copy_of_src(tmp_path: Path) -> Path:
    package = tmp_path / "site"
    shutil.copytree(SRC, package, ignore=shutil.ignore_patterns("__pycache__"))
    for path in sorted(package.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    package.chmod(0o555)
    return package


def _make_writable(package: Path) -> None:
    for path in [package, *package.rglob("*")]:
        path.chmod(0o755)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["NUMBA_CACHE_DIR", "per-user cache"])
def test_read_only_package_compiles_once_elsewhere(where: str, tmp_path: Path) -> None:
    """gs3 installed where it cannot write (a read-only copy of src/): the kernels are cached in
    NUMBA_CACHE_DIR when set, else in numba's per-user cache ($XDG_CACHE_HOME/numba); the first process
    compiles, the second loads the cache, and neither prints anything. (The per-user case needs a non-root
    user: root writes into read-only folders, so numba would cache next to the source.)"""
    if where == "per-user cache" and os.geteuid() == 0:
        pytest.skip("root can write into read-only folders: run as another user")
    package = _read_only_copy_of_src(tmp_path)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env |= {"PYTHONPATH": str(package), "PYTHONDONTWRITEBYTECODE": "1"}
    env |= {"NUMBA_CACHE_DIR": str(cache)} if where == "NUMBA_CACHE_DIR" else {"XDG_CACHE_HOME": str(cache)}
    try:
        for _ in range(2):
            result = _run_python(_FIRST_CALL, env, tmp_path)
            assert result.returncode == 0, result.stderr
            assert result.stdout == "" and result.stderr == ""
        assert list(cache.rglob("*.nbi")), "no numba cache index written"
        assert not list(package.rglob("*.nbi"))
    finally:
        _make_writable(package)
