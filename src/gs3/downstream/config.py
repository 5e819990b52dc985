"""The fine-tuning config (`gs3 finetune --config NAME|PATH`): typed dataclasses filled from YAML.

`load_finetune_config("demo_semseg_spunet_synthetic", ["optim.lr=0.1"])` reads
`configs/finetune/NAME.yaml` (or a path), merges it over these defaults and applies dotted overrides, through
the same code as pre-training's configs (gs3.config.load_structured); a bad key or value is one ConfigError
line naming it.

Defaults are Pointcept's SpUNet ScanNet recipe (configs/scannet/semseg-spunet-v1m1-0-base.py): SGD with
Nesterov momentum 0.9, lr 0.05, weight decay 1e-4, OneCycleLR (pct_start 0.05, cosine annealing,
div_factor 10, final_div_factor 1e4, momentum cycled between 0.85 and 0.95, as torch's OneCycleLR does by
default and Pointcept keeps), 800 epochs, no gradient clipping; cross-entropy with ignore index -1. AdamW
and a cosine or polynomial (Pointcept's S3DIS recipe: PolyLR, power 0.9) schedule are options.

Decisions where the recipe does not carry over:
- the encoder is fed what pre-training fed it (colour in [0, 1], plus xyz when in_channels is 6), not
  Pointcept's colour + normal in [-1, 1]: fine-tuning must see the input the weights were trained on;
- `optim.weight_decay` applies to every parameter, as Pointcept's SGD does; with AdamW, biases and norm
  scales are not decayed (pre-training's `parameter_groups`);
- `trainer.precision` auto: bf16-mixed on GPU (Pointcept: fp16 AMP with a loss scaler), 32-true on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gs3.config import (
    TrainerConfig,
    available_configs,
    load_structured,
    structured_from_dict,
    validate_trainer,
)
from gs3.config import check_setting as _check
from gs3.downstream.data.config import DownstreamDataConfig, validate_data_config
from gs3.errors import ConfigError

FINETUNE = "finetune"  # the config kind: packaged configs live in gs3/configs/finetune/
MODES = ("finetune", "linear_probe")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("onecycle", "cosine", "poly", "constant")


@dataclass
class FinetuneModelConfig:
    encoder: dict[str, Any] = field(default_factory=lambda: {"type": "SpUNet-v1m1"})  # as in pre-training
    head: dict[str, Any] = field(default_factory=lambda: {"type": "linear"})  # linear | mlp (+ kwargs)
    mode: str = "finetune"  # finetune (everything trains) | linear_probe (encoder and its BN frozen)


@dataclass
class FinetuneOptimConfig:
    optimizer: str = "sgd"  # sgd | adam (L2 weight decay, as mmdet3d's PointNet++) | adamw
    lr: float = 0.05  # the peak rate (OneCycle's max_lr)
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD (OneCycle with cycle_momentum replaces it by its cycle)
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam, AdamW
    scheduler: str = "onecycle"  # onecycle | cosine | poly | constant
    pct_start: float = 0.05  # onecycle: fraction of the run spent warming up
    anneal_strategy: str = "cos"  # onecycle: cos | linear
    div_factor: float = 10.0  # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 1e4  # onecycle: final lr = initial lr / final_div_factor
    cycle_momentum: bool = True  # onecycle
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    min_lr: float = 0.0  # cosine: decays to this
    warmup_steps: int = 0  # cosine: linear warm-up
    poly_power: float = 0.9  # poly: lr · (1 − step / (total + 1)) ** power (Pointcept's PolyLR)
    epochs: int = 800  # passes over the training scenes (× data.loop)
    max_steps: int = -1  # > 0: exactly this many optimizer steps (and schedule over them) instead
    grad_clip: float = 0.0  # max gradient norm; 0 = off (Pointcept: clip_grad None)


@dataclass
class EvaluationConfig:
    every: int = 0  # optimizer steps between validations during training (0: only the final one)
    snapshots: int = 2  # validation samples drawn as prediction pictures / point clouds at each validation
    max_batches: int = 0  # > 0: validations during training score only this many batches (final: all)
    # > 0: before each validation (and before the final checkpoint), BatchNorm running statistics are
    # recomputed as the plain average over this many training batches ("precise BN"; gs3.train.evaluation.
    # recompute_batchnorm). Off in the Pointcept recipes; short runs need it (BN momentum 0.01 lags).
    precise_bn_batches: int = 0


@dataclass
class FinetuneConfig:
    name: str = "finetune"
    pretrained: str = ""  # gs3 checkpoint or `gs3 export` file for the encoder; empty: from scratch
    data: DownstreamDataConfig = field(default_factory=DownstreamDataConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def available_finetune_configs() -> list[str]:
    return available_configs(FINETUNE)


def load_finetune_config(
    name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> FinetuneConfig:
    """A fine-tuning config by packaged name (configs/finetune/NAME.yaml) or path, with dotted overrides."""
    return load_structured(FinetuneConfig, FINETUNE, name_or_path, overrides, validate_finetune)


def finetune_config_from_dict(
    values: dict[str, Any], source: str = "checkpoint", overrides: list[str] | tuple[str, ...] = ()
) -> FinetuneConfig:
    """Rebuild a config saved with `config_to_dict` (a checkpoint's), optionally with overrides."""
    return structured_from_dict(FinetuneConfig, values, source, overrides, validate_finetune)


__all__ = [
    "EvaluationConfig",
    "FinetuneConfig",
    "FinetuneModelConfig",
    "FinetuneOptimConfig",
    "available_finetune_configs",
    "finetune_config_from_dict",
    "load_finetune_config",
    "validate_finetune",
]


def encoder_modality(encoder: dict[str, Any]) -> str:
    """ "points" or "image", from the encoder class registered under the config's type (nothing built)."""
    from gs3.encoders import ENCODERS

    return getattr(ENCODERS.get(str(encoder.get("type"))), "modality", "points")


def validate_finetune(config: FinetuneConfig, source: str = "config") -> None:
    """Range and consistency checks omegaconf's type checks cannot express; one line naming the key."""
    validate_data_config(config.data, source)
    m, o, e = config.model, config.optim, config.evaluation
    _check("type" in m.encoder, source, "model.encoder.type", "missing (SpUNet-v1m1|PointNet2SASSG|ResNet50)")
    try:
        modality = encoder_modality(m.encoder)
    except ConfigError as error:
        raise ConfigError(f"{source}: bad setting 'model.encoder.type': {error}") from None
    wanted = "images" if modality == "image" else "points"
    _check(
        config.data.modality == wanted,
        source,
        "data.modality",
        f"'{config.data.modality}' does not fit the {m.encoder['type']} encoder (it takes {wanted})",
    )
    _check("type" in m.head, source, "model.head.type", "missing (linear|mlp)")
    _check(m.mode in MODES, source, "model.mode", f"'{m.mode}' not {'|'.join(MODES)}")
    _check(
        o.optimizer in OPTIMIZERS, source, "optim.optimizer", f"'{o.optimizer}' not {'|'.join(OPTIMIZERS)}"
    )
    _check(
        o.scheduler in SCHEDULERS, source, "optim.scheduler", f"'{o.scheduler}' not {'|'.join(SCHEDULERS)}"
    )
    _check(o.lr > 0 and 0 <= o.min_lr <= o.lr, source, "optim.lr/min_lr", "need lr > 0 and 0 <= min_lr <= lr")
    _check(o.weight_decay >= 0, source, "optim.weight_decay", "must be >= 0")
    _check(0 <= o.momentum < 1, source, "optim.momentum", "must be in [0, 1)")
    _check(len(o.betas) == 2, source, "optim.betas", "expected two numbers")
    _check(0 < o.pct_start < 1, source, "optim.pct_start", "must be in (0, 1)")
    _check(o.anneal_strategy in ("cos", "linear"), source, "optim.anneal_strategy", "not cos|linear")
    _check(o.div_factor > 0 and o.final_div_factor > 0, source, "optim.div_factor", "factors must be > 0")
    _check(
        0 <= o.base_momentum <= o.max_momentum < 1,
        source,
        "optim.base/max_momentum",
        "need 0 <= base <= max < 1",
    )
    _check(o.warmup_steps >= 0 and o.poly_power > 0, source, "optim.warmup_steps/poly_power", ">= 0 / > 0")
    _check(o.epochs >= 1 or o.max_steps > 0, source, "optim.epochs", "must be >= 1 (or set optim.max_steps)")
    _check(o.grad_clip >= 0, source, "optim.grad_clip", "must be >= 0 (0 = off)")
    _check(
        min(e.every, e.snapshots, e.max_batches, e.precise_bn_batches) >= 0,
        source,
        "evaluation",
        "every, snapshots, max_batches and precise_bn_batches must be >= 0",
    )
    validate_trainer(config.trainer, source)
