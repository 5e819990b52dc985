"""SR-UNet: the sparse voxel U-Net of Pointcept's `SpUNet-v1m1` (SpUNetBase) on spconv, 128-d per point.

The module tree and parameter names match Pointcept's SpUNetBase exactly, so `backbone_state_dict()` loads
into Pointcept (and Pointcept checkpoints load here):

    conv_input   SubMConv3d k5 (in → base) + BN + ReLU                         indice key "stem"
    down[s]      SparseConv3d k2 s2 (→ channels[s]) + BN + ReLU                 "spconv{s+1}"
    enc[s]       block0..block{layers[s]-1}: BasicBlock(channels[s])            "subm{s+1}"
    up[s]        SparseInverseConv3d k2 (channels[-s-2] → dec) + BN + ReLU      reuses "spconv{s+1}"
    dec[s]       block0 takes the skip concatenated (dec + enc channels)        "subm{s}"
    final        SubMConv3d k1 (channels[-1] → out_channels), with bias

with dec = channels[-1] at s = 0 and channels[-s-1] deeper, enc = base at s = 0 and channels[s-1] deeper;
the decoder runs s = num_stages-1 … 0. BatchNorm1d(eps=1e-3, momentum=0.01) everywhere. Pointcept's
`num_classes` is our `out_channels` (128: one feature per point for the Gaussian head).

spconv is imported when a network is built, not when this module is imported, so `gs3.encoders` imports
without it; building without spconv raises one clear line (see spconv_compat).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from gs3.encoders.registry import ENCODERS
from gs3.encoders.spconv_compat import require_spconv
from gs3.encoders.voxelize import voxelize
from gs3.errors import ConfigError, DataError

# Layers that act on the features of a sparse tensor alone (everything else takes the sparse tensor).
_FEATURE_WISE = (nn.BatchNorm1d, nn.ReLU, nn.Identity)


class SparseChain(nn.Sequential):
    """Sequential over a spconv SparseConvTensor: feature-wise layers see `.features`, the rest the tensor.

    Plays the role of spconv.SparseSequential (same child names, hence the same state-dict keys) without
    needing spconv at import time.
    """

    def forward(self, x: Any) -> Any:
        for module in self:
            x = x.replace_feature(module(x.features)) if isinstance(module, _FEATURE_WISE) else module(x)
        return x


def _norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


class BasicBlock(nn.Module):
    """Residual block of two 3×3×3 submanifold convs; a 1×1 conv + BN projects the skip when widths differ."""

    def __init__(self, in_channels: int, channels: int, indice_key: str) -> None:
        super().__init__()
        sp = require_spconv()
        if in_channels == channels:
            self.proj = SparseChain(nn.Identity())
        else:
            self.proj = SparseChain(
                sp.SubMConv3d(in_channels, channels, kernel_size=1, bias=False), _norm(channels)
            )
        conv = partial(sp.SubMConv3d, kernel_size=3, stride=1, padding=1, bias=False, indice_key=indice_key)
        self.conv1 = conv(in_channels, channels)
        self.bn1 = _norm(channels)
        self.relu = nn.ReLU()
        self.conv2 = conv(channels, channels)
        self.bn2 = _norm(channels)

    def forward(self, x: Any) -> Any:
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        out = out.replace_feature(self.relu(self.bn2(out.features) + self.proj(x).features))
        return out


def _blocks(in_channels: int, channels: int, count: int, indice_key: str) -> SparseChain:
    blocks = [
        (f"block{i}", BasicBlock(in_channels if i == 0 else channels, channels, indice_key))
        for i in range(count)
    ]
    return SparseChain(OrderedDict(blocks))


@ENCODERS.register("SpUNet-v1m1")
class SpUNetV1M1(nn.Module):
    """Sparse U-Net over voxels; forward returns one `out_channels`-d feature per INPUT point."""

    modality = "points"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 128,
        base_channels: int = 32,
        channels: Sequence[int] = (32, 64, 128, 256, 256, 128, 96, 96),
        layers: Sequence[int] = (2, 3, 4, 6, 2, 2, 2, 2),
        voxel_size: float = 0.02,
    ) -> None:
        super().__init__()
        channels, layers = tuple(int(c) for c in channels), tuple(int(n) for n in layers)
        if len(channels) != len(layers) or len(layers) % 2:
            raise ConfigError(
                f"SpUNet-v1m1: channels {channels} and layers {layers} must have the same even length"
            )
        if voxel_size <= 0:
            raise ConfigError(f"SpUNet-v1m1: voxel_size must be positive, got {voxel_size}")
        sp = require_spconv()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.base_channels, self.channels, self.layers = base_channels, channels, layers
        self.voxel_size = float(voxel_size)
        self.num_stages = len(layers) // 2

        self.conv_input = SparseChain(
            sp.SubMConv3d(
                in_channels, base_channels, kernel_size=5, padding=1, bias=False, indice_key="stem"
            ),
            _norm(base_channels),
            nn.ReLU(),
        )
        # Registration order as in Pointcept, so state-dict keys come out in the same order too.
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        self.enc, self.dec = nn.ModuleList(), nn.ModuleList()
        enc_channels, dec_channels = base_channels, channels[-1]
        for s in range(self.num_stages):
            coarse_channels = channels[len(channels) - s - 2]  # what the decoder level above s outputs
            self.down.append(
                SparseChain(
                    sp.SparseConv3d(
                        enc_channels,
                        channels[s],
                        kernel_size=2,
                        stride=2,
                        bias=False,
                        indice_key=f"spconv{s + 1}",
                    ),
                    _norm(channels[s]),
                    nn.ReLU(),
                )
            )
            self.enc.append(_blocks(channels[s], channels[s], layers[s], f"subm{s + 1}"))
            self.up.append(
                SparseChain(
                    sp.SparseInverseConv3d(
                        coarse_channels, dec_channels, kernel_size=2, bias=False, indice_key=f"spconv{s + 1}"
                    ),
                    _norm(dec_channels),
                    nn.ReLU(),
                )
            )
            decoder_layers = layers[len(channels) - s - 1]
            self.dec.append(_blocks(dec_channels + enc_channels, dec_channels, decoder_layers, f"subm{s}"))
            enc_channels, dec_channels = channels[s], coarse_channels
        self.final = sp.SubMConv3d(channels[-1], out_channels, kernel_size=1, padding=1, bias=True)
        self._init_weights(sp)

    def _init_weights(self, sp: Any) -> None:
        # Pointcept's init: truncated normal (std 0.02) for submanifold convs, unit/zero BatchNorm; the
        # strided and inverse convs keep spconv's default init.
        for module in self.modules():
            if isinstance(module, sp.SubMConv3d):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self, coord: Float[Tensor, "n 3"], feat: Float[Tensor, "n c"], offset: Int[Tensor, " b"]
    ) -> Float[Tensor, "n d"]:
        if feat.ndim != 2 or feat.shape[1] != self.in_channels:
            raise ConfigError(
                f"SpUNet-v1m1: feat has shape {tuple(feat.shape)}, "
                f"but the encoder has in_channels={self.in_channels}"
            )
        if coord.shape[0] == 0:
            raise DataError("SpUNet-v1m1: the batch has no points (every sample is empty)")
        voxels = voxelize(coord, feat, offset, self.voxel_size)
        voxel_features = self.forward_voxels(voxels.grid_coord, voxels.batch, voxels.feat, voxels.batch_size)
        # index_select, not voxel_features[voxels.inverse]: the backward of advanced indexing is a threaded
        # index_put_(accumulate=True) whose sums depend on thread timing; index_select's is index_add_, in
        # index order (deterministic, and ~6x faster here).
        return voxel_features.index_select(0, voxels.inverse)

    def forward_voxels(
        self,
        grid_coord: Int[Tensor, "m 3"],
        batch: Int[Tensor, " m"],
        feat: Float[Tensor, "m c"],
        batch_size: int,
    ) -> Float[Tensor, "m d"]:
        """Run the U-Net on unique voxels (Pointcept's forward on `grid_coord`), one feature per voxel."""
        sp = require_spconv()
        # Each of the num_stages stride-2 convs halves the grid; a power-of-two multiple keeps every
        # coarse cell inside the grid (Pointcept adds a 96-cell margin instead; the voxels are the same).
        multiple = 2**self.num_stages
        extent = grid_coord.amax(0) + 1
        spatial_shape = ((extent + multiple - 1) // multiple * multiple).tolist()
        indices = torch.cat([batch[:, None], grid_coord], dim=1).int().contiguous()
        x = sp.SparseConvTensor(feat.float().contiguous(), indices, spatial_shape, batch_size)

        x = self.conv_input(x)
        skips = [x]
        for s in range(self.num_stages):
            x = self.enc[s](self.down[s](x))
            skips.append(x)
        x = skips.pop()
        for s in reversed(range(self.num_stages)):
            x = self.up[s](x)
            skip = skips.pop()
            x = x.replace_feature(torch.cat([x.features, skip.features], dim=1))
            x = self.dec[s](x)
        return self.final(x).features

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """Pointcept SpUNetBase's state dict (same keys and shapes; `final` has out_channels outputs)."""
        return {key: value.detach().clone() for key, value in self.state_dict().items()}

    def load_backbone_state_dict(
        self, state_dict: Mapping[str, Tensor], strict: bool = True
    ) -> nn.modules.module._IncompatibleKeys:
        """Load Pointcept SpUNetBase weights; a "module." / "backbone." prefix (Pointcept checkpoints) is
        stripped. Returns the missing/unexpected keys; with strict=True any of them raises ConfigError."""
        state_dict = _strip_prefixes(state_dict, ("module.", "backbone."))
        own = self.state_dict()
        for key, value in state_dict.items():
            if key in own and own[key].shape != value.shape:
                raise ConfigError(
                    f"SpUNet-v1m1: weight '{key}' has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(own[key].shape)} (check in_channels/out_channels/channels)"
                )
        result = self.load_state_dict(dict(state_dict), strict=False)
        if strict and (result.missing_keys or result.unexpected_keys):
            missing, unexpected = result.missing_keys, result.unexpected_keys
            raise ConfigError(
                f"SpUNet-v1m1: state dict mismatch: {len(missing)} missing {missing[:3]}, "
                f"{len(unexpected)} unexpected {unexpected[:3]}"
            )
        return result


def _strip_prefixes(state_dict: Mapping[str, Tensor], prefixes: Sequence[str]) -> Mapping[str, Tensor]:
    for prefix in prefixes:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict
