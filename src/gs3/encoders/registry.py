"""The encoder registry: every encoder registers itself by name; configs build them by that name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from gs3.registry import Registry

ENCODERS = Registry("encoder")


def build_encoder(config: Mapping[str, Any] | str, **overrides: Any) -> nn.Module:
    """Build an encoder from {"type": NAME, **kwargs} (or just NAME), e.g. {"type": "SpUNet-v1m1"}.

    OmegaConf configs are accepted too; they are turned into plain containers first so that list-valued
    settings (channels, layers) arrive as lists.
    """
    from omegaconf import OmegaConf

    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    return ENCODERS.build(config, **overrides)
