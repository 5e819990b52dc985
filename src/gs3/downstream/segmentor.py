"""The segmentor: a gs3 encoder → per-point (3D) or per-pixel (2D) features → a classifier head.

`self.encoder` is built by `gs3.encoders.build_encoder` from the same config dict as in pre-training, so its
parameter names are the pre-training ones (`model.encoder.<name>` there, `encoder.<name>` here) and
`backbone_state_dict()` still exports it. Point encoders are fed exactly as in pre-training
(`gs3.encoders.inputs.point_input`: colour in [0, 1], plus xyz when in_channels is 6).

Initial weights. The encoder and the head draw their initial weights from two separate random streams, both
functions of `seed` alone (the global RNG state is restored afterwards). So with the same seed the head
starts identical whether or not pre-trained weights are then loaded into the encoder, and a scratch run
and a pre-trained run differ only in the encoder's starting point.

Linear probing (`linear_probe=True`): the encoder's parameters do not require gradients and the encoder stays
in eval mode even when the segmentor is put in training mode, so its BatchNorm statistics are frozen too
(and PointNet++ uses its fixed evaluation-time point order). Only the head trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from gs3.downstream.heads import build_head
from gs3.encoders import build_encoder
from gs3.encoders.inputs import point_input
from gs3.errors import DataError

ENCODER_STREAM, HEAD_STREAM = 0, 1


def stream_seed(seed: int, stream: int) -> int:
    """A seed for one named random stream of a run (independent streams for independent parts)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream]).generate_state(1, np.uint64)[0] >> 1)


def _seeded(seed: int, build: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class Segmentor(nn.Module):
    """forward(batch) -> logits: (N, K) for a point batch, (B, H, W, K) for an image batch."""

    def __init__(
        self,
        encoder: Mapping[str, Any],
        num_classes: int,
        head: Mapping[str, Any] | None = None,
        linear_probe: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.encoder_config = dict(encoder)
        self.num_classes = num_classes
        self.encoder = _seeded(stream_seed(seed, ENCODER_STREAM), lambda: build_encoder(self.encoder_config))
        self.modality: str = self.encoder.modality
        channels = self.encoder.out_channels
        head_config = dict(head or {"type": "linear"})
        self.head = _seeded(
            stream_seed(seed, HEAD_STREAM), lambda: build_head(head_config, channels, num_classes)
        )
        self.linear_probe = linear_probe
        if linear_probe:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> Segmentor:
        super().train(mode)
        if self.linear_probe:
            self.encoder.eval()  # frozen BatchNorm statistics (and PointNet++'s fixed eval point order)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def features(self, batch: Mapping[str, Any]) -> Tensor:
        """Encoder features: (N, C) per point, or (B, H, W, C) per pixel."""
        if self.modality == "points":
            if "coord" not in batch:
                raise DataError(
                    f"the {self.encoder_config['type']} encoder needs a point batch (coord, color)"
                )
            coord, color = batch["coord"], batch["color"]
            feat = point_input(getattr(self.encoder, "in_channels", 3), coord, color)
            return self.encoder(coord, feat, batch["offset"])
        if "image" not in batch:
            raise DataError(f"the {self.encoder_config['type']} encoder needs an image batch (image)")
        return self.encoder(batch["image"]).permute(0, 2, 3, 1)

    def forward(self, batch: Mapping[str, Any]) -> Float[Tensor, "... k"]:
        if self.linear_probe:
            with torch.no_grad():
                features = self.features(batch)
        else:
            features = self.features(batch)
        return self.head(features.reshape(-1, features.shape[-1])).reshape(*features.shape[:-1], -1)
