"""Configs: typed dataclasses filled from YAML (omegaconf structured configs).

`load_config("demo", ["optim.lr=3e-4"])` reads `configs/pretrain/demo.yaml` shipped inside the package (so it
works from a non-editable install), merges it over the dataclass defaults, then applies dotted overrides. An
unknown key or a value of the wrong type raises `ConfigError` with one line naming the key and the file.
The dataclass defaults are the paper's settings (DESIGN.md §1-9); the YAML files only make them explicit.

Every config kind goes through the same code: `load_structured(schema, kind, name_or_path, overrides,
validate)` reads `configs/<kind>/NAME.yaml` or a path; fine-tuning (`gs3.downstream.config`) uses it with
its own dataclass and kind "finetune".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gs3.errors import ConfigError

PRETRAIN_CONFIG_DIR = "configs/pretrain"
T = TypeVar("T")


@dataclass
class DataConfig:
    source: str = "scannet"  # "scannet": exported scenes under `root`; "synthetic": generated on first use
    root: str = "data/scannet/scans"  # one folder per scene in the ScanNet exported layout
    # Splits: "all" = every scene under `root` (exported folders and .sens files); "scannetv2_train" / _val /
    # _test (or train / val / test) = ScanNet's official lists shipped with gs3; else a file of scene names
    train_split: str = "scannetv2_train"
    val_split: str = "scannetv2_val"
    cache_dir: str = "~/.cache/gs3/demo"  # where synthetic scenes are generated
    synthetic_scenes: int = 8
    synthetic_frames: int = 40
    width: int = 320
    height: int = 240
    frame_interval: int = 5
    num_views: int = 2
    mask_ratio: float = 0.5
    rotation_augment: bool = True  # uniform in [-π/64, π/64] about X and Y, [-π, π] about Z, per sample
    batch_size: int = 4  # per process
    num_workers: int = 4
    extra: dict[str, Any] = field(default_factory=dict)  # passed to the gs3.data dataset as keyword arguments


@dataclass
class VolumeConfig:
    """The NeRF-rendering baseline (Ponder / PonderV2), used when model.renderer = volume.

    Lengths are metres, sharpnesses 1/metres; defaults are PonderV2's ScanNet settings (see gs3.ponder)."""

    grid_shape: list[int] = field(default_factory=lambda: [128, 128, 32])  # cells along world x, y, z (up)
    padding: float = 0.05  # added on every side of the sample's box, as a fraction of its largest side
    frustum_far: float = 6.0  # 2D encoders: the box spans the views' frusta from model.near to this depth
    channels: int = 128  # feature channels of the volume after the 3D network
    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # per level of the 3D U-Net
    geometry: str = "sdf"  # what the field predicts: "sdf" (NeuS, as PonderV2) | "density" (NeRF)
    hidden_channels: int = 128  # width of the field's MLPs
    geometry_channels: int = 64  # features passed from the geometry MLP to the colour MLP
    init_inv_s: float = 20.0  # NeuS: initial sharpness s of the logistic density (learned)
    upsample_inv_s: float = 64.0  # NeuS importance sampling: fixed sharpness, doubled every round
    rays_per_view: int = 600  # rays drawn per view and step (batch 4 × 2 views × 600 = 4,800: Table 2)
    num_samples: int = 96  # uniform (stratified) sections per ray
    num_importance: int = 36  # importance samples per ray, added to the uniform ones
    upsample_steps: int = 1  # rounds of importance sampling
    stratified: bool = True  # jitter samples in training (evaluation always uses the regular positions)
    render_chunk: int = 4096  # rays per chunk when rendering whole views (previews, gs3 render)


@dataclass
class ModelConfig:
    encoder: dict[str, Any] = field(default_factory=lambda: {"type": "SpUNet-v1m1"})  # gs3.encoders config
    head: str = "depth_bin"  # "depth_bin" | "point_offset" (3D encoders only)
    gaussians_per_pixel: int = 1  # k
    sh_degree: int = 2
    near: float = 0.2  # metres: depth range of the depth bins and of the epipolar samples
    far: float = 10.0
    num_depth_bins: int = 64
    head_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the head
    epipolar: dict[str, Any] = field(default_factory=dict)  # keyword arguments of EpipolarTransformer
    background: float = 0.0  # grey level behind the Gaussians when rendering
    renderer: str = "gaussians"  # "gaussians" (GS³) | "volume" (the NeRF baseline, Ponder; see `volume`)
    # gs3.render backend: "auto" (gsplat on CUDA, numba on the CPU) | "numba" | "gsplat" | "torch" (the
    # reference: slow, for checking a result)
    rasterizer: str = "auto"
    volume: VolumeConfig = field(default_factory=VolumeConfig)


