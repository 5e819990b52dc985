"""CUDA backend: gsplat 1.5.3's `rasterization`, configured to follow the torch backend's conventions exactly.

Settings that matter (checked against gsplat 1.5.3): packed=False; eps2d=0.3 (added to the 2D covariance
diagonal); near_plane=0.01 (z < 0.01 culled), far_plane=1e10; radius_clip=0 (no size culling); tile_size=16;
rasterize_mode="classic" (no antialiasing compensation); camera_model="pinhole"; render_mode="RGB+D",
whose fourth channel is the un-normalised expected depth Σ zᵢαᵢTᵢ ("RGB+ED" would divide it by alpha).
With `sh_degree` set, gsplat evaluates the SH itself with dirs = mean − camera centre and already applies
`clamp_min(colour + 0.5, 0)`, so the raw coefficients go in unchanged. The 1/255 α threshold, the 0.999 α cap
and the "stop before T ≤ 1e-4" rule are gsplat's own.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from gs3.cameras import Cameras
from gs3.gaussians.container import Gaussians
from gs3.render.projection import EPS2D, NEAR_PLANE


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build raising something else
        return False
    return True


def gsplat_arguments(
    gaussians: Gaussians,
    cameras: Cameras,
    background: Float[Tensor, "c 3"],
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """The keyword arguments of `gsplat.rasterization` for these Gaussians and cameras, in `dtype` (gsplat's
    CUDA kernels take float32). tests/test_render_gsplat_cpu.py feeds the same arguments to gsplat's pure
    PyTorch reference functions on the CPU."""
    return {
        "means": gaussians.means.to(dtype),
        "quats": gaussians.quats.to(dtype),  # wxyz, as gs3's
        "scales": gaussians.scales.to(dtype),
        "opacities": gaussians.opacities.to(dtype),
        "colors": gaussians.sh.to(dtype),  # (N, (d+1)², 3) SH coefficients, evaluated by gsplat
        "viewmats": cameras.world_to_cam.to(dtype),  # (C, 4, 4) world-to-camera
        "Ks": cameras.K.to(dtype),
        "width": cameras.width,
        "height": cameras.height,
        "near_plane": NEAR_PLANE,
        "far_plane": 1e10,
        "radius_clip": 0.0,
        "eps2d": EPS2D,
        "sh_degree": gaussians.sh_degree,
        "packed": False,
        "tile_size": 16,
        "backgrounds": background.to(dtype),
        "render_mode": "RGB+D",
        "rasterize_mode": "classic",
        "camera_model": "pinhole",
    }


def rasterize_gsplat(
    gaussians: Gaussians, cameras: Cameras, background: Float[Tensor, "c 3"]
) -> tuple[Float[Tensor, "c h w 3"], Float[Tensor, "c h w 1"], Float[Tensor, "c h w 1"]]:
    import gsplat

    if gaussians.means.device.type != "cuda":
        raise ValueError("rasterize: backend='gsplat' needs CUDA tensors; use backend='torch' on the CPU")
    dtype = gaussians.means.dtype
    render, alpha, _ = gsplat.rasterization(**gsplat_arguments(gaussians, cameras, background))
    return render[..., :3].to(dtype), alpha.to(dtype), render[..., 3:4].to(dtype)
