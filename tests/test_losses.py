"""Losses and metrics: LPIPS (weight loading, behaviour, an independent float64 reference), RenderLoss, PSNR,
SSIM against a direct float64 implementation, depth metrics against hand-computed values."""

from __future__ import annotations

import copy
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from gs3 import vgg
from gs3.errors import ConfigError
from gs3.losses import (
    LPIPS,
    RenderLoss,
    depth_metrics,
    load_lpips_linear_weights,
    lpips,
    psnr,
    ssim,
    torchmetrics_lpips_linear_path,
)

# torchvision vgg16: (index in `features`, in channels, out channels) of every 3×3 conv, written out by hand.
VGG16_CONVS = [
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512),
]  # fmt: skip
POOLS_AFTER = {2, 7, 14, 21}  # conv indices followed (after the ReLU) by a max-pool before relu5_3


def random_vgg_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format vgg16 state dict with random (He-initialised) weights and a classifier key."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, c_in, c_out in VGG16_CONVS:
        std = math.sqrt(2.0 / (9 * c_in))
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) * std
        state[f"features.{index}.bias"] = torch.randn(c_out, generator=g) * 0.01
    state["classifier.6.bias"] = torch.zeros(10)  # torchvision files carry the classifier: must be ignored
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    torch.save(random_vgg_state(), path)
    return path


@pytest.fixture(scope="module")
def random_linear() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(c, generator=g) for c in (64, 128, 256, 512, 512)]


@pytest.fixture(scope="module")
def lpips_random(vgg_file, random_linear) -> LPIPS:
    return LPIPS(vgg.load_vgg16_features(vgg_file), random_linear)


