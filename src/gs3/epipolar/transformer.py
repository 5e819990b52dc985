"""Epipolar transformer (pixelSplat's design): each pixel cross-attends to features sampled along its
epipolar segments in all other views, keys/values carrying a positional encoding of the depth each sample
implies, so the attention weights act as a soft depth estimate.

Pipeline: average-pool the features by `downscale` (parameter-free, and K scales exactly with it) → sample
(`gs3.epipolar.sampler`) → `num_layers` pre-norm blocks [masked multi-head cross-attention + MLP, each with a
residual] over the (V − 1)·S samples of all other views together (a set: no slot or view embedding, so the
order of the other views does not matter) → LayerNorm + linear → bilinear upsampling to the input size →
added to the input features, so the full-resolution detail is kept.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gs3.cameras import scale_intrinsics
from gs3.epipolar.sampler import _near_far, sample_epipolar


class DepthEncoding(nn.Module):
    """sin/cos of the sample's relative disparity at `frequencies` octaves, through a linear layer.

    Relative disparity (1/t − 1/far) / (1/near − 1/far) ∈ [0, 1] (1 at near, 0 at far): samples spread
    uniformly in image space are close to uniform in disparity, so this coordinate spends its resolution
    where the samples are.
    """

    def __init__(self, channels: int, frequencies: int) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.register_buffer(
            "angular_frequencies",
            math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32),
            persistent=False,
        )
        self.linear = nn.Linear(1 + 2 * frequencies, channels)

    def forward(
        self, depths: Float[Tensor, "*batch"], near: Float[Tensor, "*batch"], far: Float[Tensor, "*batch"]
    ) -> Float[Tensor, "*batch c"]:
        depths = torch.minimum(torch.maximum(depths, near), far)
        disparity = (1.0 / depths - 1.0 / far) / (1.0 / near - 1.0 / far)
        angles = disparity[..., None] * self.angular_frequencies
        return self.linear(torch.cat([disparity[..., None], angles.sin(), angles.cos()], dim=-1))


class MaskedCrossAttention(nn.Module):
    """Multi-head attention of one query token onto a set of key/value tokens, invalid keys excluded.

    A query whose keys are all invalid gets a zero update (not NaN): it attends to nothing.
    """

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"MaskedCrossAttention: channels {channels} not divisible by heads {num_heads}")
        self.num_heads = num_heads
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(
        self,
        query: Float[Tensor, "n c"],
        keys: Float[Tensor, "n l c"],
        valid: Bool[Tensor, "n l"],
    ) -> Float[Tensor, "n c"]:
        heads = self.num_heads
        q = rearrange(self.to_q(query), "n (h d) -> n h () d", h=heads)
        k = rearrange(self.to_k(keys), "n l (h d) -> n h l d", h=heads)
        v = rearrange(self.to_v(keys), "n l (h d) -> n h l d", h=heads)
        any_valid = valid.any(dim=-1)
        # A fully masked row would softmax over nothing (NaN); let it attend to everything, then drop it.
        allowed = valid | ~any_valid[:, None]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :])
        attended = rearrange(attended, "n h () d -> n (h d)")
        return self.to_out(attended) * any_valid[:, None].to(attended.dtype)


class EpipolarBlock(nn.Module):
    """Pre-norm block: x += attn(LN(x), keys); x += MLP(LN(x)). Keys come normalised (once, shared)."""

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(channels)
        self.attention = MaskedCrossAttention(channels, num_heads)
        self.norm_mlp = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(
        self, x: Float[Tensor, "n c"], keys: Float[Tensor, "n l c"], valid: Bool[Tensor, "n l"]
    ) -> Float[Tensor, "n c"]:
        x = x + self.attention(self.norm_query(x), keys, valid)
        return x + self.mlp(self.norm_mlp(x))


class EpipolarTransformer(nn.Module):
    """features (B, V, C, H, W), K at H × W, cam_to_world, near/far → features (B, V, C, H, W).

    near/far: camera-z depths bounding each ray (float, or a (B,) / (B, V) tensor). Needs V ≥ 2.
    Key-sized tensors (B·V·(h·w)·(V − 1)·S·C each: sampled features, depth encodings, key/value
    projections) are most of the transformer's memory. `checkpoint=True` keeps one of them for the backward
    pass, the normalised keys, and recomputes the others there: each block's on its own, then the sampling
    and depth encoding (recomputing all at once would hold them all together: a higher peak). It costs a
    second forward of the transformer.
    """

    def __init__(
        self,
        channels: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        num_samples: int = 32,
        downscale: int = 4,
        depth_encoding_frequencies: int = 8,
        mlp_ratio: float = 2.0,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if downscale < 1:
            raise ValueError(f"EpipolarTransformer: downscale must be >= 1, got {downscale}")
        self.channels = channels
        self.num_samples = num_samples
        self.downscale = downscale
        self.checkpoint = checkpoint
        self.depth_encoding = DepthEncoding(channels, depth_encoding_frequencies)
        # The keys are the same samples in every layer: normalise them once (saves one key-sized tensor of
        # activations per layer; the keys dominate memory: B·V·(h·w)·(V − 1)·S·C).
        self.norm_keys = nn.LayerNorm(channels)
        self.blocks = nn.ModuleList(EpipolarBlock(channels, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(channels)
        self.proj_out = nn.Linear(channels, channels)

    def forward(
        self,
        features: Float[Tensor, "b v c h w"],
        K: Float[Tensor, "b v 3 3"],
        cam_to_world: Float[Tensor, "b v 4 4"],
        near: float | Tensor,
        far: float | Tensor,
    ) -> Float[Tensor, "b v c h w"]:
        batch, views, channels, height, width = features.shape
        if channels != self.channels:
            raise ValueError(f"EpipolarTransformer: expected {self.channels} channels, got {channels}")
        if views < 2:
            raise ValueError(f"EpipolarTransformer: needs at least 2 views, got {views}")

        small_h = max(1, round(height / self.downscale))
        small_w = max(1, round(width / self.downscale))
        flat = features.reshape(batch * views, channels, height, width)
        # Area pooling = exact s×s average pooling when H, W are multiples of s; K follows the resize.
        small = F.adaptive_avg_pool2d(flat, (small_h, small_w)).reshape(
            batch, views, channels, small_h, small_w
        )
        K_small = scale_intrinsics(K, small_w / width, small_h / height)

        checkpoint = self.checkpoint and torch.is_grad_enabled()
        if checkpoint:
            keys, valid = torch.utils.checkpoint.checkpoint(
                self._keys, small, K_small, cam_to_world, near, far, use_reentrant=False
            )
        else:
            keys, valid = self._keys(small, K_small, cam_to_world, near, far)
        x = rearrange(small, "b v c h w -> (b v h w) c")
        for block in self.blocks:
            if checkpoint:
                x = torch.utils.checkpoint.checkpoint(block, x, keys, valid, use_reentrant=False)
            else:
                x = block(x, keys, valid)
        update = self.proj_out(self.norm_out(x))
        update = rearrange(update, "(bv h w) c -> bv c h w", h=small_h, w=small_w)
        update = F.interpolate(update, size=(height, width), mode="bilinear", align_corners=False)
        return features + update.reshape(batch, views, channels, height, width)

    def _keys(
        self,
        small: Float[Tensor, "b v c h w"],
        K_small: Float[Tensor, "b v 3 3"],
        cam_to_world: Float[Tensor, "b v 4 4"],
        near: float | Tensor,
        far: float | Tensor,
    ) -> tuple[Float[Tensor, "n l c"], Bool[Tensor, "n l"]]:
        """Each pixel's keys: the samples of all other views with their depth encoding, normalised."""
        batch, views = small.shape[:2]
        samples = sample_epipolar(small, K_small, cam_to_world, near, far, self.num_samples)
        near_bv = _near_far(near, batch, views, samples.depths)[:, :, None, None, None]
        far_bv = _near_far(far, batch, views, samples.depths)[:, :, None, None, None]
        keys = samples.features + self.depth_encoding(
            samples.depths, near_bv.expand_as(samples.depths), far_bv.expand_as(samples.depths)
        )
        # One set of (V − 1)·S tokens per pixel.
        keys = self.norm_keys(rearrange(keys, "b v ov r s c -> (b v r) (ov s) c"))
        return keys, rearrange(samples.valid, "b v ov r s -> (b v r) (ov s)")
