"""Gaussian heads: per-pixel (depth-bin) and per-point (point-offset) features → one `Gaussians` per sample.

Both heads predict k Gaussians for every *visible* pixel/point (the 2D/3D mask) and nothing for the others;
the raw scale/rotation/opacity/SH numbers go through `GaussianAdapter` (gs3.gaussians.adapter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from gs3.cameras import Cameras, transform_points
from gs3.errors import ConfigError
from gs3.gaussians.adapter import (
    GaussianAdapter,
    focal_pixels,
    pixel_footprint,
    quat_multiply,
    rotmat_to_quat,
)
from gs3.gaussians.container import Gaussians
from gs3.registry import Registry

HEADS = Registry("gaussian head")

DEPTH_SPACINGS = ("disparity", "depth")
DEPTH_PRIORS = ("uniform_bins", "log_uniform_depth")


def _mlp(in_channels: int, hidden_channels: int, out_channels: int, out_gain: float) -> nn.Sequential:
    """Two linear layers; the last starts small so that raw outputs start near the adapter's neutral point."""
    mlp = nn.Sequential(
        nn.Linear(in_channels, hidden_channels), nn.GELU(), nn.Linear(hidden_channels, out_channels)
    )
    with torch.no_grad():
        mlp[2].weight.mul_(out_gain)
        mlp[2].bias.zero_()
    return mlp


def pdf_to_opacity(probability: Tensor, exponent: float) -> Tensor:
    """Monotone map [0, 1] → [0, 1] fixing 0 and 1: `½(1 − (1 − p)^e + p^(1/e))` (pixelSplat's formula).

    e = 1 is the identity; e > 1 lifts small probabilities, so that Gaussians are not nearly transparent
    while the depth distribution is still flat.
    """
    if exponent == 1.0:
        return probability
    return 0.5 * (1 - (1 - probability) ** exponent + probability.clamp_min(1e-8) ** (1 / exponent))


@dataclass
class PixelGaussians:
    """Dense per-pixel head output, before masking: k Gaussians for every pixel of every view.

    Shapes: means/scales (B, V, H, W, k, 3), quats (…, k, 4), opacities/depths/bin_index (…, k),
    sh (…, k, (d+1)², 3), probabilities (B, V, H, W, Z) (the softmax over depth bins).
    """

    means: Tensor
    scales: Tensor
    quats: Tensor
    opacities: Tensor
    sh: Tensor
    depths: Tensor
    bin_index: Tensor
    probabilities: Tensor

    def pack(self, visible: Bool[Tensor, "b v h w"] | None = None, validate: bool = False) -> list[Gaussians]:
        """One Gaussians per sample: its views' visible pixels (row-major, views in order) × k."""
        batch = self.means.shape[0]
        if visible is None:
            visible = torch.ones(self.means.shape[:4], dtype=torch.bool, device=self.means.device)
        out = []
        for b in range(batch):
            mask = visible[b]
            fields = [self.means, self.scales, self.quats, self.opacities, self.sh]
            selected = [f[b][mask].flatten(0, 1) for f in fields]  # (visible, k, …) → (visible·k, …)
            out.append(Gaussians(*selected, validate=validate))
        return out


