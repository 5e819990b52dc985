"""The rasterizer against a brute-force float64 renderer written here (every Gaussian at every pixel, sorted
by depth, gsplat 1.5.3's rules), gradcheck for every differentiable input, bad input, gsplat parity (CUDA).
The CPU backends (torch, and numba when it imports) each run the forward and gradient suites."""

from __future__ import annotations

import math

import pytest
import torch

from gs3.cameras import Cameras
from gs3.gaussians import Gaussians
from gs3.render import RenderOutput, rasterize, resolve_backend
from gs3.render.numba_backend import numba_available, rasterize_numba
from gs3.render.sh import sh_to_color
from gs3.render.torch_backend import rasterize_torch

WIDTH, HEIGHT = 40, 30
NUMBA = pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="numba not installed"))
CPU_BACKENDS = ["torch", NUMBA]


# ----------------------------------------------------------------------------------------------------------
# Brute-force reference: no tiles, no boxes, no chunks; a plain loop over depth-sorted Gaussians per pixel.


def _rotation_from_wxyz(q: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    # R = (w² − |v|²) I + 2 v vᵀ + 2 w [v]×, written out independently of the library's formula.
    v = torch.stack([x, y, z], dim=-1)
    eye = torch.eye(3, dtype=q.dtype).expand(*q.shape[:-1], 3, 3)
    cross = torch.zeros(*q.shape[:-1], 3, 3, dtype=q.dtype)
    cross[..., 0, 1], cross[..., 0, 2] = -z, y
    cross[..., 1, 0], cross[..., 1, 2] = z, -x
    cross[..., 2, 0], cross[..., 2, 1] = -y, x
    return (
        (w * w - (v * v).sum(-1))[..., None, None] * eye
        + 2 * v[..., :, None] * v[..., None, :]
        + 2 * w[..., None, None] * cross
    )


def reference_render(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor) -> RenderOutput:
    return reference_render_with_stops(gaussians, cameras, background)[0]


def reference_render_with_stops(
    gaussians: Gaussians, cameras: Cameras, background: torch.Tensor
) -> tuple[RenderOutput, torch.Tensor]:
    """The render plus, per pixel, whether compositing stopped early (the T ≤ 1e-4 rule fired)."""
    g = gaussians.to(torch.float64)
    K_all, c2w_all = cameras.K.double(), cameras.cam_to_world.double()
    background = background.double()
    W, H = cameras.width, cameras.height
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    px, py = (xs + 0.5).reshape(-1), (ys + 0.5).reshape(-1)
    colors, alphas, depths, stops = [], [], [], []
    for c in range(K_all.shape[0]):
        K, c2w = K_all[c], c2w_all[c]
        R = c2w[:3, :3].T
        t = -R @ c2w[:3, 3]
        mean_c = g.means @ R.T + t
        rot = _rotation_from_wxyz(g.quats)
        cov_world = rot @ torch.diag_embed(g.scales**2) @ rot.transpose(-1, -2)
        cov_c = R @ cov_world @ R.T
        x, y, z = mean_c.unbind(-1)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        lim_xp, lim_xn = (W - cx) / fx + 0.3 * W / (2 * fx), cx / fx + 0.3 * W / (2 * fx)
        lim_yp, lim_yn = (H - cy) / fy + 0.3 * H / (2 * fy), cy / fy + 0.3 * H / (2 * fy)
        keep = z >= 0.01
        x, y, z, cov_c = x[keep], y[keep], z[keep], cov_c[keep]
        tx = z * torch.clamp(x / z, -lim_xn, lim_xp)
        ty = z * torch.clamp(y / z, -lim_yn, lim_yp)
        J = torch.zeros(z.shape[0], 2, 3, dtype=torch.float64)
        J[:, 0, 0], J[:, 0, 2] = fx / z, -fx * tx / z**2
        J[:, 1, 1], J[:, 1, 2] = fy / z, -fy * ty / z**2
        cov2d = J @ cov_c @ J.transpose(-1, -2) + 0.3 * torch.eye(2, dtype=torch.float64)
        conic = torch.linalg.inv(cov2d)
        mx, my = fx * x / z + cx, fy * y / z + cy
        rgb = sh_to_color(g.sh[keep], g.means[keep] - c2w[:3, 3])
        opacity = g.opacities[keep]
        order = torch.sort(z, stable=True).indices

        dx, dy = px[:, None] - mx[None], py[:, None] - my[None]  # (P, M)
        sigma = 0.5 * (conic[:, 0, 0] * dx**2 + conic[:, 1, 1] * dy**2) + conic[:, 0, 1] * dx * dy
        alpha = torch.clamp(opacity * torch.exp(-sigma), max=0.999)
        used = (sigma >= 0) & (alpha >= 1 / 255)
        T = torch.ones(px.shape[0], dtype=torch.float64)
        done = torch.zeros(px.shape[0], dtype=torch.bool)
        color = torch.zeros(px.shape[0], 3, dtype=torch.float64)
        depth = torch.zeros(px.shape[0], dtype=torch.float64)
        for i in order.tolist():
            a = torch.where(used[:, i] & ~done, alpha[:, i], torch.zeros_like(T))
            next_T = T * (1 - a)
            stop = (a > 0) & (next_T <= 1e-4)
            done = done | stop
            a = torch.where(stop, torch.zeros_like(a), a)
            color = color + (a * T)[:, None] * rgb[i]
            depth = depth + a * T * z[i]
            T = T * (1 - a)
        color = color + T[:, None] * background[c]
        colors.append(color.reshape(H, W, 3))
        alphas.append((1 - T).reshape(H, W, 1))
        depths.append(depth.reshape(H, W, 1))
        stops.append(done.reshape(H, W))
    return RenderOutput(torch.stack(colors), torch.stack(alphas), torch.stack(depths)), torch.stack(stops)


# ----------------------------------------------------------------------------------------------------------
# Scenes


def make_cameras(num: int, dtype=torch.float32, width: int = WIDTH, height: int = HEIGHT) -> Cameras:
    K = torch.tensor(
        [[36.0, 0, width / 2 + 0.3], [0, 34.0, height / 2 - 0.2], [0, 0, 1]], dtype=torch.float64
    )
    poses = []
    for i in range(num):
        angle = 0.25 * i
        rot = torch.tensor(
            [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]],
            dtype=torch.float64,
        )
        pose = torch.eye(4, dtype=torch.float64)
        pose[:3, :3] = rot
        pose[:3, 3] = torch.tensor([-0.6 * i, 0.1 * i, 0.2 * i], dtype=torch.float64)
        poses.append(pose)
    return Cameras(K.expand(num, 3, 3).to(dtype), torch.stack(poses).to(dtype), width, height)


