"""The pre-training loss `L = MSE + λ·LPIPS_VGG` and the image/depth metrics of the renders.

Images are channels-last `(N, H, W, 3)` in [0, 1] (DESIGN.md). LPIPS follows Zhang et al. 2018 ("lin" variant,
VGG-16): inputs mapped to [-1, 1], shifted/scaled per channel, VGG-16 activations at relu1_2 … relu5_3 unit-
normalised over channels, squared differences weighted by learned non-negative 1×1 layers, averaged over space
and summed over the five stages. The trunk is torchvision's VGG-16 (gs3.vgg); the 1×1 layers are the small
`vgg.pth` that ships inside torchmetrics (keys `lin{0..4}.model.1.weight`, shapes (1, C, 1, 1)).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gs3.errors import ConfigError
from gs3.vgg import LPIPS_STAGE_CHANNELS, VGG16Features, load_vgg16_features

# LPIPS input normalisation for images in [-1, 1] (constants of the reference implementation).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def torchmetrics_lpips_linear_path() -> Path:
    """The LPIPS VGG linear-layer weights bundled with torchmetrics (located without importing it: slow)."""
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "LPIPS linear weights ship with torchmetrics, which is not installed: pip install torchmetrics, "
            "or set loss.lpips_weight=0"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "functional" / "image" / "lpips_models" / "vgg.pth"


def load_lpips_linear_weights(path: str | os.PathLike | None = None) -> list[Tensor]:
    """The five (C,) channel weights of LPIPS's 1×1 layers, from `path` or torchmetrics' bundled file."""
    path = Path(path) if path is not None else torchmetrics_lpips_linear_path()
    if not path.is_file():
        raise ConfigError(f"loss.lpips_linear_weights={path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(
            f"loss.lpips_linear_weights={path}: cannot be read as a torch state dict ({type(error).__name__})"
        ) from None
    weights = []
    for stage, channels in enumerate(LPIPS_STAGE_CHANNELS):
        key = f"lin{stage}.model.1.weight"
        value = state.get(key) if isinstance(state, dict) else None
        if not isinstance(value, Tensor) or tuple(value.shape) != (1, channels, 1, 1):
            got = "missing" if value is None else f"shape {tuple(getattr(value, 'shape', ()))}"
            raise ConfigError(
                f"loss.lpips_linear_weights={path}: {key} is {got}, expected (1, {channels}, 1, 1)"
            )
        weights.append(value.reshape(channels).float())
    return weights


class LPIPS(nn.Module):
    """LPIPS distance on VGG-16, per image. Frozen (no parameter needs grad, always in eval mode) but
    differentiable with respect to its inputs.

    Args:
        trunk: a loaded VGG16Features; `None` loads torchvision's weights via `gs3.vgg.load_vgg16_features`.
        linear_weights: five (C,) tensors; `None` loads torchmetrics' bundled `vgg.pth`.
    """

    def __init__(
        self, trunk: VGG16Features | None = None, linear_weights: list[Tensor] | None = None
    ) -> None:
        super().__init__()
        self.trunk = trunk if trunk is not None else load_vgg16_features()
        weights = linear_weights if linear_weights is not None else load_lpips_linear_weights()
        for stage, weight in enumerate(weights):
            self.register_buffer(f"linear{stage}", weight.detach().float().reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(
        cls, vgg_weights: str | os.PathLike | None = None, linear_weights: str | os.PathLike | None = None
    ) -> LPIPS:
        return cls(load_vgg16_features(vgg_weights), load_lpips_linear_weights(linear_weights))

    def train(self, mode: bool = True) -> LPIPS:
        # Frozen network: dropout/batch-norm free anyway, but stay in eval whatever the parent does.
        return super().train(False)

    def _normalized_stages(self, images: Float[Tensor, "n h w 3"]) -> list[Tensor]:
        x = images.permute(0, 3, 1, 2) * 2.0 - 1.0
        x = (x - self.shift) / self.scale
        return [f * torch.rsqrt(f.square().sum(dim=1, keepdim=True) + 1e-10) for f in self.trunk.stages(x)]

    def forward(
        self, images: Float[Tensor, "n h w 3"], targets: Float[Tensor, "n h w 3"]
    ) -> Float[Tensor, " n"]:
        if images.shape != targets.shape or images.shape[-1] != 3:
            raise ValueError(
                f"LPIPS: expected two (N, H, W, 3) images, got {tuple(images.shape)}, {tuple(targets.shape)}"
            )
        features_x = self._normalized_stages(images)
        # Targets are usually real images: without a graph through them the backward pass halves.
        with torch.set_grad_enabled(torch.is_grad_enabled() and targets.requires_grad):
            features_y = self._normalized_stages(targets)
        distance = images.new_zeros(images.shape[0])
        for stage, (fx, fy) in enumerate(zip(features_x, features_y)):
            weight = getattr(self, f"linear{stage}")
            squared = (fx - fy).square()
            distance = distance + (squared * weight).sum(dim=1).mean(dim=(1, 2))
        return distance


class RenderLoss(nn.Module):
    """`loss = MSE(render, target) + lpips_weight · mean LPIPS(render, target)`.

    With `lpips_weight == 0` no VGG is built or loaded. The LPIPS network is kept out of this module's
    parameters and state dict (it is fixed, pretrained and 59 MB): `.to()`/`.cuda()` still move it.
    """

    def __init__(
        self,
        lpips_weight: float = 0.05,
        vgg_weights: str | os.PathLike | None = None,
        lpips_linear_weights: str | os.PathLike | None = None,
        lpips: LPIPS | None = None,
    ) -> None:
        super().__init__()
        if lpips_weight < 0:
            raise ConfigError(f"loss.lpips_weight={lpips_weight}: must be >= 0")
        self.lpips_weight = float(lpips_weight)
        network = None
        if self.lpips_weight > 0:
            network = lpips if lpips is not None else LPIPS.from_files(vgg_weights, lpips_linear_weights)
        object.__setattr__(self, "_lpips", network)  # not a submodule: see the class docstring

    @property
    def lpips(self) -> LPIPS | None:
        return self._lpips

    def _apply(self, fn, recurse: bool = True):
        if self._lpips is not None:
            self._lpips._apply(fn)
        return super()._apply(fn, recurse)

    def forward(
        self, render: Float[Tensor, "n h w 3"], target: Float[Tensor, "n h w 3"]
    ) -> dict[str, Tensor]:
        if render.shape != target.shape:
            raise ValueError(
                f"RenderLoss: render {tuple(render.shape)} and target {tuple(target.shape)} differ"
            )
        mse = F.mse_loss(render, target)
        if self._lpips is None:
            return {"loss": mse, "mse": mse, "lpips": mse.new_zeros(())}
        distance = self._lpips(render, target).mean()
        return {"loss": mse + self.lpips_weight * distance, "mse": mse, "lpips": distance}


# ---------------------------------------------------------------------------------------------- metrics


def psnr(
    images: Float[Tensor, "*batch h w 3"], targets: Float[Tensor, "*batch h w 3"], data_range: float = 1.0
) -> Float[Tensor, "*batch"]:
    """Peak signal-to-noise ratio per image, in dB (infinite for identical images)."""
    dtype = torch.promote_types(images.dtype, torch.float32)
    mse = (images.to(dtype) - targets.to(dtype)).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 1D Gaussian window of `size` taps."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(x**2) / (2 * sigma**2))
    return (window / window.sum()).to(dtype)


def ssim(
    images: Float[Tensor, "*batch h w 3"],
    targets: Float[Tensor, "*batch h w 3"],
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> Float[Tensor, "*batch"]:
    """Structural similarity per image (Wang et al. 2004): Gaussian window 11×11, σ = 1.5, K1 = 0.01,
    K2 = 0.03, local statistics over the 'valid' region (no padding), map averaged over pixels, channels."""
    batch = images.shape[:-3]
    h, w = images.shape[-3:-1]
    if h < window_size or w < window_size:
        raise ValueError(f"ssim: images {h}x{w} are smaller than the {window_size}x{window_size} window")
    dtype = torch.promote_types(images.dtype, torch.float32)
    x = images.reshape(-1, h, w, 3).permute(0, 3, 1, 2).reshape(-1, 1, h, w).to(dtype)
    y = targets.reshape(-1, h, w, 3).permute(0, 3, 1, 2).reshape(-1, 1, h, w).to(dtype)
    window = gaussian_window(window_size, sigma, dtype).to(x.device)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, valid region only
        t = F.conv2d(t, window.reshape(1, 1, 1, -1))
        return F.conv2d(t, window.reshape(1, 1, -1, 1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(-1, 3 * ssim_map.shape[-2] * ssim_map.shape[-1]).mean(dim=1).reshape(batch)


def depth_metrics(
    pred_depth: Float[Tensor, "*shape"],
    sensor_depth: Float[Tensor, "*shape"],
    valid: Bool[Tensor, "*shape"] | None = None,
) -> dict[str, Tensor]:
    """AbsRel = mean |pred − gt| / gt and δ1 = fraction with max(pred/gt, gt/pred) < 1.25, pooled over all
    pixels with gt > 0 and pred > 0 (and `valid`, if given). NaN when no pixel qualifies.

    For renders pass the rasterizer's expected depth divided by its alpha (DESIGN.md: depth is un-normalised).
    """
    if pred_depth.shape != sensor_depth.shape:
        raise ValueError(
            f"depth_metrics: pred {tuple(pred_depth.shape)} and gt {tuple(sensor_depth.shape)} differ"
        )
    pred, gt = pred_depth.detach().double(), sensor_depth.detach().double()
    mask = (gt > 0) & (pred > 0) & torch.isfinite(pred) & torch.isfinite(gt)
    if valid is not None:
        mask &= valid
    pred, gt = pred[mask], gt[mask]
    if pred.numel() == 0:
        nan = torch.tensor(math.nan, device=pred_depth.device)
        return {"abs_rel": nan, "delta1": nan.clone(), "count": torch.tensor(0)}
    abs_rel = ((pred - gt).abs() / gt).mean()
    delta1 = (torch.maximum(pred / gt, gt / pred) < 1.25).double().mean()
    return {"abs_rel": abs_rel.float(), "delta1": delta1.float(), "count": torch.tensor(pred.numel())}


def lpips(images: Float[Tensor, "n h w 3"], targets: Float[Tensor, "n h w 3"], network: LPIPS) -> Tensor:
    """LPIPS per image without building a graph (metric use)."""
    with torch.no_grad():
        return network(images, targets)
