"""ResNet-50 image encoder with torchvision's exact module tree, fused to 128-d pixel-level features.

The trunk (conv1, bn1, layer1–4 of Bottleneck blocks, stride on the 3×3 conv — "ResNet v1.5") has exactly
torchvision's `resnet50` parameter and buffer names and shapes, minus `fc`, so torchvision checkpoints load
and exported weights load into torchvision / mmdet (ImVoxelNet, Atlas). It is initialised as torchvision
does (Kaiming-normal fan-out convs, BN γ=1 β=0) and trained from scratch.

Pixel-level features (after pixelSplat's ResNet backbone): the outputs of layer1–4 (strides 4, 8, 16, 32)
are each projected to 128 channels by a 1×1 conv, bilinearly upsampled to the input resolution and summed;
a shallow full-resolution branch (two 3×3 convs on the image, then 1×1 to 128) adds pixel-accurate detail;
the sum goes through ReLU and a 1×1 fusion conv. Fusion is 1×1 rather than 3×3 because at 320×240 a 3×3
128→128 conv would cost more than the whole trunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from gs3.encoders.registry import ENCODERS
from gs3.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET50_LAYERS = (3, 4, 6, 3)


@dataclass
class BackboneLoadReport:
    """What `load_backbone_state_dict` did: keys absent from the input, keys not expected, keys skipped."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def load_backbone_subset(
    model: nn.Module,
    backbone_keys: list[str],
    state_dict: Mapping[str, Tensor],
    strict: bool,
    source: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> BackboneLoadReport:
    """Load the `backbone_keys` entries of `model` from a reference-framework state dict.

    Keys for which `ignore(key)` holds (e.g. torchvision's classifier `fc.*`) are skipped and listed in
    `ignored`. With `strict`, any missing or unexpected key raises DataError; a shape mismatch always does.
    """
    ignored = sorted(key for key in state_dict if ignore(key))
    offered = {key: value for key, value in state_dict.items() if not ignore(key)}
    expected = set(backbone_keys)
    report = BackboneLoadReport(
        missing=sorted(expected - offered.keys()),
        unexpected=sorted(offered.keys() - expected),
        ignored=ignored,
    )
    if strict and (report.missing or report.unexpected):
        raise DataError(
            f"{source}: state dict does not match the backbone: {len(report.missing)} missing "
            f"(e.g. {report.missing[:3]}), {len(report.unexpected)} unexpected (e.g. {report.unexpected[:3]})"
        )
    own = model.state_dict()
    for key in expected & offered.keys():
        if tuple(offered[key].shape) != tuple(own[key].shape):
            raise DataError(
                f"{source}: '{key}' has shape {tuple(offered[key].shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict({key: offered[key] for key in expected & offered.keys()}, strict=False)
    return report


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride sits on the 3×3 conv); output has 4 × planes channels."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                _conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_stage(in_channels: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_channels, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@ENCODERS.register("ResNet50")
class ResNet50(nn.Module):
    """ResNet-50 trunk (torchvision names) + multi-scale fusion to per-pixel features.

    forward(image (N, H, W, 3) in [0, 1]) -> (N, out_channels, H, W); ImageNet normalisation is inside.
    """

    modality = "image"
    backbone_prefixes = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")

    def __init__(self, out_channels: int = 128, full_resolution_channels: int = 32) -> None:
        super().__init__()
        self.out_channels = out_channels
        # torchvision's trunk, attribute for attribute (no fc).
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stage_channels = []
        in_channels = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), RESNET50_LAYERS)):
            stride = 1 if index == 0 else 2
            setattr(self, f"layer{index + 1}", _make_stage(in_channels, planes, blocks, stride))
            in_channels = planes * Bottleneck.expansion
            stage_channels.append(in_channels)
        # Pixel-level head (not part of torchvision's key set).
        self.projections = nn.ModuleDict(
            {f"layer{i + 1}": nn.Conv2d(c, out_channels, kernel_size=1) for i, c in enumerate(stage_channels)}
        )
        self.full_resolution = nn.Sequential(
            nn.Conv2d(3, full_resolution_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(full_resolution_channels, full_resolution_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(full_resolution_channels, out_channels, kernel_size=1),
        )
        self.fuse = nn.Conv2d(out_channels, out_channels, kernel_size=1)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init_trunk()

    def _init_trunk(self) -> None:
        """torchvision's ResNet initialisation (zero_init_residual=False)."""
        for name, module in self.named_modules():
            if not name.startswith(self.backbone_prefixes) and name not in ("conv1", "bn1"):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stage_features(self, image: Float[Tensor, "n 3 h w"]) -> list[Tensor]:
        """Outputs of layer1–4 (strides 4, 8, 16, 32) for a normalised channels-first image."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        stages = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            stages.append(x)
        return stages

    def forward(self, image: Float[Tensor, "n h w 3"]) -> Float[Tensor, "n c h w"]:
        if image.dim() != 4 or image.shape[-1] != 3:
            raise ValueError(f"ResNet50: expected an image batch (N, H, W, 3), got {tuple(image.shape)}")
        height, width = image.shape[1:3]
        x = (image.permute(0, 3, 1, 2) - self.pixel_mean) / self.pixel_std
        fused = self.full_resolution(x)
        for name, stage in zip(self.projections, self.stage_features(x)):
            # Summing as we go keeps only one full-resolution map alive (interpolation saves nothing).
            projected = self.projections[name](stage)
            fused = fused + F.interpolate(
                projected, size=(height, width), mode="bilinear", align_corners=False
            )
        return self.fuse(F.relu(fused))

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """Exactly torchvision resnet50's state dict without `fc.*` (318 entries)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.backbone_prefixes)}

    def load_backbone_state_dict(
        self, state_dict: Mapping[str, Tensor], strict: bool = True
    ) -> BackboneLoadReport:
        """Load torchvision resnet50 weights; a full torchvision state dict works too (its `fc.*` is ignored
        and listed in the report's `ignored`)."""
        return load_backbone_subset(
            self,
            list(self.backbone_state_dict()),
            state_dict,
            strict,
            source="ResNet50.load_backbone_state_dict",
            ignore=lambda key: key.startswith("fc."),
        )