@dataclass
class LossConfig:
    lpips_weight: float = 0.05
    vgg_weights: str | None = None  # local path to torchvision's vgg16-397923af.pth (else torch.hub cache)
    # gs3's addition, not the paper's loss (0 = off): MSE of every view rendered from the *other* views'
    # Gaussians only, weighted per pixel by that render's alpha (see GS3.cross_view_mse and the README)
    cross_view_weight: float = 0.0
    # model.renderer=volume only (PonderV2's loss terms; depth supervision is off unless its weights are set)
    color: str = "mse"  # "mse" (as GS³) | "l1" (PonderV2)
    color_weight: float = 1.0
    depth_weight: float = 0.0  # L1 of the rendered distance against the sensor's, on rays with valid depth
    sdf_weight: float = 0.0  # |t + f(t) − sensor distance| for samples within sdf_truncation of the surface
    free_space_weight: float = 0.0  # relu(sdf_truncation − f) for samples in front of the truncation band
    eikonal_weight: float = 0.01  # (|∇f| − 1)² at every sample (no depth needed; sdf geometry only)
    sdf_truncation: float = 0.25  # metres


@dataclass
class OptimConfig:
    lr: float = 1e-4
    min_lr: float = 1e-6  # cosine decay from lr to min_lr over the whole run
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    epochs: int = 100
    max_steps: int = -1  # > 0: stop after this many optimizer steps (and decay over them) instead of epochs
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping


@dataclass
class TrainerConfig:
    seed: int = 0
    out_dir: str = ""  # empty: runs/<config name>
    accelerator: str = "auto"  # "cpu" | "gpu" | "auto"
    devices: Any = "auto"  # number of devices per node, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning strategy; "ddp" for multi-GPU / multi-node (torchrun compatible)
    precision: str = "auto"  # "auto": bf16-mixed on GPU, 32-true on CPU
    checkpoint_every: int = 1000  # optimizer steps
    keep_checkpoints: int = 3  # step checkpoints kept besides last.ckpt
    log_every: int = 50
    image_every: int = 500
    max_nonfinite_in_row: int = 20  # that many non-finite losses in a row stop the run
    progress_bar: bool = True
    # Bit-identical runs, and resumes after a kill, for a given machine and thread count (CPU; on CUDA only
    # as far as PyTorch and gsplat allow): gs3.train.determinism
    deterministic: bool = False


@dataclass
class PretrainConfig:
    name: str = "gs3"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def config_dir(kind: str) -> str:
    """Where packaged configs of a kind ("pretrain", "finetune") live inside the package."""
    return f"configs/{kind}"


def available_configs(kind: str = "pretrain") -> list[str]:
    folder = resources.files("gs3").joinpath(config_dir(kind))
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str | Path, kind: str = "pretrain") -> tuple[DictConfig, str]:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        text, source = path.read_text(), str(path)
    else:
        resource = resources.files("gs3").joinpath(config_dir(kind), f"{name_or_path}.yaml")
        if not resource.is_file():
            raise ConfigError(
                f"{kind} config '{name_or_path}' is neither a file nor a packaged config "
                f"(known: {', '.join(available_configs(kind))})"
            )
        text, source = resource.read_text(), f"{config_dir(kind)}/{name_or_path}.yaml"
    try:
        loaded = OmegaConf.create(text)
    except Exception as error:
        raise ConfigError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    return loaded, source


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{source}: bad setting '{key}': {reason}") from None


