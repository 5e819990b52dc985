"""Render chosen frames of a scene with a pre-trained GS3 checkpoint (the `gs3 render` command)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gs3.config import config_from_dict
from gs3.errors import GS3Error
from gs3.files import atomic_write
from gs3.train.checkpoint import load_checkpoint
from gs3.train.visualize import colorize_depth, render_grid

MODEL_PREFIX = "model."


def load_model(checkpoint_path: str | os.PathLike, device: str = "cpu"):
    """The model of a checkpoint (GS3 or the NeRF baseline), in eval mode (LPIPS is not loaded: rendering
    needs no loss network)."""
    from gs3.model import build_model

    checkpoint = load_checkpoint(checkpoint_path)
    config = config_from_dict(checkpoint["gs3"]["config"])
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, lpips_weight=0.0))
    model = build_model(config)
    state = {
        k[len(MODEL_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)
    }
    model.load_state_dict(state)
    return model.to(device).eval(), config


def positions_of(scene, frames: list[int]) -> list[int]:
    numbers = {scene.frame_index(position): position for position in range(len(scene))}
    missing = [f for f in frames if f not in numbers]
    if missing:
        raise GS3Error(
            f"--frames: {missing} not in scene {scene.name} (frames {min(numbers)}..{max(numbers)})"
        )
    return [numbers[f] for f in frames]


def _png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda file: Image.fromarray(array).save(file, format="PNG"))


def _rgb8(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def render_frames(
    checkpoint_path: str | os.PathLike,
    scene_path: str | os.PathLike,
    frames: list[int],
    out_dir: str | os.PathLike,
    mask_ratio: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
) -> str:
    from gs3.data import open_scene
    from gs3.data.collate import collate
    from gs3.data.dataset import SampleConfig, build_sample
    from gs3.gaussians import save_ply

    if len(frames) < 2:
        raise GS3Error("--frames: give at least two frames (the epipolar transformer needs two views)")
    if not 0 <= mask_ratio <= 0.9:
        raise GS3Error(f"--mask-ratio {mask_ratio}: must lie in [0, 0.9]")
    model, config = load_model(checkpoint_path, device)
    scene = open_scene(scene_path)
    size = (config.data.width, config.data.height)
    views = [scene.frame(position, size) for position in positions_of(scene, frames)]
    sample_config = SampleConfig(num_views=len(views), resolution=size, augment=False, mask_ratio=mask_ratio)
    sample = build_sample(views, sample_config, np.random.default_rng(seed), scene.name)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collate([sample]).items()}
    with torch.no_grad():
        output = model(batch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sensor = batch["depth"][0]
    valid = sensor > 0
    max_depth = float(sensor[valid].max()) if bool(valid.any()) else float(output.depth.max().clamp(min=1))
    for v, frame in enumerate(frames):
        _png(_rgb8(output.color[0, v]), out / f"render_{frame}.png")
        _png(_rgb8(batch["image"][0, v]), out / f"real_{frame}.png")
        depth_mm = (
            (output.depth[0, v].cpu().double() * 1000).round().clamp(0, 65535).numpy().astype(np.uint16)
        )
        _png(depth_mm, out / f"depth_{frame}.png")
        _png(_rgb8(colorize_depth(output.depth[0, v], max_depth)), out / f"depth_{frame}_color.png")
    grid = render_grid(batch["image"][0], output.color[0], output.depth[0], sensor)
    _png(_rgb8(grid), out / "grid.png")
    if output.gaussians:
        save_ply(output.gaussians[0], out / "gaussians.ply")
        written = f"{len(output.gaussians[0])} Gaussians in gaussians.ply"
    else:
        written = "no gaussians.ply (a NeRF-baseline checkpoint renders a field, not Gaussians)"
    m = output.metrics
    return (
        f"gs3 render: {len(frames)} views of {scene.name} -> {out}: PSNR {float(m['psnr']):.2f} dB, "
        f"rendered depth AbsRel {float(m['depth_abs_rel']):.3f}, δ<1.25 {float(m['depth_delta1']):.3f}, "
        f"{written}"
    )