def images(n: int = 2, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 3, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    pattern = 0.5 + 0.25 * torch.sin(12 * xx + 5 * yy)[None, :, :, None]
    return (0.5 * base + 0.5 * pattern + 0.05 * torch.rand(n, h, w, 3, generator=g)).clamp(0, 1)


# ------------------------------------------------------------------------------------ weight loading


def test_trunk_keys_are_torchvision_vgg16_features():
    expected = {}
    for index, c_in, c_out in VGG16_CONVS:
        expected[f"features.{index}.weight"] = (c_out, c_in, 3, 3)
        expected[f"features.{index}.bias"] = (c_out,)
    assert vgg.vgg16_feature_keys() == expected


def test_generated_file_loads_exactly(vgg_file):
    trunk = vgg.load_vgg16_features(vgg_file)
    state = torch.load(vgg_file)
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("defect", ["missing", "shape", "not_torch", "not_a_dict", "absent"])
def test_wrong_vgg_file_is_one_line_error_naming_it(tmp_path, defect):
    path = tmp_path / f"{defect}.pth"
    state = random_vgg_state()
    if defect == "missing":
        del state["features.19.weight"]
        torch.save(state, path)
    elif defect == "shape":
        state["features.5.weight"] = torch.zeros(128, 64, 1, 1)
        torch.save(state, path)
    elif defect == "not_torch":
        path.write_text("this is not a checkpoint")
    elif defect == "not_a_dict":
        torch.save([torch.zeros(3)], path)
    with pytest.raises(ConfigError) as error:
        vgg.load_vgg16_features(path)
    message = _one_line(error)
    assert str(path) in message and "loss.vgg_weights" in message
    if defect == "missing":
        assert "features.19.weight" in message
    if defect == "shape":
        assert "features.5.weight" in message


def _offline(monkeypatch, hub_dir: Path) -> list[str]:
    calls: list[str] = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return calls


def test_offline_without_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    calls = _offline(monkeypatch, tmp_path / "hub")
    with pytest.raises(ConfigError) as error:
        RenderLoss(lpips_weight=0.05)
    message = _one_line(error)
    assert calls == [vgg.VGG16_URL]
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "loss.vgg_weights=PATH" in message and "lpips_weight=0" in message


def test_lambda_zero_builds_no_vgg(tmp_path, monkeypatch):
    calls = _offline(monkeypatch, tmp_path / "hub")
    loss = RenderLoss(lpips_weight=0.0)
    assert calls == [] and loss.lpips is None
    render, target = images(seed=1), images(seed=2)
    out = loss(render, target)
    assert torch.allclose(out["loss"], ((render - target) ** 2).mean()) and out["lpips"] == 0


def test_cached_hub_file_is_used_offline(tmp_path, monkeypatch, vgg_file):
    calls = _offline(monkeypatch, tmp_path / "hub")
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(vgg_file.read_bytes())
    trunk = vgg.load_vgg16_features()
    assert calls == []
    assert torch.equal(trunk.features[28].bias, torch.load(vgg_file)["features.28.bias"])


def test_download_goes_into_the_hub_cache(tmp_path, monkeypatch, vgg_file):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def fake_download(url, *args, **kwargs):  # what torch.hub does when online: file into <hub>/checkpoints
        target = hub / "checkpoints" / Path(url).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(vgg_file.read_bytes())
        return torch.load(target)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    trunk = vgg.load_vgg16_features()
    assert torch.equal(trunk.features[0].weight, torch.load(vgg_file)["features.0.weight"])


def test_torchmetrics_linear_weights_load():
    weights = load_lpips_linear_weights()
    assert [w.shape[0] for w in weights] == [64, 128, 256, 512, 512]
    assert all(bool((w >= 0).all()) for w in weights)  # LPIPS keeps its 1×1 weights non-negative
    raw = torch.load(torchmetrics_lpips_linear_path(), map_location="cpu")
    assert torch.equal(weights[3], raw["lin3.model.1.weight"].reshape(-1))


def test_wrong_linear_file_is_one_line_error(tmp_path):
    path = tmp_path / "lin.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, path)
    with pytest.raises(ConfigError) as error:
        load_lpips_linear_weights(path)
    message = _one_line(error)
    assert str(path) in message and "lin1.model.1.weight" in message


# ------------------------------------------------------------------------------------ LPIPS behaviour


def reference_lpips(
    x: torch.Tensor, y: torch.Tensor, state: dict, linear: list[torch.Tensor]
) -> torch.Tensor:
    """LPIPS written directly from the definition, in float64, from the raw state dict."""
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).reshape(1, 3, 1, 1)

    def stages(img):
        h = ((img.double().permute(0, 3, 1, 2) * 2 - 1) - shift) / scale
        out = []
        for index, _, _ in VGG16_CONVS:
            w, b = state[f"features.{index}.weight"].double(), state[f"features.{index}.bias"].double()
            h = torch.relu(torch.nn.functional.conv2d(h, w, b, padding=1))
            if index in (2, 7, 14, 21, 28):  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
                out.append(h)
            if index in POOLS_AFTER:
                h = torch.nn.functional.max_pool2d(h, 2)
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for fx, fy, w in zip(stages(x), stages(y), linear):
        nx = fx / fx.norm(dim=1, keepdim=True)
        ny = fy / fy.norm(dim=1, keepdim=True)
        total += ((nx - ny) ** 2 * w.double().reshape(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


def test_lpips_matches_float64_reference(lpips_random, vgg_file, random_linear):
    x, y = images(n=1, h=32, w=32, seed=3), images(n=1, h=32, w=32, seed=4)
    ours = lpips(x, y, lpips_random)
    ref = reference_lpips(x, y, torch.load(vgg_file), random_linear)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(lpips(y, x, lpips_random), ours)  # symmetric


def test_lpips_of_identical_images_is_zero(lpips_random):
    x = images(n=2, h=32, w=32)
    assert lpips(x, x, lpips_random).abs().max() < 1e-6


@pytest.mark.parametrize("linear_source", ["random", "torchmetrics"])
def test_lpips_grows_with_noise(lpips_random, random_linear, linear_source):
    linear = random_linear if linear_source == "random" else load_lpips_linear_weights()
    network = LPIPS(lpips_random.trunk, linear)
    x = images(n=2, h=32, w=32, seed=5)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    sigmas = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)
    noisy = torch.cat([(x + sigma * noise).clamp(0, 1) for sigma in sigmas])
    d = lpips(noisy, x.repeat(len(sigmas), 1, 1, 1), network).reshape(len(sigmas), 2)  # (levels, images)
    assert bool((d[1:] > d[:-1]).all()), d


def test_lpips_is_frozen_but_differentiable(lpips_random):
    assert all(not p.requires_grad for p in lpips_random.parameters())
    lpips_random.train()
    assert not lpips_random.training
    net64 = LPIPS(
        copy.deepcopy(lpips_random.trunk), [getattr(lpips_random, f"linear{i}") for i in range(5)]
    ).double()
    x = images(n=1, h=16, w=16, seed=7).double().requires_grad_(True)
    y = images(n=1, h=16, w=16, seed=8).double()
    net64(x, y).sum().backward()
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    eps = 1e-7  # small: ReLU and max-pool kinks make wider central differences disagree
    with torch.no_grad():
        numeric = (net64(x + eps * direction, y) - net64(x - eps * direction, y)).sum() / (2 * eps)
    analytic = (x.grad * direction).sum()
    assert analytic.abs() > 1e-6
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)
    assert all(p.grad is None for p in net64.parameters())


