"""Encoders pre-trained by GS³, built by name: `build_encoder({"type": "SpUNet-v1m1", ...})`.

Point encoders ("SpUNet-v1m1", "PointNet2SASSG"): forward(coord (N,3), feat (N,C), offset (B,)) -> (N,128).
Image encoder ("ResNet50"): forward(image (N,H,W,3)) -> (N,128,H,W).
"""

import importlib
from pathlib import Path

# sparse_unet imports spconv only when a network is built, so this import works without spconv.
from gs3.encoders import sparse_unet  # noqa: F401  (registers "SpUNet-v1m1")
from gs3.encoders.registry import ENCODERS, build_encoder

# Importing a module registers its encoders. pointnet2.py and resnet.py are being written in parallel;
# the existence check lets the package import until both land — replace it by plain imports then.
for _module in ("pointnet2", "resnet"):
    if (Path(__file__).parent / f"{_module}.py").exists():
        importlib.import_module(f"gs3.encoders.{_module}")

__all__ = ["ENCODERS", "build_encoder"]
