"""Gaussians as .ply in the layout Gaussian-splatting viewers read (the 3DGS training output).

Vertex properties: x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..(3·((d+1)²−1)−1) channel-major, opacity as a
logit, scale_0..2 as log standard deviations, rot_0..3 as a wxyz quaternion.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from gs3.files import atomic_write
from gs3.gaussians.container import Gaussians, sh_degree_from_coeffs

_OPACITY_EPS = 1e-6


def save_ply(gaussians: Gaussians, path: str | os.PathLike) -> None:
    """Write atomically (a temporary file renamed over `path` when complete), with the umask's permissions."""
    g = gaussians.detach().to("cpu", torch.float32)
    n = g.sh.shape[0]
    dc = g.sh[:, 0, :].numpy()
    # 3DGS stores the rest as (N, 3, K-1) flattened: all of red's coefficients, then green's, then blue's.
    rest = g.sh[:, 1:, :].transpose(1, 2).reshape(n, -1).numpy()
    opacity = g.opacities.clamp(_OPACITY_EPS, 1 - _OPACITY_EPS)
    columns = {
        **{axis: g.means[:, i].numpy() for i, axis in enumerate("xyz")},
        **{f"n{axis}": np.zeros(n, np.float32) for axis in "xyz"},
        **{f"f_dc_{i}": dc[:, i] for i in range(3)},
        **{f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])},
        "opacity": torch.logit(opacity).numpy(),
        **{f"scale_{i}": g.scales[:, i].log().numpy() for i in range(3)},
        **{f"rot_{i}": g.normalized_quats()[:, i].numpy() for i in range(4)},
    }
    vertices = np.empty(n, dtype=[(name, "f4") for name in columns])
    for name, values in columns.items():
        vertices[name] = values
    ply = PlyData([PlyElement.describe(vertices, "vertex")])
    atomic_write(path, ply.write)


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS-layout .ply; a missing property raises one line naming the file and the property."""
    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as error:  # plyfile raises several types for malformed files
        raise ValueError(f"{path}: not a readable .ply with a 'vertex' element ({error})") from None
    names = set(vertex.data.dtype.names)

    def columns(prefix: str, count: int) -> torch.Tensor:
        keys = [f"{prefix}{i}" for i in range(count)] if prefix else list("xyz")
        missing = [k for k in keys if k not in names]
        if missing:
            raise ValueError(
                f"{path}: missing vertex property '{missing[0]}' of the Gaussian-splatting layout"
            )
        if not keys:  # degree 0: no f_rest_* at all
            return torch.zeros(len(vertex.data), 0)
        return torch.from_numpy(np.stack([np.asarray(vertex[k], np.float32) for k in keys], axis=-1))

    n_rest = sum(1 for k in names if k.startswith("f_rest_"))
    num_coeffs = 1 + n_rest // 3
    try:
        sh_degree_from_coeffs(num_coeffs)
    except ValueError:
        raise ValueError(f"{path}: {n_rest} f_rest_* properties do not make a SH degree 0-3") from None
    dc = columns("f_dc_", 3)[:, None, :]
    rest = columns("f_rest_", n_rest).reshape(dc.shape[0], 3, num_coeffs - 1).transpose(1, 2)
    if "opacity" not in names:
        raise ValueError(f"{path}: missing vertex property 'opacity' of the Gaussian-splatting layout")
    return Gaussians(
        means=columns("", 3),
        scales=columns("scale_", 3).exp(),
        quats=columns("rot_", 4),
        opacities=torch.sigmoid(torch.from_numpy(np.asarray(vertex["opacity"], np.float32))),
        sh=torch.cat([dc, rest], dim=1),
    )
