"""Encoder weights out of a pre-training checkpoint, in the layout each downstream framework loads.

- pointcept:   {"state_dict": {"backbone.<SpUNetBase key>": ...}}  (Pointcept's `weight=` loader reads
               checkpoint["state_dict"]; its segmentors hold the network as `backbone`).
- mmdet3d:     {"state_dict": {"backbone.<key>": ...}, "meta": {...}} for VoteNet's PointNet2SASSG backbone or
               ImVoxelNet's ResNet-50 (mmdet's ResNet uses torchvision's parameter names).
- torchvision: the bare resnet50 state dict without `fc.*` (load with `strict=False`, or replace `fc`).

Files are written atomically, with a JSON sidecar `FILE.json` (config, step, gs3 version, format, encoder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import gs3
from gs3.config import config_from_dict
from gs3.errors import GS3Error
from gs3.train.checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint

ENCODER_PREFIX = "model.encoder."  # GS3Module.model (GS3).encoder
FORMATS: dict[str, tuple[str, ...]] = {
    "pointcept": ("SpUNet-v1m1",),
    "mmdet3d": ("PointNet2SASSG", "ResNet50"),
    "torchvision": ("ResNet50",),
}


def check_format(format: str, encoder_type: str) -> None:
    if format not in FORMATS:
        raise GS3Error(f"--format {format}: unknown; choose one of {', '.join(FORMATS)}")
    if encoder_type not in FORMATS[format]:
        fits = [name for name, types in FORMATS.items() if encoder_type in types]
        raise GS3Error(
            f"--format {format} does not fit the checkpoint's encoder {encoder_type} "
            f"({format} takes {' or '.join(FORMATS[format])}); use --format {' or '.join(fits) or '?'}"
        )


def encoder_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """A freshly built encoder holding the checkpoint's pre-trained weights, and the checkpoint's config."""
    from gs3.encoders import build_encoder

    config = config_from_dict(checkpoint["gs3"]["config"])
    encoder = build_encoder(dict(config.model.encoder))
    weights = {
        k[len(ENCODER_PREFIX) :]: v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(ENCODER_PREFIX)
    }
    if not weights:
        raise GS3Error(f"checkpoint has no '{ENCODER_PREFIX}*' weights")
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise GS3Error(
            f"checkpoint encoder weights do not fit {config.model.encoder['type']}: "
            f"{len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    return encoder, checkpoint["gs3"]["config"]


def export_payload(format: str, backbone: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    backbone = {k: v.detach().cpu().contiguous() for k, v in backbone.items()}
    if format == "torchvision":
        return backbone
    payload: dict[str, Any] = {"state_dict": {f"backbone.{k}": v for k, v in backbone.items()}}
    if format == "mmdet3d":
        payload["meta"] = {"gs3": meta}
    return payload


def export_checkpoint(checkpoint_path: str | os.PathLike, format: str, out: str | os.PathLike) -> Path:
    """Write the encoder of a gs3 checkpoint as `out` (+ `out.json`); returns the sidecar's path."""
    checkpoint = load_checkpoint(checkpoint_path)
    encoder_type = checkpoint["gs3"]["config"]["model"]["encoder"]["type"]
    check_format(format, encoder_type)
    encoder, config = encoder_from_checkpoint(checkpoint)
    backbone = encoder.backbone_state_dict()
    meta = {
        "gs3_version": gs3.__version__,
        "checkpoint_gs3_version": checkpoint["gs3"].get("version"),
        "format": format,
        "encoder": encoder_type,
        "step": int(checkpoint["gs3"].get("step", checkpoint.get("global_step", 0))),
        "source_checkpoint": str(Path(checkpoint_path).resolve()),
        "num_tensors": len(backbone),
        "config": config,
    }
    out = Path(out)
    atomic_torch_save(export_payload(format, backbone, meta), out)
    sidecar = out.with_name(out.name + ".json")
    atomic_write_text(json.dumps(meta, indent=2, default=str) + "\n", sidecar)
    return sidecar


def backbone_from_export(payload: dict[str, Any], format: str) -> dict[str, Tensor]:
    """Inverse of `export_payload`: the keys `load_backbone_state_dict` takes."""
    if format == "torchvision":
        return dict(payload)
    return {k[len("backbone.") :]: v for k, v in payload["state_dict"].items() if k.startswith("backbone.")}


def load_export(path: str | os.PathLike) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)
