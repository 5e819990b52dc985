"""Differentiable rendering of 3D Gaussians: `rasterize` (torch reference, compiled CPU loops, gsplat CUDA).

    out = rasterize(gaussians, cameras, background=None, backend="auto")
    out.color (C, H, W, 3), out.alpha (C, H, W, 1), out.depth (C, H, W, 1)   # C = cameras.batch_shape[0]

Conventions (DESIGN.md, as gsplat 1.5.3): EWA splatting with 0.3 px² blur, α = min(0.999, o·exp(−σ)),
α < 1/255 skipped, front-to-back compositing stopping before T ≤ 1e-4; colour = Σ cᵢαᵢTᵢ + T·background,
alpha = 1 − T, depth = Σ zᵢαᵢTᵢ (un-normalised expected depth); colour of a Gaussian = SH(dir) + 0.5 ≥ 0.

Backends: "torch" (the reference; any device), "numba" (compiled CPU loops, `numba_backend.py`), "gsplat"
(CUDA). "auto" picks gsplat on CUDA when it is installed, numba on the CPU when it imports, torch otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from gs3.cameras import Cameras
from gs3.gaussians.container import Gaussians
from gs3.render.gsplat_backend import gsplat_available, rasterize_gsplat
from gs3.render.numba_backend import numba_available, rasterize_numba
from gs3.render.sh import eval_sh, rgb_to_sh0, sh_basis, sh_to_color
from gs3.render.torch_backend import rasterize_torch

BACKENDS = ("auto", "torch", "numba", "gsplat")


@dataclass
class RenderOutput:
    color: Float[Tensor, "c h w 3"]
    alpha: Float[Tensor, "c h w 1"]
    depth: Float[Tensor, "c h w 1"]


def rasterize(
    gaussians: Gaussians,
    cameras: Cameras,
    background: Float[Tensor, "*c 3"] | None = None,
    backend: str = "auto",
) -> RenderOutput:
    """Render `gaussians` into every camera of `cameras` (batch shape (C,)); differentiable w.r.t. all
    Gaussian fields and `background` ((3,) or (C, 3); black when None)."""
    if not isinstance(gaussians, Gaussians):
        raise ValueError(f"rasterize: gaussians must be a gs3 Gaussians, got {type(gaussians).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    if len(cameras.batch_shape) != 1:
        raise ValueError(f"rasterize: cameras must have batch shape (C,), got {tuple(cameras.batch_shape)}")
    num_cameras = cameras.batch_shape[0]
    device, dtype = gaussians.means.device, gaussians.means.dtype
    if cameras.K.device != device or cameras.cam_to_world.device != device:
        raise ValueError(f"rasterize: cameras on {cameras.K.device}, gaussians on {device}")
    cameras = Cameras(cameras.K.to(dtype), cameras.cam_to_world.to(dtype), cameras.width, cameras.height)
    background = _background(background, num_cameras, device, dtype)

    if backend == "auto":
        backend = resolve_backend(device)
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError("rasterize: backend='gsplat' needs CUDA tensors; use backend='torch' on the CPU")
        if not gsplat_available():
            raise ValueError("rasterize: backend='gsplat' needs gsplat==1.5.3 (pip install 'gs3[cuda]')")
        color, alpha, depth = rasterize_gsplat(gaussians, cameras, background)
    elif backend == "numba":
        if device.type != "cpu":
            raise ValueError(f"rasterize: backend='numba' runs on the CPU, got tensors on {device}")
        if not numba_available():
            raise ValueError("rasterize: backend='numba' needs numba (pip install numba)")
        color, alpha, depth = rasterize_numba(gaussians, cameras, background)
    else:
        color, alpha, depth = rasterize_torch(gaussians, cameras, background)
    return RenderOutput(color=color, alpha=alpha, depth=depth)


def resolve_backend(device: torch.device) -> str:
    """The backend "auto" means on `device`."""
    if device.type == "cuda" and gsplat_available():
        return "gsplat"
    if device.type == "cpu" and numba_available():
        return "numba"
    return "torch"


def _background(
    background: Tensor | None, num_cameras: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    if background is None:
        return torch.zeros(num_cameras, 3, device=device, dtype=dtype)
    if not isinstance(background, Tensor):
        raise ValueError(f"rasterize: background must be a tensor, got {type(background).__name__}")
    if background.device != device:
        raise ValueError(f"rasterize: background on {background.device}, gaussians on {device}")
    if tuple(background.shape) == (3,):
        return background.to(dtype).expand(num_cameras, 3)
    if tuple(background.shape) == (num_cameras, 3):
        return background.to(dtype)
    raise ValueError(
        f"rasterize: background must have shape (3,) or ({num_cameras}, 3), got {tuple(background.shape)}"
    )


__all__ = [
    "BACKENDS",
    "RenderOutput",
    "eval_sh",
    "rasterize",
    "resolve_backend",
    "rgb_to_sh0",
    "sh_basis",
    "sh_to_color",
]
