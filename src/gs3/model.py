"""GS3: encoder → pixel-aligned features → epipolar transformer → Gaussian head → render all views → loss.

Built from a `PretrainConfig` (gs3.config): encoder × head × views × mask ratio.

- 3D encoders (SpUNet-v1m1, PointNet2SASSG) see only the *visible* points (`point_visible`, the 3D mask).
  Their per-point features are scattered to the pixel each point was back-projected from (`point_view`,
  `point_pixel`); pixels without a visible point (hidden, or no valid depth) carry one learned *empty*
  feature. So the epipolar transformer runs on (B, V, C, H, W) maps for both modalities.
- The 2D encoder (ResNet50) sees the images with hidden pixels (`pixel_visible` False) set to the ImageNet
  mean colour, i.e. exactly zero after the encoder's normalisation: a masked pixel carries no signal and
  no colour bias (black would be a strong negative input). This is the "zeroed" choice, made in the
  network's input space.
- Heads: `depth_bin` (any encoder) predicts Gaussians on the rays of visible pixels (for 3D encoders: the
  pixels that hold a visible point); `point_offset` (3D only) predicts them around the visible points, its
  per-point features read back from the transformer's output at each point's pixel.
- All Gaussians of a sample (its visible pixels/points × k, from every view) are rendered into every input
  view with `gs3.render.rasterize`; the loss (MSE + λ·LPIPS) is taken on the views' full real images.
- Optional (`loss.cross_view_weight`, off by default; not in the paper): each view is also rendered from the
  other views' Gaussians alone. In its own view a Gaussian renders alike at any depth, so only the other
  views say where it belongs; this term asks every view's Gaussians to explain the other images by
  themselves, which keeps them out of the places no other view checks (README, "Does geometry emerge?").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from gs3.cameras import Cameras
from gs3.config import PretrainConfig
from gs3.encoders import build_encoder
from gs3.encoders.inputs import masked_images, point_input
from gs3.epipolar import EpipolarTransformer
from gs3.errors import ConfigError
from gs3.gaussians.adapter import GaussianAdapter
from gs3.gaussians.container import Gaussians
from gs3.gaussians.heads import DepthBinHead, PointOffsetHead, point_footprints, sample_index
from gs3.losses import RenderLoss, depth_metrics, psnr
from gs3.render import rasterize

_ADAPTER_KEYS = {f.name for f in fields(GaussianAdapter)} - {"sh_degree"}
_MIN_ALPHA_FOR_DEPTH = 0.5  # rendered depth is scored only where the render is mostly opaque


@dataclass
class GS3Output:
    """gaussians: one per sample; color (B, V, H, W, 3), alpha (B, V, H, W), depth (B, V, H, W) is the
    expected depth normalised by alpha (0 where alpha < 0.5); loss and its terms; detached metrics."""

    gaussians: list[Gaussians]
    color: Float[Tensor, "b v h w 3"]
    alpha: Float[Tensor, "b v h w"]
    depth: Float[Tensor, "b v h w"]
    loss: Float[Tensor, ""]
    terms: dict[str, Tensor]
    metrics: dict[str, Tensor]


def visible_point_pixels(batch: dict[str, Any]) -> Int[Tensor, " m"]:
    """Flat index into the (B, V, H, W) pixel grid of every visible point's pixel."""
    _, v, h, w, _ = batch["image"].shape
    visible = batch["point_visible"]
    sample = sample_index(batch["offset"], batch["coord"].shape[0])[visible]
    return (sample * v + batch["point_view"][visible]) * (h * w) + batch["point_pixel"][visible]


def build_model(config: PretrainConfig) -> nn.Module:
    """The pre-training model a config asks for: GS3 (`model.renderer: gaussians`) or the NeRF-rendering
    baseline (`volume`, gs3.ponder.PonderModel). Both take the same batches and keep the encoder at
    `.encoder`; their outputs share loss, terms, metrics (and color/depth when whole views are rendered)."""
    if config.model.renderer == "volume":
        from gs3.ponder import PonderModel

        return PonderModel(config)
    return GS3(config)


