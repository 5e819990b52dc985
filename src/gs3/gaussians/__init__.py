"""3D Gaussians: the container, covariance helpers and PLY I/O (heads and adapter live beside them)."""

from gs3.gaussians.container import Gaussians, covariances, quat_to_rotmat, sh_degree_from_coeffs
from gs3.gaussians.ply import load_ply, save_ply

__all__ = ["Gaussians", "covariances", "load_ply", "quat_to_rotmat", "save_ply", "sh_degree_from_coeffs"]
from gs3.gaussians.adapter import GaussianAdapter
from gs3.gaussians.heads import HEADS, DepthBinHead, PointOffsetHead

__all__ += ["HEADS", "DepthBinHead", "GaussianAdapter", "PointOffsetHead"]
