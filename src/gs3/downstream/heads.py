"""Classifier heads of the segmentor, built by name (`HEADS.build({"type": "linear"}, ...)`).

A head maps per-point or per-pixel features, channels last (M, C), to class logits (M, K). `linear` is
Pointcept's DefaultSegmentor head (one nn.Linear) and the head of linear probing; `mlp` adds one hidden layer
(Linear → BatchNorm → ReLU → Dropout → Linear), the usual "small MLP" probe.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from gs3.errors import ConfigError
from gs3.registry import Registry

HEADS = Registry("classifier head")


@HEADS.register("linear")
class LinearHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, features: Float[Tensor, "m c"]) -> Float[Tensor, "m k"]:
        return self.classifier(features)


@HEADS.register("mlp")
class MLPHead(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, hidden_channels: int = 256, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if hidden_channels < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError(
                f"model.head: hidden_channels ({hidden_channels}) must be >= 1 "
                f"and dropout ({dropout}) in [0, 1)"
            )
        self.hidden = nn.Linear(in_channels, hidden_channels)
        self.norm = nn.BatchNorm1d(hidden_channels)
        self.activation = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_channels, num_classes)

    def forward(self, features: Float[Tensor, "m c"]) -> Float[Tensor, "m k"]:
        return self.classifier(self.dropout(self.activation(self.norm(self.hidden(features)))))


def build_head(config: dict, in_channels: int, num_classes: int) -> nn.Module:
    """A head from {"type": NAME, **kwargs}; unknown keyword arguments raise one ConfigError line."""
    try:
        return HEADS.build(dict(config), in_channels=in_channels, num_classes=num_classes)
    except TypeError as error:
        raise ConfigError(f"model.head: {error}") from None
