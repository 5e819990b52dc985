"""What a point encoder is fed: colour in [0, 1] (in_channels 3) or colour followed by xyz (6).

Pre-training (gs3.model) and fine-tuning (gs3.downstream.segmentor) both call `point_input`, so a
fine-tuned encoder sees its input exactly as it did while it was pre-trained.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from gs3.errors import ConfigError


def point_input(
    in_channels: int, coord: Float[Tensor, "n 3"], color: Float[Tensor, "n 3"]
) -> Float[Tensor, "n c"]:
    if in_channels == 3:
        return color
    if in_channels == 6:
        return torch.cat([color, coord], dim=-1)
    raise ConfigError(f"model.encoder.in_channels={in_channels}: gs3 feeds RGB (3) or RGB+xyz (6)")