def build_head(config: PretrainConfig, in_channels: int, modality: str) -> nn.Module:
    m = config.model
    adapter_kwargs = {k: v for k, v in m.head_kwargs.items() if k in _ADAPTER_KEYS}
    head_kwargs = {k: v for k, v in m.head_kwargs.items() if k not in _ADAPTER_KEYS}
    adapter = GaussianAdapter(sh_degree=m.sh_degree, **adapter_kwargs)
    try:
        if m.head == "depth_bin":
            return DepthBinHead(
                in_channels, m.near, m.far, m.num_depth_bins, m.gaussians_per_pixel, adapter, **head_kwargs
            )
        if modality != "points":
            raise ConfigError(f"model.head=point_offset needs a 3D encoder, not {m.encoder['type']}")
        return PointOffsetHead(in_channels, m.gaussians_per_pixel, adapter=adapter, **head_kwargs)
    except TypeError as error:
        raise ConfigError(f"model.head_kwargs: {error}") from None


class GS3(nn.Module):
    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.config = config
        m = config.model
        self.encoder = build_encoder(dict(m.encoder))
        channels = self.encoder.out_channels
        self.modality: str = self.encoder.modality
        if self.modality == "points":
            self.empty_feature = nn.Parameter(torch.randn(channels) * 0.02)
        try:
            self.epipolar = EpipolarTransformer(channels=channels, **m.epipolar)
        except TypeError as error:
            raise ConfigError(f"model.epipolar: {error}") from None
        self.head = build_head(config, channels, self.modality)
        self.render_loss = RenderLoss(config.loss.lpips_weight, config.loss.vgg_weights)
        self.register_buffer("background", torch.full((3,), float(m.background)), persistent=False)

    # --- features -----------------------------------------------------------------------------------------
    def point_features(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder on the visible points → (B, V, C, H, W) grid, the visible points' flat pixel index in the
        grid, and the visible-point offsets."""
        image = batch["image"]
        b, v, h, w, _ = image.shape
        visible = batch["point_visible"]
        sample = sample_index(batch["offset"], batch["coord"].shape[0])
        coord, color = batch["coord"][visible], batch["color"][visible]
        offset = torch.cumsum(torch.bincount(sample[visible], minlength=b), dim=0)
        feat = point_input(getattr(self.encoder, "in_channels", 3), coord, color)
        point_features = self.encoder(coord, feat, offset)
        flat = visible_point_pixels(batch)
        channels = point_features.shape[-1]
        grid = self.empty_feature.to(point_features.dtype).expand(b * v * h * w, channels)
        grid = grid.index_put((flat,), point_features)  # out of place: gradients reach both
        return grid.reshape(b, v, h, w, channels).permute(0, 1, 4, 2, 3), flat, offset

    def image_features(self, batch: dict[str, Any]) -> Tensor:
        image = batch["image"]
        b, v, h, w, _ = image.shape
        masked = masked_images(self.encoder, image, batch["pixel_visible"])
        return self.encoder(masked.reshape(b * v, h, w, 3)).reshape(b, v, -1, h, w)

    # --- the whole model ----------------------------------------------------------------------------------
    def predict(self, batch: dict[str, Any]) -> list[Gaussians]:
        """The Gaussians of every sample of a batch (visible pixels/points × k)."""
        image = batch["image"]
        b, v, h, w, _ = image.shape
        m = self.config.model
        cameras = Cameras(batch["K"], batch["cam_to_world"], w, h)
        if self.modality == "points":
            features, flat, offset = self.point_features(batch)
        else:
            features, flat, offset = self.image_features(batch), None, None
        features = self.epipolar(features, batch["K"], batch["cam_to_world"], m.near, m.far)
        if isinstance(self.head, PointOffsetHead):
            visible = batch["point_visible"]
            per_point = features.permute(0, 1, 3, 4, 2).reshape(b * v * h * w, -1)[flat]
            coord = batch["coord"][visible]
            footprint = point_footprints(
                coord, batch["point_view"][visible], offset, batch["K"], batch["cam_to_world"]
            )
            return self.head(per_point, coord, offset, None, footprint)
        return self.head(features, cameras, self.visible_pixels(batch))

    def visible_pixels(self, batch: dict[str, Any]) -> Bool[Tensor, "b v h w"]:
        """Pixels that produce depth-bin Gaussians: unmasked ones (2D), or those holding a visible point."""
        if self.modality != "points":
            return batch["pixel_visible"]
        flat = visible_point_pixels(batch)
        visible = torch.zeros(batch["depth"].numel(), dtype=torch.bool, device=flat.device)
        visible[flat] = True
        return visible.reshape(batch["depth"].shape)

    def source_views(self, batch: dict[str, Any]) -> list[Int[Tensor, " n"]]:
        """Per sample, the view each of its Gaussians was predicted from (in `predict`'s order: k per
        visible pixel or point, consecutive)."""
        k = self.config.model.gaussians_per_pixel
        if isinstance(self.head, PointOffsetHead):
            sample = sample_index(batch["offset"], batch["coord"].shape[0])
            visible = batch["point_visible"]
            views = [batch["point_view"][visible & (sample == b)] for b in range(len(batch["offset"]))]
            return [view.repeat_interleave(k) for view in views]
        counts = self.visible_pixels(batch).sum(dim=(2, 3)) * k  # (B, V)
        view_ids = torch.arange(counts.shape[1], device=counts.device)
        return [view_ids.repeat_interleave(sample_counts) for sample_counts in counts]

    def cross_view_mse(
        self, gaussians: list[Gaussians], source_views: list[Int[Tensor, " n"]], batch: dict[str, Any]
    ) -> Float[Tensor, ""]:
        """Mean over views of `alpha · (render − image)²`, each view rendered from the *other* views'
        Gaussians only. The weight is that render's alpha (detached), so pixels that no other view's
        Gaussians reach (not co-visible) cost nothing instead of pulling Gaussians towards them."""
        image = batch["image"]
        b, v, h, w, _ = image.shape
        total = image.new_zeros(())
        with torch.autocast(device_type=image.device.type, enabled=False):
            for index, (sample_gaussians, source) in enumerate(zip(gaussians, source_views)):
                cameras = Cameras(batch["K"][index].float(), batch["cam_to_world"][index].float(), w, h)
                for view in range(v):
                    others = sample_gaussians[source != view].to(torch.float32)
                    out = rasterize(
                        others,
                        cameras[view : view + 1],
                        self.background.float(),
                        backend=self.config.model.rasterizer,
                    )
                    error = (out.color - image[index, view : view + 1].float()).square()
                    total = total + (out.alpha.detach() * error).mean()
        return total / (b * v)

    def render(
        self, gaussians: list[Gaussians], K: Tensor, cam_to_world: Tensor, width: int, height: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Every sample's Gaussians into all its views: color (B,V,H,W,3), alpha (B,V,H,W), raw depth."""
        colors, alphas, depths = [], [], []
        # Rasterization in float32 even under bf16 autocast: depth sorting, 2D covariances and compositing
        # lose too much in 8 mantissa bits.
        with torch.autocast(device_type=K.device.type, enabled=False):
            for index, sample_gaussians in enumerate(gaussians):
                cameras = Cameras(K[index].float(), cam_to_world[index].float(), width, height)
                out = rasterize(
                    sample_gaussians.to(torch.float32),
                    cameras,
                    self.background.float(),
                    backend=self.config.model.rasterizer,
                )
                colors.append(out.color)
                alphas.append(out.alpha[..., 0])
                depths.append(out.depth[..., 0])
        return torch.stack(colors), torch.stack(alphas), torch.stack(depths)

    def forward(self, batch: dict[str, Any]) -> GS3Output:
        image = batch["image"]
        b, v, h, w, _ = image.shape
        gaussians = self.predict(batch)
        color, alpha, raw_depth = self.render(gaussians, batch["K"], batch["cam_to_world"], w, h)
        terms = self.render_loss(color.reshape(b * v, h, w, 3).float(), image.reshape(b * v, h, w, 3).float())
        with torch.no_grad():
            opaque = alpha.detach() > _MIN_ALPHA_FOR_DEPTH
            depth = torch.where(opaque, raw_depth.detach() / alpha.detach().clamp_min(1e-6), 0.0)
            depth_scores = depth_metrics(depth, batch["depth"])
            metrics = {
                "psnr": psnr(color.detach().float().clamp(0, 1), image.float()).mean(),
                "depth_abs_rel": depth_scores["abs_rel"],
                "depth_delta1": depth_scores["delta1"],
                "num_gaussians": torch.tensor(float(sum(len(g) for g in gaussians)) / b),
            }
        loss = terms.pop("loss")
        if self.config.loss.cross_view_weight > 0:
            terms["cross_view_mse"] = self.cross_view_mse(gaussians, self.source_views(batch), batch)
            loss = loss + self.config.loss.cross_view_weight * terms["cross_view_mse"]
        return GS3Output(gaussians, color, alpha, depth, loss, terms, metrics)