def test_render_loss_combines_mse_and_lpips(lpips_random):
    loss = RenderLoss(lpips_weight=0.05, lpips=lpips_random)
    render, target = images(h=16, w=16, seed=10), images(h=16, w=16, seed=11)
    out = loss(render, target)
    mse = ((render - target) ** 2).mean()
    torch.testing.assert_close(out["mse"], mse)
    torch.testing.assert_close(out["lpips"], lpips_random(render, target).mean())
    torch.testing.assert_close(out["loss"], mse + 0.05 * out["lpips"])
    # the frozen network is neither trained nor checkpointed, but follows dtype/device moves
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    loss.double()
    assert lpips_random.linear0.dtype == torch.float64
    loss.float()


# ------------------------------------------------------------------------------------ metrics


def test_psnr_hand_computed():
    a = torch.zeros(2, 4, 5, 3)
    b = a.clone()
    b[0] += 0.1  # mse 0.01 → 20 dB
    b[1, 0, 0, 0] = 1.0  # mse 1/60 → 10·log10(60)
    torch.testing.assert_close(psnr(b, a), torch.tensor([20.0, 10 * math.log10(60)]))


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Direct float64 SSIM of one (H, W, 3) pair: explicit 11×11 window sums at every valid position."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for c in range(3):
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                px, py = x[i : i + 11, j : j + 11, c], y[i : i + 11, j : j + 11, c]
                mx, my = (window * px).sum(), (window * py).sum()
                vx = (window * (px - mx) ** 2).sum()
                vy = (window * (py - my) ** 2).sum()
                cov = (window * (px - mx) * (py - my)).sum()
                values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_direct_float64_implementation():
    x = images(n=2, h=20, w=23, seed=12)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(13))).clamp(0, 1)
    ours = ssim(x, y)
    ref = torch.tensor(
        [reference_ssim(x[i].double().numpy(), y[i].double().numpy()) for i in range(2)], dtype=torch.float64
    )
    torch.testing.assert_close(ssim(x.double(), y.double()), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.double(), ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    assert bool((ours < 0.99).all())


def test_depth_metrics_hand_computed():
    gt = torch.tensor([[2.0, 4.0, 0.0], [1.0, 5.0, 3.0]])
    pred = torch.tensor([[2.2, 2.0, 7.0], [1.0, 0.0, 3.9]])
    # counted pixels (gt>0 & pred>0): (2.2|2), (2|4), (1|1), (3.9|3); |d|/gt = .1, .5, 0, .3
    out = depth_metrics(pred, gt)
    assert out["count"] == 4
    torch.testing.assert_close(out["abs_rel"], torch.tensor(0.9 / 4))
    # ratios max(p/g, g/p): 1.1, 2, 1, 1.3 → below 1.25: 2 of 4
    torch.testing.assert_close(out["delta1"], torch.tensor(0.5))
    empty = depth_metrics(torch.zeros(3), torch.ones(3))
    assert empty["count"] == 0 and math.isnan(float(empty["abs_rel"]))