@HEADS.register("depth_bin")
class DepthBinHead(nn.Module):
    """Per-pixel depth distribution over Z bins between near and far; k Gaussians on the pixel's ray.

    Bins are spaced uniformly in **disparity** (1/depth) by default: they are then narrow near the camera,
    where a pixel's footprint is small and a depth error moves a Gaussian by many pixels in another view,
    and wide far away, where the same relative error costs little; it also makes bins equally wide in
    epipolar-line pixels, and it is how pixelSplat samples depth. `spacing="depth"` gives uniform depth bins.

    Per pixel, k distinct bins are chosen: in training (`sample_in_training`, default) they are *drawn*
    from the softmax (Gumbel top-k, i.e. sampling without replacement), at evaluation they are the top-k.
    Drawing is pixelSplat's choice and it matters: opacity only passes gradient to the chosen bin, so with
    a deterministic top-k a pixel keeps the bin that happened to win at initialisation and its depth can
    only move within it; drawn bins let every depth be tried and the ones that render both views well
    gain probability. Each chosen bin is refined by an offset in [0, 1] (sigmoid; 0 = the near edge of the
    bin, interpolated in the spacing's variable). The mean is `centre + z · dir` with dir the pixel's ray
    scaled to camera-space z = 1, so its camera depth is z.
    Opacity is the chosen bin's probability (mapped by `pdf_to_opacity`, identity by default), so the loss
    reaches every depth logit through the softmax; with `learned_opacity` it is additionally multiplied by
    a sigmoid predicted per Gaussian. Rotations are predicted in the camera frame and turned into the world
    frame (R_world = R_cam_to_world · R_cam); SH coefficients are taken as world-frame coefficients.

    `initial_prior` sets the logits' bias, i.e. the depth distribution before any training: equal mass
    per bin (`uniform_bins`), or uniform in log-depth (`log_uniform_depth`: mass ∝ log(upper / lower edge),
    the scale-free prior, half the mass below √(near·far)). With disparity bins the first puts half the
    mass closer than 2 × near, where a misplaced Gaussian lies in front of everything in the other views.
    """

    def __init__(
        self,
        in_channels: int,
        near: float,
        far: float,
        num_bins: int = 64,
        k: int = 1,
        adapter: GaussianAdapter | None = None,
        spacing: str = "disparity",
        learned_opacity: bool = False,
        opacity_exponent: float = 1.0,
        sample_in_training: bool = True,
        initial_prior: str = "uniform_bins",
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 < near < far:
            raise ConfigError(f"head near={near}, far={far}: need 0 < near < far")
        if spacing not in DEPTH_SPACINGS:
            raise ConfigError(f"head.spacing={spacing!r}: must be one of {', '.join(DEPTH_SPACINGS)}")
        if not 1 <= k <= num_bins:
            raise ConfigError(f"head.k={k}: must be between 1 and num_bins={num_bins}")
        if initial_prior not in DEPTH_PRIORS:
            raise ConfigError(
                f"head.initial_prior={initial_prior!r}: must be one of {', '.join(DEPTH_PRIORS)}"
            )
        if opacity_exponent < 1:
            raise ConfigError(f"head.opacity_exponent={opacity_exponent}: must be >= 1")
        self.near, self.far, self.num_bins, self.k = float(near), float(far), num_bins, k
        self.spacing = spacing
        self.learned_opacity = learned_opacity
        self.opacity_exponent = float(opacity_exponent)
        self.sample_in_training = sample_in_training
        self.adapter = adapter or GaussianAdapter()
        self.raw_per_gaussian = self.adapter.raw_channels(with_opacity=learned_opacity)
        out_channels = 2 * num_bins + k * self.raw_per_gaussian  # logits, per-bin offsets, k raw Gaussians
        self.mlp = _mlp(in_channels, hidden_channels or in_channels, out_channels, out_gain=0.1)
        if initial_prior == "log_uniform_depth":
            with torch.no_grad():
                self.mlp[2].bias[:num_bins] = self.bin_edges().log().diff().log().float()

    def bin_edges(self) -> Float[Tensor, " z_plus_1"]:
        """Depths of the Z + 1 bin edges, near to far (float64)."""
        return self._depth_at(torch.linspace(0, 1, self.num_bins + 1, dtype=torch.float64))

    def _depth_at(self, fraction: Tensor) -> Tensor:
        """Depth at a fraction in [0, 1] of the near→far range, in the spacing's variable."""
        if self.spacing == "depth":
            return self.near + (self.far - self.near) * fraction
        return 1.0 / (1.0 / self.near + (1.0 / self.far - 1.0 / self.near) * fraction)

    def choose_bins(self, logits: Float[Tensor, "*batch z"]) -> Int[Tensor, "*batch k"]:
        """k distinct bins per pixel: drawn ∝ softmax(logits) in training (Gumbel top-k), else the top-k."""
        if self.training and self.sample_in_training:
            uniform = torch.rand_like(logits).clamp_(1e-12, 1.0 - 1e-7)
            logits = logits - torch.log(-torch.log(uniform))  # + Gumbel(0, 1) noise
        return logits.topk(self.k, dim=-1).indices

    def dense(self, features: Float[Tensor, "b v c h w"], cameras: Cameras) -> PixelGaussians:
        """k Gaussians for every pixel (no masking). `cameras` (B, V) at the features' resolution."""
        b, v, _, h, w = features.shape
        if tuple(cameras.batch_shape) != (b, v) or (cameras.height, cameras.width) != (h, w):
            raise ValueError(
                f"DepthBinHead: features {b}x{v} views at {h}x{w}, cameras {tuple(cameras.batch_shape)} "
                f"at {cameras.height}x{cameras.width}"
            )
        raw = self.mlp(features.permute(0, 1, 3, 4, 2))  # (b, v, h, w, channels)
        z = self.num_bins
        logits, raw_offsets = raw[..., :z], raw[..., z : 2 * z]
        raw_gaussians = raw[..., 2 * z :].unflatten(-1, (self.k, self.raw_per_gaussian))

        probabilities = torch.softmax(logits, dim=-1)
        bin_index = self.choose_bins(logits.detach())
        bin_probability = torch.gather(probabilities, -1, bin_index)
        offsets = torch.sigmoid(torch.gather(raw_offsets, -1, bin_index))
        depths = self._depth_at((bin_index + offsets) / z)

        directions = cameras.ray_directions()  # (b, v, h, w, 3), camera-space z = 1
        means = cameras.centers[:, :, None, None, None, :] + depths[..., None] * directions[..., None, :]
        footprint = pixel_footprint(depths, focal_pixels(cameras.K)[:, :, None, None, None])
        mapped = self.adapter(raw_gaussians, footprint, with_opacity=self.learned_opacity)
        opacities = pdf_to_opacity(bin_probability, self.opacity_exponent)
        if self.learned_opacity:
            opacities = opacities * mapped["opacities"]
        camera_rotation = rotmat_to_quat(cameras.cam_to_world[..., :3, :3])[:, :, None, None, None, :]
        quats = quat_multiply(camera_rotation.expand_as(mapped["quats"]), mapped["quats"])
        return PixelGaussians(
            means=means,
            scales=mapped["scales"],
            quats=quats,
            opacities=opacities,
            sh=mapped["sh"],
            depths=depths,
            bin_index=bin_index,
            probabilities=probabilities,
        )

    def forward(
        self,
        features: Float[Tensor, "b v c h w"],
        cameras: Cameras,
        pixel_visible: Bool[Tensor, "b v h w"] | None = None,
    ) -> list[Gaussians]:
        """One Gaussians per sample: k per visible pixel of all its views."""
        return self.dense(features, cameras).pack(pixel_visible)


def point_footprints(
    coord: Float[Tensor, "n 3"],
    point_view: Int[Tensor, " n"],
    offset: Int[Tensor, " b"],
    K: Float[Tensor, "b v 3 3"],
    cam_to_world: Float[Tensor, "b v 4 4"],
) -> Float[Tensor, " n"]:
    """Pixel footprint (metres) of every point in the view it was back-projected from: z_cam / f."""
    sample = sample_index(offset, coord.shape[0])
    world_to_cam = Cameras(K, cam_to_world, 1, 1).world_to_cam[sample, point_view]  # (n, 4, 4)
    depth = transform_points(world_to_cam, coord[:, None, :])[:, 0, 2]
    return pixel_footprint(depth, focal_pixels(K[sample, point_view]))


def sample_index(offset: Int[Tensor, " b"], num_points: int) -> Int[Tensor, " n"]:
    """Sample of every point from Pointcept offsets (cumulative end indices)."""
    if offset.numel() == 0 or int(offset[-1]) != num_points:
        raise ValueError(f"offset {offset.tolist()} does not end at the number of points {num_points}")
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts)


