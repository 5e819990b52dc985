"""The small dense 3D U-Net that refines the feature volume (PonderV2's "projection" network, UNet3D-v1m2:
one convolution block per level, max-pooling down, nearest-neighbour upsampling and concatenation up).

Level widths `channels` (PonderV2: 32, 64, 128, 256 on a 128 × 128 × 32 grid); a block is a 3×3×3
convolution, batch norm and ReLU; pooling rounds odd sizes up and upsampling returns to the skip's exact
size, so any grid shape works. A final 1×1×1 convolution maps to `out_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class VolumeUNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        channels = list(channels)
        widths = [in_channels, *channels]
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(len(channels)))
        self.up = nn.ModuleList(
            _block(channels[i] + channels[i - 1], channels[i - 1]) for i in range(len(channels) - 1, 0, -1)
        )
        self.head = nn.Conv3d(channels[0], out_channels, kernel_size=1)

    def forward(self, volume: Float[Tensor, "b c x y z"]) -> Float[Tensor, "b o x y z"]:
        skips = []
        x = volume
        for level, block in enumerate(self.down):
            if level > 0:
                x = F.max_pool3d(x, kernel_size=2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        for step, block in enumerate(self.up):
            skip = skips[-2 - step]
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)
