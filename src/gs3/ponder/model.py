"""PonderModel: the NeRF-rendering pre-training baseline (Ponder / PonderV2) on gs3's data and runner.

    encoder → dense feature volume over the sample's box → 3D U-Net → trilinear lookup + MLP field
    (NeuS SDF or density, and colour) → volume rendering of R random rays per view → loss on those rays

Built by `gs3.model.build_model` when `model.renderer = volume`; it takes the same batches as GS3 (same
data pipeline, masking and augmentation), keeps the encoder at `encoder` (so checkpoints export like
GS3's) and returns a `PonderOutput` with the fields the training module reads (loss, terms, metrics).

Decisions (where PonderV2 and the GS³ paper leave it open):
- Masking as GS3: 3D encoders see only the visible points (the box and the pooling use them too); the
  2D encoder sees the images with hidden pixels set to the ImageNet mean. The loss covers every pixel.
- Rays: `rays_per_view` pixels drawn uniformly without replacement from each view, all pixels (not only
  those with valid depth as PonderV2 does: the colour loss needs no depth, and GS³'s covers the whole
  image). A ray is rendered between max(box entry, model.near) and min(box exit, model.far); a ray that
  misses the box renders the background. Targets are the pixel's colour and, for depth supervision, the
  sensor depth turned into a distance along the ray.
- Work in metres, in the world frame (PonderV2 rescales each scene into a unit cube); the field's inputs
  are normalised by the box instead (gs3.ponder.field), so the constants are per metre.
- NeuS sharpness for importance sampling: 64/m doubled every round (NeuS's schedule, per metre); the
  learned sharpness starts at 20/m (PonderV2's exp(3) per unit-cube length, here per metre).
- The rendered colour adds T_final · model.background (PonderV2 composites over black: background 0).
- Whole views (eval mode, previews, `gs3 render`) are rendered in chunks of `render_chunk` rays with the
  regular (unjittered) samples; the returned depth is the camera-space z of the expected distance divided
  by alpha where alpha > 0.5, else 0 (as GS3's).
- Volume rendering runs in float32 even under bf16 autocast (as GS3's rasterization).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from gs3.config import PretrainConfig
from gs3.encoders import build_encoder
from gs3.encoders.inputs import masked_images, point_input
from gs3.gaussians.heads import sample_index
from gs3.losses import depth_metrics, psnr
from gs3.ponder.field import NeuralField
from gs3.ponder.loss import RayRender, volume_loss
from gs3.ponder.unet3d import VolumeUNet
from gs3.ponder.volume import VolumeBox, frustum_box, lift_images, points_box, pool_points
from gs3.render.volume import (
    composite,
    compositing_weights,
    density_alphas,
    hierarchical_edges,
    neus_alphas,
    neus_edge_alphas,
    pixel_rays,
    ray_box_intersection,
    section_midpoints,
    trilinear_lookup,
)

_MIN_ALPHA_FOR_DEPTH = 0.5


@dataclass
class FeatureVolume:
    """The refined volumes of a batch, channels last and flattened to rows (B·X·Y·Z, C), and their box."""

    rows: Float[Tensor, "m c"]
    box: VolumeBox


@dataclass
class Rays:
    """Flat over (sample, view, ray): world origin, unit direction, depth per unit distance, sample index,
    target colour and sensor depth (0 = invalid)."""

    origins: Float[Tensor, "n 3"]
    directions: Float[Tensor, "n 3"]
    z_per_t: Float[Tensor, " n"]
    sample: Int[Tensor, " n"]
    color: Float[Tensor, "n 3"]
    depth: Float[Tensor, " n"]

    def __getitem__(self, index: Any) -> Rays:
        return Rays(*(getattr(self, name)[index] for name in self.__dataclass_fields__))


@dataclass
class PonderOutput:
    """loss, its terms and detached metrics; color (B, V, H, W, 3), alpha and depth (B, V, H, W) only when
    whole views were rendered (eval mode), else None; the feature volume (detached) for previews."""

    loss: Float[Tensor, ""]
    terms: dict[str, Tensor]
    metrics: dict[str, Tensor]
    volume: FeatureVolume
    color: Tensor | None = None
    alpha: Tensor | None = None
    depth: Tensor | None = None
    gaussians: list = field(default_factory=list)  # none: the baseline has no Gaussians


class PonderModel(nn.Module):
    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.config = config
        m, v = config.model, config.model.volume
        self.encoder = build_encoder(dict(m.encoder))
        self.modality: str = self.encoder.modality
        self.volume_net = VolumeUNet(self.encoder.out_channels, v.channels, v.unet_channels)
        self.field = NeuralField(v.channels, v.hidden_channels, v.geometry_channels, v.geometry, v.init_inv_s)
        self.register_buffer("background", torch.full((3,), float(m.background)), persistent=False)

    # --- the feature volume -------------------------------------------------------------------------------
    def encode(self, batch: dict[str, Any]) -> FeatureVolume:
        """Encoder → dense volume over each sample's box → 3D U-Net, flattened channels last."""
        if self.modality == "points":
            volume, box = self.point_volume(batch)
        else:
            volume, box = self.image_volume(batch)
        refined = self.volume_net(volume)
        return FeatureVolume(refined.permute(0, 2, 3, 4, 1).reshape(-1, refined.shape[1]), box)

    def point_volume(self, batch: dict[str, Any]) -> tuple[Tensor, VolumeBox]:
        v = self.config.model.volume
        batch_size = batch["image"].shape[0]
        visible = batch["point_visible"]
        sample = sample_index(batch["offset"], batch["coord"].shape[0])[visible]
        coord, color = batch["coord"][visible], batch["color"][visible]
        offset = torch.cumsum(torch.bincount(sample, minlength=batch_size), dim=0)
        feat = point_input(getattr(self.encoder, "in_channels", 3), coord, color)
        features = self.encoder(coord, feat, offset)
        box = points_box(coord, sample, batch_size, tuple(v.grid_shape), v.padding)
        return pool_points(features, coord, sample, box), box

    def image_volume(self, batch: dict[str, Any]) -> tuple[Tensor, VolumeBox]:
        m, v = self.config.model, self.config.model.volume
        image = batch["image"]
        b, views, h, w, _ = image.shape
        masked = masked_images(self.encoder, image, batch["pixel_visible"])
        features = self.encoder(masked.reshape(b * views, h, w, 3))
        features = features.reshape(b, views, *features.shape[1:])
        K, cam_to_world = batch["K"], batch["cam_to_world"]
        box = frustum_box(K, cam_to_world, w, h, m.near, v.frustum_far, tuple(v.grid_shape), v.padding)
        return lift_images(features, K, cam_to_world, w, h, box, m.near), box

    # --- rays ---------------------------------------------------------------------------------------------
    def rays(self, batch: dict[str, Any], pixels: Int[Tensor, "b v r"]) -> Rays:
        """The rays through the given flat pixel indices of every view."""
        image = batch["image"]
        b, views, h, w, _ = image.shape
        r = pixels.shape[-1]
        uv = torch.stack([pixels % w, torch.div(pixels, w, rounding_mode="floor")], dim=-1).float() + 0.5
        origins, directions, z_per_t = pixel_rays(batch["K"].float(), batch["cam_to_world"].float(), uv)
        color = image.reshape(b, views, h * w, 3).gather(2, pixels[..., None].expand(-1, -1, -1, 3))
        depth = batch["depth"].reshape(b, views, h * w).gather(2, pixels)
        sample = torch.arange(b, device=pixels.device)[:, None, None].expand(b, views, r)
        return Rays(
            origins.reshape(-1, 3),
            directions.reshape(-1, 3),
            z_per_t.reshape(-1),
            sample.reshape(-1),
            color.reshape(-1, 3).float(),
            depth.reshape(-1).float(),
        )

    def random_rays(self, batch: dict[str, Any]) -> Rays:
        """`rays_per_view` pixels of every view, uniformly without replacement (torch's global generator,
        which the training module seeds per step)."""
        b, views, h, w, _ = batch["image"].shape
        count = self.config.model.volume.rays_per_view
        order = torch.rand(b, views, h * w, device=batch["image"].device).argsort(dim=-1)
        return self.rays(batch, order[..., :count])

    # --- the field and rendering ----------------------------------------------------------------------------
    def _geometry(
        self, volume: FeatureVolume, points: Tensor, sample: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        box = volume.box
        coords = box.cell_coords(points, sample)
        features = trilinear_lookup(volume.rows, coords, box.shape, box.row_base(sample))
        geometry, geometry_features = self.field.geometry_at(
            features, box.normalized(points, sample), box.scale[sample]
        )
        return geometry, geometry_features, features

    def _section_weights(
        self, volume: FeatureVolume, rays: Rays, hit: Tensor, edges: Tensor, round_index: int
    ) -> Tensor:
        """Importance-sampling weights of the current sections (no gradient)."""
        n = edges.shape[0]
        if self.field.geometry == "sdf":
            at = edges  # NeuS: the SDF at the section ends, fixed sharpness doubling every round
        else:
            at, deltas = section_midpoints(edges)
        points = (rays.origins[:, None] + rays.directions[:, None] * at[..., None]).reshape(-1, 3)
        sample = rays.sample[:, None].expand(n, at.shape[1]).reshape(-1)
        geometry = self._geometry(volume, points, sample)[0].reshape(n, -1)
        if self.field.geometry == "sdf":
            inv_s = self.config.model.volume.upsample_inv_s * 2.0**round_index
            alphas = neus_edge_alphas(geometry, inv_s)
        else:
            alphas = density_alphas(geometry, deltas)
        return compositing_weights(alphas * hit[:, None])[0]

    def render_rays(self, volume: FeatureVolume, rays: Rays) -> RayRender:
        m, v = self.config.model, self.config.model.volume
        box = volume.box
        t_enter, t_exit, _ = ray_box_intersection(
            rays.origins, rays.directions, box.low[rays.sample], box.high[rays.sample]
        )
        near, far = t_enter.clamp_min(m.near), t_exit.clamp_max(m.far)
        hit = far > near
        far = torch.where(hit, far, near)
        weights_fn = partial(self._section_weights, volume, rays, hit)
        stratified = self.training and v.stratified
        edges = hierarchical_edges(
            near, far, v.num_samples, v.num_importance, v.upsample_steps, weights_fn, stratified
        )
        midpoints, deltas = section_midpoints(edges)
        n, s = midpoints.shape
        points = (rays.origins[:, None] + rays.directions[:, None] * midpoints[..., None]).reshape(-1, 3)
        sample = rays.sample[:, None].expand(n, s).reshape(-1)
        directions = rays.directions[:, None].expand(n, s, 3).reshape(-1, 3)
        create_graph = torch.is_grad_enabled()
        gradients = None
        if self.field.geometry == "sdf":
            with torch.enable_grad():  # the SDF's gradient is part of the rendering, even without training
                points = points.detach().requires_grad_(True)
                sdf, geometry_features, features = self._geometry(volume, points, sample)
                (gradients,) = torch.autograd.grad(
                    sdf, points, torch.ones_like(sdf), create_graph=create_graph
                )
            if not create_graph:
                sdf, geometry_features, features = sdf.detach(), geometry_features.detach(), features.detach()
            slope = (gradients * directions).sum(dim=-1)
            alphas = neus_alphas(sdf.reshape(n, s), slope.reshape(n, s), deltas, self.field.inv_s())
            geometry = sdf
        else:
            geometry, geometry_features, features = self._geometry(volume, points, sample)
            alphas = density_alphas(geometry.reshape(n, s), deltas)
        colors = self.field.color(features, geometry_features, gradients, directions).reshape(n, s, 3)
        weights, final_transmittance = compositing_weights(alphas * hit[:, None])
        color = composite(weights, colors, final_transmittance, self.background)
        return RayRender(
            color=color,
            distance=(weights * midpoints).sum(dim=-1),
            alpha=weights.sum(dim=-1),
            weights=weights,
            midpoints=midpoints,
            sdf=geometry.reshape(n, s) if self.field.geometry == "sdf" else None,
            gradients=gradients.reshape(n, s, 3) if gradients is not None else None,
        )

    # --- the whole model ----------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> PonderOutput:
        volume = self.encode(batch)
        if not self.training:
            return self._evaluate(batch, volume)
        rays = self.random_rays(batch)
        with torch.autocast(device_type=rays.origins.device.type, enabled=False):
            volume32 = FeatureVolume(volume.rows.float(), volume.box)
            render = self.render_rays(volume32, rays)
            loss, terms = volume_loss(render, rays.color, rays.depth / rays.z_per_t, self.config.loss)
        with torch.no_grad():
            mse = (render.color.detach() - rays.color).square().mean()
            metrics = {"psnr": -10.0 * torch.log10(mse), "rays": torch.tensor(float(rays.sample.numel()))}
            depth = self._visible_depth(render.distance.detach(), render.alpha.detach(), rays.z_per_t)
            metrics |= _depth_scores(depth, rays.depth)
            if self.field.geometry == "sdf":
                metrics["inv_s"] = self.field.inv_s().detach()
        return PonderOutput(loss, terms, metrics, FeatureVolume(volume.rows.detach(), volume.box))

    @staticmethod
    def _visible_depth(distance: Tensor, alpha: Tensor, z_per_t: Tensor) -> Tensor:
        opaque = alpha > _MIN_ALPHA_FOR_DEPTH
        return torch.where(opaque, distance / alpha.clamp_min(1e-6) * z_per_t, torch.zeros_like(distance))

    @torch.no_grad()
    def render_views(
        self, batch: dict[str, Any], volume: FeatureVolume, samples: list[int] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Every pixel of every view of the chosen samples (default all): colour (S, V, H, W, 3), alpha and
        depth (S, V, H, W), rendered in chunks with the regular samples."""
        image = batch["image"]
        b, views, h, w, _ = image.shape
        samples = list(range(b)) if samples is None else samples
        pixels = torch.arange(h * w, device=image.device).expand(b, views, -1)
        rays = self.rays(batch, pixels)
        rays = rays[torch.isin(rays.sample, torch.tensor(samples, device=image.device))]
        volume32 = FeatureVolume(volume.rows.float(), volume.box)
        chunk = self.config.model.volume.render_chunk
        color, alpha, depth = [], [], []
        was_training = self.training
        self.train(False)  # regular sample positions
        try:
            with torch.autocast(device_type=image.device.type, enabled=False):
                for start in range(0, rays.sample.numel(), chunk):
                    part = rays[start : start + chunk]
                    render = self.render_rays(volume32, part)
                    color.append(render.color)
                    alpha.append(render.alpha)
                    depth.append(self._visible_depth(render.distance, render.alpha, part.z_per_t))
        finally:
            self.train(was_training)
        shape = (len(samples), views, h, w)
        return (
            torch.cat(color).reshape(*shape, 3),
            torch.cat(alpha).reshape(shape),
            torch.cat(depth).reshape(shape),
        )

    def _evaluate(self, batch: dict[str, Any], volume: FeatureVolume) -> PonderOutput:
        """Eval mode: whole views, the colour term on every pixel, image metrics (as GS3's)."""
        color, alpha, depth = self.render_views(batch, volume)
        image = batch["image"].float()
        difference = color - image
        loss = difference.square().mean() if self.config.loss.color == "mse" else difference.abs().mean()
        metrics = {"psnr": psnr(color.clamp(0, 1), image).mean(), **_depth_scores(depth, batch["depth"])}
        return PonderOutput(loss, {"color": loss}, metrics, volume, color, alpha, depth)

    def preview(self, output: PonderOutput, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Whole views of the batch's first sample from a training step's volume: colour and depth."""
        color, _, depth = self.render_views(batch, output.volume, samples=[0])
        return color, depth


def _depth_scores(depth: Tensor, sensor: Tensor) -> dict[str, Tensor]:
    scores = depth_metrics(depth, sensor.to(depth.dtype))
    return {"depth_abs_rel": scores["abs_rel"], "depth_delta1": scores["delta1"]}
