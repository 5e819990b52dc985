"""What an encoder is fed, in one place for every model that feeds one.

- Point encoders: colour in [0, 1] (in_channels 3) or colour followed by xyz (6) (`point_input`).
  Pre-training (gs3.model, gs3.ponder) and fine-tuning (gs3.downstream.segmentor) all call it, so a
  fine-tuned encoder sees its input exactly as it did while it was pre-trained.
- Image encoders under a pixel mask: hidden pixels take the encoder's mean colour (ImageNet's), which is
  exactly zero after its normalisation, so a masked pixel carries no signal (`masked_images`).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gs3.errors import ConfigError


def point_input(
    in_channels: int, coord: Float[Tensor, "n 3"], color: Float[Tensor, "n 3"]
) -> Float[Tensor, "n c"]:
    if in_channels == 3:
        return color
    if in_channels == 6:
        return torch.cat([color, coord], dim=-1)
    raise ConfigError(f"model.encoder.in_channels={in_channels}: gs3 feeds RGB (3) or RGB+xyz (6)")


def masked_images(
    encoder: nn.Module, image: Float[Tensor, "*b h w 3"], visible: Bool[Tensor, "*b h w"]
) -> Float[Tensor, "*b h w 3"]:
    """`image` with its hidden pixels set to the encoder's mean colour (`pixel_mean`, else ImageNet's)."""
    from gs3.encoders.resnet import IMAGENET_MEAN

    mean = getattr(encoder, "pixel_mean", None)
    mean = torch.as_tensor(
        IMAGENET_MEAN if mean is None else mean.flatten(), dtype=image.dtype, device=image.device
    )
    return torch.where(visible[..., None], image, mean)