@HEADS.register("point_offset")
class PointOffsetHead(nn.Module):
    """Per-point Gaussians around the input points (3D encoders): `μ = p + Δμ`, `Δμ = max_offset · tanh(raw)`
    per axis, so every mean stays within `max_offset` metres of its point along each axis (default 5 cm,
    2.5 voxels of 2 cm). Scale, rotation (world frame), opacity (sigmoid) and SH through the adapter;
    k Gaussians per visible point.
    """

    def __init__(
        self,
        in_channels: int,
        k: int = 1,
        max_offset: float = 0.05,
        adapter: GaussianAdapter | None = None,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        if k < 1:
            raise ConfigError(f"head.k={k}: must be >= 1")
        if max_offset <= 0:
            raise ConfigError(f"head.max_offset={max_offset}: must be > 0 metres")
        self.k, self.max_offset = k, float(max_offset)
        self.adapter = adapter or GaussianAdapter()
        self.raw_per_gaussian = 3 + self.adapter.raw_channels(with_opacity=True)  # Δμ first
        self.mlp = _mlp(in_channels, hidden_channels or in_channels, k * self.raw_per_gaussian, out_gain=0.1)

    def dense(
        self,
        features: Float[Tensor, "n c"],
        coord: Float[Tensor, "n 3"],
        footprint: Float[Tensor, " n"] | float,
    ) -> dict[str, Tensor]:
        """k Gaussians for every point: means/scales (n, k, 3), quats (n, k, 4), opacities (n, k), sh."""
        raw = self.mlp(features).unflatten(-1, (self.k, self.raw_per_gaussian))
        if not isinstance(footprint, Tensor):
            footprint = coord.new_full(coord.shape[:1], float(footprint))
        mapped = self.adapter(raw[..., 3:], footprint[:, None].expand(-1, self.k), with_opacity=True)
        mapped["means"] = coord[:, None, :] + self.max_offset * torch.tanh(raw[..., :3])
        return mapped

    def forward(
        self,
        features: Float[Tensor, "n c"],
        coord: Float[Tensor, "n 3"],
        offset: Int[Tensor, " b"],
        point_visible: Bool[Tensor, " n"] | None = None,
        footprint: Float[Tensor, " n"] | float = 0.01,
    ) -> list[Gaussians]:
        """One Gaussians per sample: k per visible point (in input order).

        `footprint`: metres per pixel at each point (`point_footprints`), or one length for all points
        (e.g. the voxel size); scales are bounded in these units by the adapter.
        """
        dense = self.dense(features, coord, footprint)
        sample = sample_index(offset, coord.shape[0])
        if point_visible is None:
            point_visible = torch.ones_like(sample, dtype=torch.bool)
        out = []
        for b in range(len(offset)):
            mask = (sample == b) & point_visible
            fields = [
                dense[name][mask].flatten(0, 1) for name in ("means", "scales", "quats", "opacities", "sh")
            ]
            out.append(Gaussians(*fields, validate=False))
        return out