def random_scene(seed: int, n: int = 160, degree: int = 3, dtype=torch.float32) -> Gaussians:
    """Gaussians covering the awkward cases: behind the camera and just past the near plane, off screen,
    straddling the border, very thin and very large, exactly equal depths, opacities near 1/255 and near 1."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    z = 1.0 + 5.0 * rand(n)
    z[: n // 10] = -2.0 * rand(n // 10)  # behind the camera
    z[n // 10 : n // 10 + 3] = torch.tensor([0.005, 0.0099, 0.0101])  # around the near plane
    z[n // 10 + 3 : n // 10 + 13] = 2.5  # exactly equal depths
    xy = (rand(n, 2) - 0.5) * 2.0 * z[:, None].abs().clamp_min(1) * torch.tensor([0.7, 0.6])
    xy[n // 5 : n // 5 + 10] *= 3.0  # mostly off screen
    stack = slice(n // 2, n // 2 + 12)  # a pile of nearly opaque Gaussians: compositing stops early there
    xy[stack] = torch.tensor([0.1, -0.05]) * z[stack, None]
    means = torch.cat([xy, z[:, None]], dim=-1)
    scales = 0.02 + 0.25 * rand(n, 3)
    scales[stack] = 0.3
    scales[n // 3 : n // 3 + 8, 0] = 1e-4  # very thin
    scales[n // 3 + 8 : n // 3 + 12] = 3.0  # very large
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    opacities = rand(n)
    opacities[:6] = torch.tensor([1.0, 0.999, 0.995, 1 / 255 * 1.001, 1 / 255 * 1.3, 0.003])
    opacities[n // 10 + 3 : n // 10 + 8] = torch.tensor([1.0, 0.999, 0.0042, 0.005, 0.98])
    opacities[n // 3 + 8 : n // 3 + 12] = 0.05 + 0.1 * rand(4)  # the very large ones: see-through
    opacities[stack] = 0.97 + 0.03 * rand(12)
    sh = 0.4 * torch.randn(n, (degree + 1) ** 2, 3, generator=gen, dtype=torch.float64)
    return Gaussians(means.to(dtype), scales.to(dtype), quats.to(dtype), opacities.to(dtype), sh.to(dtype))


def _assert_close(out: RenderOutput, ref: RenderOutput, atol: float) -> None:
    for name in ("color", "alpha", "depth"):
        a, b = getattr(out, name).double(), getattr(ref, name)
        assert a.shape == b.shape, name
        err = (a - b).abs().max().item()
        assert err <= atol, f"{name}: max abs error {err:.3g} > {atol}"


# ----------------------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_backend_matches_brute_force(degree: int, backend: str) -> None:
    gaussians = random_scene(degree, degree=degree)
    cameras = make_cameras(3)
    background = torch.tensor([[0.1, 0.5, 0.9], [1.0, 0.0, 0.2], [0.3, 0.3, 0.3]])
    out = rasterize(gaussians, cameras, background, backend=backend)
    ref, stopped = reference_render_with_stops(gaussians, cameras, background)
    assert out.color.dtype == torch.float32
    assert out.color.shape == (3, HEIGHT, WIDTH, 3) and out.alpha.shape == out.depth.shape == (
        3,
        HEIGHT,
        WIDTH,
        1,
    )
    _assert_close(out, ref, 1e-5)
    # The scene must exercise what it claims: real coverage and pixels where compositing stopped.
    assert stopped.any() and (ref.alpha < 0.5).any() and (ref.alpha > 0.99).any()


def test_dense_scene_with_early_stop_and_small_chunks() -> None:
    """Many opaque Gaussians so most pixels stop early; a tiny pair budget forces dozens of chunks, so T,
    the accumulations and the 'done' flags must carry over between chunks exactly."""
    gaussians = random_scene(7, n=300, degree=1)
    gaussians.opacities = (gaussians.opacities * 0.3 + 0.7).clamp_max(1.0)
    cameras = make_cameras(2)
    background = torch.tensor([0.2, 0.4, 0.6])
    ref, stopped = reference_render_with_stops(gaussians, cameras, background.expand(2, 3))
    assert stopped.float().mean() > 0.2
    for budget in (37, 1000, 1 << 21):
        color, alpha, depth = rasterize_torch(gaussians, cameras, background.expand(2, 3), pair_budget=budget)
        _assert_close(RenderOutput(color, alpha, depth), ref, 1e-5)
    if numba_available():  # its tiles, lists and per-pixel stops on the same scene
        _assert_close(RenderOutput(*rasterize_numba(gaussians, cameras, background.expand(2, 3))), ref, 1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float64_inputs_match_brute_force_to_rounding(backend: str) -> None:
    gaussians = random_scene(4, degree=2, dtype=torch.float64)
    cameras = make_cameras(2, torch.float64)
    background = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    out = rasterize(gaussians, cameras, background, backend=backend)
    assert out.color.dtype == torch.float64
    _assert_close(out, reference_render(gaussians, cameras, background.expand(2, 3)), 1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_scene_renders_background(backend: str) -> None:
    empty = Gaussians(
        torch.zeros(0, 3), torch.ones(0, 3), torch.ones(0, 4), torch.zeros(0), torch.zeros(0, 4, 3)
    )
    background = torch.tensor([[0.25, 0.5, 0.75], [1.0, 0.0, 0.0]], requires_grad=True)
    out = rasterize(empty, make_cameras(2), background, backend=backend)
    assert torch.equal(out.color, background.detach()[:, None, None, :].expand(2, HEIGHT, WIDTH, 3))
    assert not out.alpha.any() and not out.depth.any()
    out.color.sum().backward()
    assert torch.allclose(background.grad, torch.full((2, 3), float(HEIGHT * WIDTH)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hand_computed_single_gaussian(backend: str) -> None:
    """One isotropic Gaussian on the optical axis: at the pixel next to the centre
    α = o·exp(−½ d²/σ²) with σ² = (f·s/z)² + 0.3, colour = α·c + (1 − α)·bg, depth = α·z."""
    f, s, z, o = 50.0, 0.02, 2.0, 0.8
    K = torch.tensor([[f, 0, 10.0], [0, f, 10.0], [0, 0, 1]])
    cameras = Cameras(K[None], torch.eye(4)[None], 20, 20)
    rgb = torch.tensor([0.9, 0.2, 0.4])
    sh = ((rgb - 0.5) / 0.28209479177387814)[None, None]
    g = Gaussians(
        torch.tensor([[0.0, 0.0, z]]),
        torch.full((1, 3), s),
        torch.tensor([[1.0, 0, 0, 0]]),
        torch.tensor([o]),
        sh,
    )
    bg = torch.tensor([0.1, 0.1, 0.1])
    out = rasterize(g, cameras, bg, backend=backend)
    var = (f * s / z) ** 2 + 0.3
    # pixel (10, 9): centre (10.5, 9.5), d = (0.5, −0.5) from the mean (10, 10)
    alpha = o * math.exp(-0.5 * 0.5 / var)
    assert out.alpha[0, 9, 10, 0].item() == pytest.approx(alpha, rel=1e-6)
    assert out.depth[0, 9, 10, 0].item() == pytest.approx(alpha * z, rel=1e-6)
    expected = alpha * rgb + (1 - alpha) * bg
    assert torch.allclose(out.color[0, 9, 10], expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Gradients


def _small_scene(seed: int, n: int = 7, degree: int = 2) -> tuple[list[torch.Tensor], Cameras]:
    gen = torch.Generator().manual_seed(seed)
    z = 1.5 + 2.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    xy = (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * z[:, None] * 0.5
    means = torch.cat([xy, z[:, None]], dim=-1)
    scales = 0.05 + 0.15 * torch.rand(n, 3, generator=gen, dtype=torch.float64)
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    opacities = 0.3 + 0.65 * torch.rand(n, generator=gen, dtype=torch.float64)
    sh = 0.2 * torch.randn(n, (degree + 1) ** 2, 3, generator=gen, dtype=torch.float64)
    background = torch.rand(2, 3, generator=gen, dtype=torch.float64)
    return [means, scales, quats, opacities, sh, background], make_cameras(2, torch.float64, 12, 10)


def _render_all(cameras: Cameras, pair_budget: int, keep_limit: int = 0, backend: str = "torch"):
    """keep_limit=0: backward replays every chunk; large: backward reuses the pairs kept by the forward.
    (Both only concern the torch backend; backend="numba" renders with the compiled one instead.)"""

    def fn(means, scales, quats, opacities, sh, background):
        g = Gaussians(means, scales, quats, opacities, sh, validate=False)
        if backend == "numba":
            return rasterize_numba(g, cameras, background)
        return rasterize_torch(g, cameras, background, pair_budget=pair_budget, keep_limit=keep_limit)

    return fn


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_every_input_full_jacobian(backend: str) -> None:
    """Every entry of the Jacobian (all outputs × all inputs) against finite differences, on a tiny scene."""
    inputs, _ = _small_scene(3, n=4, degree=1)
    cameras = make_cameras(1, torch.float64, 7, 6)
    cameras.K = cameras.K * torch.tensor([[0.2, 1, 0.2], [1, 0.2, 0.2], [1, 1, 1]], dtype=torch.float64)
    inputs[5] = inputs[5][:1]
    inputs = [t.requires_grad_() for t in inputs]
    fn = _render_all(cameras, 1 << 21, backend=backend)
    assert fn(*inputs)[1].max() > 0.5  # the Gaussians are really in view
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    ("pair_budget", "keep_limit", "backend"),
    [
        (1 << 21, 0, "torch"),
        (13, 0, "torch"),
        (13, 150, "torch"),
        (1 << 21, 1 << 24, "torch"),
        pytest.param(0, 0, "numba", marks=NUMBA.marks),
    ],
)
def test_gradcheck_every_input(pair_budget: int, keep_limit: int, backend: str) -> None:
    """Random projections of the Jacobian (gradcheck's fast mode), several cameras, chunked or not, pairs
    replayed in backward, kept from the forward, or some of each (torch backend); the numba backend."""
    inputs, cameras = _small_scene(3)
    inputs = [t.requires_grad_() for t in inputs]
    fn = _render_all(cameras, pair_budget, keep_limit, backend)
    assert fn(*inputs)[1].max() > 0.5
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_with_early_stop(backend: str) -> None:
    """Nearly opaque, overlapping Gaussians: pixels stop compositing, the gradient must still be exact."""
    inputs, cameras = _small_scene(11, n=12, degree=0)
    means, scales, quats, opacities, sh, background = inputs
    opacities = 0.985 + 0.01 * opacities.clone()
    scales = scales * 2.5
    means = means * torch.tensor([0.3, 0.3, 1.0], dtype=torch.float64)
    inputs = [t.detach().requires_grad_() for t in (means, scales, quats, opacities, sh, background)]
    fn = _render_all(cameras, 1 << 21, backend=backend)
    g = Gaussians(*[t.detach() for t in inputs[:5]])
    assert reference_render_with_stops(g, cameras, inputs[5].detach())[1].any()  # some pixels did stop
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_match_autograd_through_brute_force(backend: str) -> None:
    """Same loss through the rasterizer and through autograd on the float64 reference."""
    inputs, _ = _small_scene(5, n=30, degree=3)
    cameras = make_cameras(2, torch.float64, 24, 18)
    weights = [torch.rand(2, 18, 24, k, dtype=torch.float64) for k in (3, 1, 1)]

    def loss(outputs):
        return sum((w * o).sum() for w, o in zip(weights, outputs))

    ours = [t.clone().requires_grad_() for t in inputs]
    loss(_render_all(cameras, 1 << 21, backend=backend)(*ours)).backward()
    theirs = [t.clone().requires_grad_() for t in inputs]
    g = Gaussians(*theirs[:5], validate=False)
    ref = reference_render(g, cameras, theirs[5])
    loss((ref.color, ref.alpha, ref.depth)).backward()
    for name, a, b in zip(("means", "scales", "quats", "opacities", "sh", "background"), ours, theirs):
        assert torch.allclose(a.grad, b.grad, rtol=1e-7, atol=1e-9), name


# ----------------------------------------------------------------------------------------------------------
# Bad input


def _valid_fields(n: int = 4) -> dict[str, torch.Tensor]:
    return {
        "means": torch.zeros(n, 3) + torch.tensor([0.0, 0.0, 2.0]),
        "scales": torch.full((n, 3), 0.1),
        "quats": torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
        "opacities": torch.full((n,), 0.5),
        "sh": torch.zeros(n, 4, 3),
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("means", torch.zeros(4, 2), "Gaussians.means"),
        ("scales", torch.ones(3, 3), "Gaussians.scales"),
        ("sh", torch.zeros(4, 5, 3), "Gaussians.sh"),
        ("means", torch.tensor([[float("nan"), 0, 2]] * 4), "NaN"),
        ("quats", torch.zeros(4, 4), "zero-norm"),
        ("scales", torch.tensor([[0.1, 0.0, 0.1]] * 4), "positive"),
        ("scales", torch.tensor([[0.1, -0.1, 0.1]] * 4), "positive"),
    ],
)
def test_bad_gaussians_raise_one_line(field: str, value: torch.Tensor, message: str) -> None:
    fields = _valid_fields()
    fields[field] = value
    with pytest.raises(ValueError, match=message) as info:
        Gaussians(**fields)
    assert "\n" not in str(info.value)


def test_bad_rasterize_arguments() -> None:
    g = Gaussians(**_valid_fields())
    cameras = make_cameras(2)
    with pytest.raises(ValueError, match="batch shape"):
        rasterize(g, Cameras(cameras.K[None], cameras.cam_to_world[None], WIDTH, HEIGHT))
    with pytest.raises(ValueError, match="batch shape"):
        rasterize(g, cameras[0])
    with pytest.raises(ValueError, match="background"):
        rasterize(g, cameras, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="background"):
        rasterize(g, cameras, torch.zeros(4))
    with pytest.raises(ValueError, match="backend"):
        rasterize(g, cameras, backend="vulkan")
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(g, cameras, backend="gsplat")
    with pytest.raises(ValueError, match="Gaussians"):
        rasterize(_valid_fields(), cameras)
    with pytest.raises(ValueError, match="on meta"):
        rasterize(g, cameras.to("meta"))


def test_auto_backend_on_cpu() -> None:
    """auto = numba on the CPU when it imports (bit for bit the same render), torch otherwise."""
    g = random_scene(1, n=40)
    cameras = make_cameras(2)
    expected = "numba" if numba_available() else "torch"
    assert resolve_backend(torch.device("cpu")) == expected
    assert torch.equal(rasterize(g, cameras).color, rasterize(g, cameras, backend=expected).color)


# ----------------------------------------------------------------------------------------------------------
# gsplat parity (CUDA only)


def _gsplat_ready() -> bool:
    from gs3.render.gsplat_backend import gsplat_available

    return torch.cuda.is_available() and gsplat_available()


@pytest.mark.cuda
@pytest.mark.skipif(not _gsplat_ready(), reason="needs a CUDA device and gsplat==1.5.3")
@pytest.mark.parametrize("degree", [0, 3])
def test_gsplat_matches_torch_backend(degree: int) -> None:
    g = random_scene(degree + 20, n=400, degree=degree).to("cuda")
    cameras = make_cameras(3).to("cuda")
    background = torch.tensor([0.1, 0.5, 0.9], device="cuda")
    fields = ("means", "scales", "quats", "opacities", "sh")
    results = {}
    for backend in ("torch", "gsplat"):
        leaves = {f: getattr(g, f).detach().clone().requires_grad_() for f in fields}
        bg = background.clone().requires_grad_()
        out = rasterize(Gaussians(**leaves), cameras, bg, backend=backend)
        weights = torch.linspace(0, 1, out.color.numel(), device="cuda").reshape(out.color.shape)
        (out.color * weights).sum().add(out.alpha.sum()).add(0.1 * out.depth.sum()).backward()
        results[backend] = (out, {f: leaves[f].grad for f in fields} | {"background": bg.grad})
    (ours, our_grads), (theirs, their_grads) = results["torch"], results["gsplat"]
    for name in ("color", "alpha", "depth"):
        torch.testing.assert_close(getattr(theirs, name), getattr(ours, name), rtol=1e-4, atol=1e-4)
    for name, grad in our_grads.items():
        torch.testing.assert_close(their_grads[name], grad, rtol=5e-3, atol=5e-3)
