"""Pre-trained encoder weights into a segmentor's encoder, from any file gs3 writes.

Accepted files (recognised by content, not by name):
- a gs3 pre-training checkpoint (Lightning .ckpt: `state_dict` with `model.encoder.*`, config in
  `checkpoint["gs3"]["config"]`), and a gs3 fine-tuning checkpoint (`segmentor.encoder.*`);
- `gs3 export --format pointcept` and `--format mmdet3d` files: `{"state_dict": {"backbone.<key>": ...}}`
  (a `module.` prefix from DDP-wrapped Pointcept checkpoints is stripped; other keys, e.g. a detector's heads,
  are reported as unexpected);
- `gs3 export --format torchvision` files and any bare state dict of the encoder (torchvision's `fc.*` is
  reported as unexpected).

The weights are matched to the encoder by name. Encoder weights the file lacks stay at their from-scratch
initialisation and are reported as missing (an exported backbone does not hold gs3's own layers on top of it:
PointNet++'s last propagation levels and output layer, ResNet-50's pixel-level fusion); keys the encoder lacks
are reported as unexpected. A weight whose shape does not fit, a file none of whose weights fit, or an encoder
type other than the one the file says it holds (gs3 checkpoints, or the export's `FILE.json` sidecar) stops
with one line.

Reading: files are first read with `torch.load(weights_only=True)`; a checkpoint that holds other objects
(a class the safe loader does not allow) is read in full, as `gs3.train.checkpoint.load_checkpoint` reads
gs3's own checkpoints: only give --pretrained files from a source you trust.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gs3.errors import GS3Error

# Where a gs3 checkpoint keeps its encoder: GS3Module.model.encoder, FinetuneModule.segmentor.encoder.
CHECKPOINT_ENCODER_PREFIXES = {
    "model.encoder.": "gs3 pre-training checkpoint",
    "segmentor.encoder.": "gs3 fine-tuning checkpoint",
}


@dataclass
class PretrainedWeights:
    """Encoder weights read from a file, what the file is, and the encoder config it states (if any)."""

    path: Path
    kind: str
    weights: dict[str, Tensor]
    encoder_config: dict[str, Any] | None = None
    ignored: list[str] = field(default_factory=list)  # keys outside the backbone (e.g. a detector's heads)


@dataclass
class LoadReport:
    """What loading did: keys loaded, encoder keys the file lacks (left as initialised), file keys the encoder
    does not have."""

    path: Path
    kind: str
    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def listing(keys: list[str]) -> str:
            return ", ".join(keys) if keys else "none"

        return [
            f"pre-trained weights: {self.path} ({self.kind}): {len(self.loaded)} tensors loaded",
            f"  missing (kept as initialised): {len(self.missing)}: {listing(self.missing)}",
            f"  unexpected (not used): {len(self.unexpected)}: {listing(self.unexpected)}",
            *(f"  note: {note}" for note in self.notes),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "loaded": len(self.loaded),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "notes": self.notes,
        }


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "allowed global" not in str(error):
            raise GS3Error(f"{path}: not a readable weights file (not a torch.save file)") from None
    except Exception as error:
        raise GS3Error(f"{path}: not a readable weights file ({type(error).__name__}: {error})") from None
    # A checkpoint holding more than tensors and containers (e.g. a gs3 or Pointcept training checkpoint
    # with other objects): read in full, as gs3.train.checkpoint.load_checkpoint reads gs3's own.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise GS3Error(f"{path}: not a readable weights file ({type(error).__name__}: {error})") from None


def _tensors(mapping: dict[str, Any]) -> dict[str, Tensor]:
    return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, Tensor)}


def _sidecar_encoder(path: Path) -> dict[str, Any] | None:
    """The encoder config `gs3 export` wrote next to the file (FILE.json), if there is one."""
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        return dict(meta["config"]["model"]["encoder"])
    except (ValueError, KeyError, TypeError):
        return None


def read_pretrained(path: str | os.PathLike) -> PretrainedWeights:
    """The encoder weights of a gs3 checkpoint or export file (keys as the encoder names them)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GS3Error(f"{path}: pre-trained weights file not found")
    payload = _torch_load(path)
    if not isinstance(payload, dict):
        raise GS3Error(f"{path}: not a state dict or checkpoint (holds a {type(payload).__name__})")
    state = payload.get("state_dict")
    if "gs3" in payload and isinstance(state, dict):
        for prefix, kind in CHECKPOINT_ENCODER_PREFIXES.items():
            weights = {k[len(prefix) :]: v for k, v in _tensors(state).items() if k.startswith(prefix)}
            if weights:
                config = payload["gs3"].get("config", {}).get("model", {}).get("encoder")
                return PretrainedWeights(path, kind, weights, dict(config) if config else None)
        raise GS3Error(
            f"{path}: gs3 checkpoint without encoder weights ({', '.join(CHECKPOINT_ENCODER_PREFIXES)}*)"
        )
    if isinstance(state, dict):
        state = _tensors(state)
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module.") :]: v for k, v in state.items()}
        backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        kind = "mmdet3d export" if "meta" in payload else "pointcept export"
        if backbone:
            ignored = sorted(k for k in state if not k.startswith("backbone."))
            return PretrainedWeights(path, kind, backbone, _sidecar_encoder(path), ignored)
        return PretrainedWeights(path, "state dict (in 'state_dict')", state, _sidecar_encoder(path))
    weights = _tensors(payload)
    if not weights:
        raise GS3Error(f"{path}: holds no weights (neither a gs3 checkpoint, an export, nor a state dict)")
    return PretrainedWeights(path, "torchvision export / state dict", weights, _sidecar_encoder(path))


def _setting_differences(own: dict[str, Any], other: dict[str, Any]) -> list[str]:
    keys = sorted((set(own) | set(other)) - {"type"})
    return [
        f"{k}: {other.get(k, 'default')} in the file, {own.get(k, 'default')} here"
        for k in keys
        if own.get(k) != other.get(k)
    ]


def load_pretrained_encoder(
    encoder: nn.Module, path: str | os.PathLike, encoder_config: dict[str, Any]
) -> LoadReport:
    """Load the encoder weights of `path` into `encoder` (built from `encoder_config`); see the module."""
    found = read_pretrained(path)
    notes: list[str] = []
    if found.encoder_config is not None:
        theirs, ours = found.encoder_config.get("type"), encoder_config.get("type")
        if theirs != ours:
            raise GS3Error(f"{found.path}: holds a {theirs} encoder, but model.encoder.type is {ours}")
        differences = _setting_differences(encoder_config, found.encoder_config)
        if differences:
            notes.append("encoder settings differ from the pre-trained ones: " + "; ".join(differences))
    own = encoder.state_dict()
    matched = {k: v for k, v in found.weights.items() if k in own}
    for key, value in matched.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise GS3Error(
                f"{found.path}: weight '{key}' has shape {tuple(value.shape)}, the "
                f"{encoder_config.get('type')} encoder expects {tuple(own[key].shape)} "
                "(model.encoder must have the pre-trained encoder's settings)"
            )
    if not matched:
        raise GS3Error(
            f"{found.path}: none of its {len(found.weights)} weights (e.g. {next(iter(found.weights))}) fit "
            f"the {encoder_config.get('type')} encoder"
        )
    encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in matched.items()}, strict=False)
    unexpected = sorted(set(found.weights) - set(own)) + found.ignored
    return LoadReport(
        path=found.path,
        kind=found.kind,
        loaded=sorted(matched),
        missing=sorted(set(own) - set(matched)),
        unexpected=unexpected,
        notes=notes,
    )
