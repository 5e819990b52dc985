"""Encoders pre-trained by GS³, built by name: `build_encoder({"type": "SpUNet-v1m1", ...})`.

Point encoders ("SpUNet-v1m1", "PointNet2SASSG"): forward(coord (N,3), feat (N,C), offset (B,)) -> (N,128).
Image encoder ("ResNet50"): forward(image (N,H,W,3)) -> (N,128,H,W).
"""

# Importing a module registers its encoders. sparse_unet imports spconv only when a network is built, so
# this package imports without spconv.
from gs3.encoders import pointnet2, resnet, sparse_unet  # noqa: F401
from gs3.encoders.registry import ENCODERS, build_encoder

__all__ = ["ENCODERS", "build_encoder"]
