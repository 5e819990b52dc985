"""VGG-16 convolutional trunk with torchvision's state-dict key names, and loading its weights.

The trunk is `features` of torchvision's `vgg16` (keys `features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.weight`
and `.bias`), so torchvision's `vgg16-397923af.pth` loads as it is (its `classifier.*` keys are ignored).
torchvision itself is not imported: it is not usable on every machine gs3 runs on.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from gs3.errors import ConfigError

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILENAME = "vgg16-397923af.pth"

# torchvision's vgg16 ("D" configuration): output channels of the 3×3 convs, a 2×2 max-pool after each stage.
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# Index in `features` of the ReLU that ends each LPIPS stage: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_STAGE_ENDS = (3, 8, 15, 22, 29)
LPIPS_STAGE_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_feature_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    in_channels = 3
    for stage in _VGG16_STAGES:
        for out_channels in stage:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


class VGG16Features(nn.Module):
    """torchvision's `vgg16().features` (31 layers); `stages()` returns the five LPIPS activations."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_vgg16_feature_layers())

    def forward(self, x: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n 512 h_out w_out"]:
        return self.features(x)

    def stages(self, x: Float[Tensor, "n 3 h w"]) -> list[Tensor]:
        """Activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (channels-first)."""
        outputs = []
        start = 0
        for end in LPIPS_STAGE_ENDS:
            for layer in self.features[start : end + 1]:
                x = layer(x)
            outputs.append(x)
            start = end + 1
        return outputs


def vgg16_feature_keys() -> dict[str, tuple[int, ...]]:
    """The `features.*` keys of torchvision's vgg16 state dict and their shapes."""
    return {k: tuple(v.shape) for k, v in VGG16Features().state_dict().items()}


def default_vgg16_path() -> Path:
    """Where torch.hub keeps (or would keep) torchvision's VGG-16 checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


def _read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated, non-torch or otherwise unreadable file
        reason = type(error).__name__
        raise ConfigError(f"{what}{path}: cannot be read as a torch state dict ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{what}{path}: not a state dict of tensors")
    return state


def vgg16_features_from_file(path: str | os.PathLike) -> VGG16Features:
    """A VGG16Features loaded from a torchvision-format file (full vgg16 or just `features.*` keys)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"loss.vgg_weights={path}: file not found")
    state = _read_state_dict(path, "loss.vgg_weights=")
    expected = vgg16_feature_keys()
    missing = sorted(k for k in expected if k not in state)
    if missing:
        raise ConfigError(
            f"loss.vgg_weights={path}: not torchvision vgg16 weights "
            f"({len(missing)} missing keys, e.g. {missing[0]})"
        )
    wrong = [k for k, shape in expected.items() if tuple(state[k].shape) != shape]
    if wrong:
        raise ConfigError(
            f"loss.vgg_weights={path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
            f"vgg16 needs {expected[wrong[0]]}"
        )
    trunk = VGG16Features()
    trunk.load_state_dict({k: state[k].float() for k in expected}, strict=True)
    return trunk


def load_vgg16_features(path: str | os.PathLike | None = None) -> VGG16Features:
    """VGG-16 trunk weights: `path` if given, else torch.hub's cache, else a download into that cache.

    Offline with nothing cached raises a one-line ConfigError saying how to provide the file.
    """
    if path is not None:
        return vgg16_features_from_file(path)
    cached = default_vgg16_path()
    if cached.is_file():
        return vgg16_features_from_file(cached)
    try:
        torch.hub.load_state_dict_from_url(VGG16_URL, map_location="cpu", check_hash=True, progress=False)
    except Exception as error:  # offline, proxy refused, hash mismatch ...
        raise ConfigError(
            f"LPIPS needs torchvision's VGG-16 weights; downloading failed ({type(error).__name__}): "
            f"put {VGG16_URL} at {cached}, or set loss.vgg_weights=PATH, or set loss.lpips_weight=0"
        ) from None
    return vgg16_features_from_file(cached)