def apply_overrides(merged: DictConfig, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Dotted `key=value` overrides over a structured config; one-line ConfigError naming a bad one.

    A mapping given for a free-form dict setting (e.g. `model.encoder={type: PointNet2SASSG}`) replaces it
    rather than merging into it, so switching the encoder type does not keep the other encoder's keys.
    """
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}': expected key=value (e.g. optim.lr=3e-4)")
        key = item.split("=", 1)[0]
        try:
            dotlist = OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as error:  # YAML: e.g. `key=[a` or `key=...`
            reason = str(error).splitlines()[0]
            raise ConfigError(f"override '{item}': not a valid value ({reason})") from None
        value = OmegaConf.select(dotlist, key)
        current = OmegaConf.select(merged, key, default=None)
        if (
            isinstance(value, DictConfig)
            and isinstance(current, DictConfig)
            and OmegaConf.get_type(current) is dict
        ):
            OmegaConf.update(merged, key, OmegaConf.to_container(value), merge=False)
        else:
            merged = _merge(merged, dotlist, f"override '{key}'")
    return merged


def _to_object(schema: type[T], merged: DictConfig, source: str) -> T:
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:  # e.g. a required (MISSING) value left unset
        key = getattr(error, "full_key", None) or "?"
        raise ConfigError(f"{source}: bad setting '{key}': {str(error).splitlines()[0]}") from None
    assert isinstance(config, schema)
    return config


def load_structured(
    schema: type[T],
    kind: str,
    name_or_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    check: Callable[[T, str], None] | None = None,
) -> T:
    """A `schema` config by packaged name (configs/<kind>/NAME.yaml) or path, with dotted overrides, then
    `check(config, source)` (range checks)."""
    loaded, source = _read_yaml(name_or_path, kind)
    merged = apply_overrides(_merge(OmegaConf.structured(schema), loaded, source), overrides)
    config = _to_object(schema, merged, source)
    if check is not None:
        check(config, source)
    return config


def structured_from_dict(
    schema: type[T],
    values: dict[str, Any],
    source: str = "checkpoint",
    overrides: list[str] | tuple[str, ...] = (),
    check: Callable[[T, str], None] | None = None,
) -> T:
    """Rebuild a `schema` config saved with `config_to_dict` (e.g. from a checkpoint), plus overrides."""
    merged = _merge(OmegaConf.structured(schema), OmegaConf.create(values), source)
    config = _to_object(schema, apply_overrides(merged, overrides), source)
    if check is not None:
        check(config, source)
    return config


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """A config by packaged name (configs/pretrain/NAME.yaml) or path, with dotted `key=value` overrides."""
    return load_structured(PretrainConfig, "pretrain", name_or_path, overrides, validate)


def config_from_dict(values: dict[str, Any], source: str = "checkpoint") -> PretrainConfig:
    """Rebuild a config saved with `config_to_dict` (e.g. from a checkpoint)."""
    return structured_from_dict(PretrainConfig, values, source, check=validate)


def config_to_dict(config: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def config_to_yaml(config: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def check_setting(condition: bool, source: str, key: str, message: str) -> None:
    """A one-line ConfigError naming the source and the key unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{source}: bad setting '{key}': {message}")


_check = check_setting  # short, for the many checks below


def validate(config: PretrainConfig, source: str = "config") -> None:
    """Range checks omegaconf's type checks cannot express; one line naming the key on failure."""
    d, m, o, t = config.data, config.model, config.optim, config.trainer
    _check(d.source in ("scannet", "synthetic"), source, "data.source", f"'{d.source}' not scannet|synthetic")
    for key, split in (("data.train_split", d.train_split), ("data.val_split", d.val_split)):
        _check(bool(split.strip()), source, key, "empty (all | scannetv2_train | a file of scene names)")
    _check(d.width > 0 and d.height > 0, source, "data.width/height", "must be positive")
    _check(d.frame_interval >= 1, source, "data.frame_interval", "must be >= 1")
    _check(
        d.num_views >= 2, source, "data.num_views", f"{d.num_views} < 2 (the epipolar transformer needs 2+)"
    )
    _check(0.0 <= d.mask_ratio <= 0.9, source, "data.mask_ratio", f"{d.mask_ratio} outside [0, 0.9]")
    _check(d.batch_size >= 1, source, "data.batch_size", "must be >= 1")
    _check(d.num_workers >= 0, source, "data.num_workers", "must be >= 0")
    _check("type" in m.encoder, source, "model.encoder.type", "missing (SpUNet-v1m1|PointNet2SASSG|ResNet50)")
    _check(
        m.head in ("depth_bin", "point_offset"),
        source,
        "model.head",
        f"'{m.head}' not depth_bin|point_offset",
    )
    _check(
        not (m.head == "point_offset" and m.encoder.get("type") == "ResNet50"),
        source,
        "model.head",
        "point_offset needs a 3D (point) encoder; use depth_bin with ResNet50",
    )
    _check(m.gaussians_per_pixel >= 1, source, "model.gaussians_per_pixel", "must be >= 1")
    _check(0 <= m.sh_degree <= 3, source, "model.sh_degree", f"{m.sh_degree} outside 0..3")
    backends = ("auto", "numba", "gsplat", "torch")  # gs3.render.BACKENDS (config imports no torch code)
    _check(m.rasterizer in backends, source, "model.rasterizer", f"'{m.rasterizer}' not {'|'.join(backends)}")
    _check(0 < m.near < m.far, source, "model.near/far", f"need 0 < near < far, got {m.near}, {m.far}")
    _check(m.num_depth_bins >= m.gaussians_per_pixel, source, "model.num_depth_bins", "must be >= k")
    _check(config.loss.lpips_weight >= 0, source, "loss.lpips_weight", "must be >= 0")
    _check(config.loss.cross_view_weight >= 0, source, "loss.cross_view_weight", "must be >= 0")
    _check(o.lr > 0 and 0 <= o.min_lr <= o.lr, source, "optim.lr/min_lr", "need 0 <= min_lr <= lr, lr > 0")
    _check(o.weight_decay >= 0, source, "optim.weight_decay", "must be >= 0")
    _check(len(o.betas) == 2, source, "optim.betas", "expected two numbers")
    _check(o.epochs >= 1 or o.max_steps > 0, source, "optim.epochs", "must be >= 1 (or set optim.max_steps)")
    _check(o.grad_clip >= 0 and not math.isnan(o.grad_clip), source, "optim.grad_clip", "must be >= 0")
    validate_trainer(t, source)
    _validate_volume(config, source)


def validate_trainer(t: TrainerConfig, source: str = "config") -> None:
    """The `trainer` section's checks (pre-training and fine-tuning share the section)."""
    _check(
        t.precision in ("auto", "32-true", "bf16-mixed", "64-true"),
        source,
        "trainer.precision",
        f"'{t.precision}' not auto|32-true|bf16-mixed|64-true (no fp16: it needs loss scaling)",
    )
    _check(t.checkpoint_every >= 1, source, "trainer.checkpoint_every", "must be >= 1")
    _check(t.log_every >= 1 and t.image_every >= 1, source, "trainer.log_every/image_every", "must be >= 1")
    _check(t.max_nonfinite_in_row >= 1, source, "trainer.max_nonfinite_in_row", "must be >= 1")
    _check(t.num_nodes >= 1, source, "trainer.num_nodes", "must be >= 1")


def _validate_volume(config: PretrainConfig, source: str) -> None:
    """The renderer choice and, for the volume (NeRF) baseline, its settings and loss terms."""
    m, v, loss = config.model, config.model.volume, config.loss
    _check(
        m.renderer in ("gaussians", "volume"),
        source,
        "model.renderer",
        f"'{m.renderer}' not gaussians|volume",
    )
    if m.renderer != "volume":
        return
    _check(
        len(v.grid_shape) == 3 and min(v.grid_shape) >= 2,
        source,
        "model.volume.grid_shape",
        f"{list(v.grid_shape)}: expected three sizes >= 2 (x, y, z)",
    )
    _check(v.padding >= 0, source, "model.volume.padding", "must be >= 0")
    _check(v.frustum_far > m.near, source, "model.volume.frustum_far", f"must exceed model.near={m.near}")
    _check(v.channels >= 1, source, "model.volume.channels", "must be >= 1")
    _check(
        len(v.unet_channels) >= 1 and min(v.unet_channels) >= 1,
        source,
        "model.volume.unet_channels",
        "expected one or more positive widths",
    )
    _check(
        v.geometry in ("sdf", "density"), source, "model.volume.geometry", f"'{v.geometry}' not sdf|density"
    )
    _check(v.hidden_channels >= 1, source, "model.volume.hidden_channels", "must be >= 1")
    _check(v.geometry_channels >= 0, source, "model.volume.geometry_channels", "must be >= 0")
    _check(
        v.init_inv_s > 0 and v.upsample_inv_s > 0,
        source,
        "model.volume.init_inv_s/upsample_inv_s",
        "must be > 0",
    )
    pixels = config.data.width * config.data.height
    _check(
        1 <= v.rays_per_view <= pixels,
        source,
        "model.volume.rays_per_view",
        f"{v.rays_per_view} outside 1..{pixels} (the pixels of one view)",
    )
    _check(v.num_samples >= 1, source, "model.volume.num_samples", "must be >= 1")
    _check(v.num_importance >= 0, source, "model.volume.num_importance", "must be >= 0")
    _check(
        v.num_importance == 0 or 1 <= v.upsample_steps <= v.num_importance,
        source,
        "model.volume.upsample_steps",
        f"{v.upsample_steps} outside 1..num_importance={v.num_importance}",
    )
    _check(v.render_chunk >= 1, source, "model.volume.render_chunk", "must be >= 1")
    _check(
        loss.lpips_weight == 0,
        source,
        "loss.lpips_weight",
        "must be 0 with model.renderer=volume (it renders scattered rays, not images)",
    )
    _check(
        loss.cross_view_weight == 0, source, "loss.cross_view_weight", "must be 0 with model.renderer=volume"
    )
    _check(loss.color in ("mse", "l1"), source, "loss.color", f"'{loss.color}' not mse|l1")
    for key in ("color_weight", "depth_weight", "sdf_weight", "free_space_weight", "eikonal_weight"):
        _check(getattr(loss, key) >= 0, source, f"loss.{key}", "must be >= 0")
    _check(loss.sdf_truncation > 0, source, "loss.sdf_truncation", "must be > 0")
    if v.geometry == "density":
        for key in ("sdf_weight", "free_space_weight"):  # (the eikonal term is simply not used there)
            _check(
                getattr(loss, key) == 0,
                source,
                f"loss.{key}",
                "needs model.volume.geometry=sdf (a density field has no signed distance); set it to 0",
            )
