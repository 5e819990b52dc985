"""Overfit GS³ on one real pair (issue 5's figure): does the model fit its input views?

    python benchmarks/overfit_pair.py --setup spunet --steps 600          # SR-UNet + point-offset head
    python benchmarks/overfit_pair.py --setup resnet --steps 600          # ResNet-50 + depth-bin head

One batch: frames 60 and 70 of a real scene (default /work/shared/data/scannet_format/redkitchen_a) at
160×120, built with gs3.data (build_sample + collate) with a fixed, seeded 50 % mask (--mask-*), no rotation
augmentation. The pair is chosen for parallax: its cameras are 97 mm and 4.4° apart (a Gaussian at 1.8 m
shifts ~8 px between the views at 160×120). Frames 0 and 5 are only 3.8 mm apart (~0.3 px): any depth
renders them equally well, so they cannot test whether geometry emerges. `--frames A B C` trains on
three (or more) views of one sample instead, GS³'s `num_views: 3` ablation.
AdamW on that batch for --steps steps, λ_LPIPS = 0 (MSE only: the VGG weights are not available offline).
The adapter's max_scale is 3 pixel footprints (default 15) to keep the CPU rasterizer fast; this bounds
how large a Gaussian may grow, so it can only make the fit harder, not easier.
`--override loss.cross_view_weight=2` adds gs3's optional cross-view term (each view rendered from the other
views' Gaussians; see GS3.cross_view_mse).
Every --every steps: the training loss, then PSNR of the renders of all input views (full images, hidden
pixels included), AbsRel, δ<1.25 and the median ratio (> 1: too far) of the rendered depth (where
alpha > 0.5) against sensor depth, its AbsRel on the textured half of the pixels (`tex_ar`, see `textured`)
and on the co-visible pixels (`covis_ar`: the true surface is seen by another view, so a photometric loss
can locate it at all), from a separate forward pass with the head in eval mode (depth bins: top-k instead of
drawn), seconds elapsed.
At the end, where the rendered-depth error comes from: the share of pixels (and of the error) rendered at
under half or over twice the sensor depth, whether the too-near ones sit outside every other view (where no
render checks them), and AbsRel on the co-visible pixels. `--save FILE.npz` keeps the final images, renders,
rendered and sensor depth and the co-visible mask of every view for a closer look.
Targets (issue 5): spunet ≥ 28 dB within 600 steps; resnet ≥ 22 dB with AbsRel ≤ 0.15.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gs3.cameras import Cameras
from gs3.config import load_config
from gs3.data import SampleConfig, build_sample, collate, open_scene
from gs3.files import atomic_write
from gs3.model import GS3, GS3Output
from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

DEFAULT_SCENE = "/work/shared/data/scannet_format/redkitchen_a"
SETUPS = {
    "spunet": ("gs3_rgbd_spunet", "point_offset", 28.0, None),
    "resnet": ("gs3_rgb_resnet50", "depth_bin", 22.0, 0.15),
}


def build_pair_batch(
    scene_path: str, frames: tuple[int, ...], size: tuple[int, int], seed: int, mask: dict
) -> dict:
    """The one batch (B=1, V=len(frames)) in the collated format, fixed seeded mask, no augmentation."""
    scene = open_scene(scene_path)
    sample_config = SampleConfig(num_views=len(frames), resolution=size, augment=False, **mask)
    views = [scene.frame(position, sample_config.resolution) for position in frames]
    sample = build_sample(views, sample_config, np.random.default_rng(seed), Path(scene_path).name)
    return collate([sample])


def textured(image: torch.Tensor) -> torch.Tensor:
    """Pixels whose intensity gradient is above the median of their view: where a wrong depth moves an edge.

    image (B, V, H, W, 3) → bool (B, V, H, W). Photometric loss says nothing about depth on flat surfaces,
    so the rendered depth is also scored on this half alone.
    """
    gray = image.mean(dim=-1)
    dy, dx = torch.gradient(gray, dim=(-2, -1))
    magnitude = torch.hypot(dx, dy)
    return magnitude > magnitude.flatten(-2).median(dim=-1).values[..., None, None]


def depth_ratio(rendered: torch.Tensor, sensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels with both depths (bool, rendered's shape) and rendered / sensor depth there (< 1: too near)."""
    scored = (rendered > 0) & (sensor > 0)
    return scored, rendered[scored] / sensor[scored]


def seen_by_other_views(
    cameras: Cameras, points: torch.Tensor, sensor_depth: torch.Tensor | None = None
) -> torch.Tensor:
    """(V, H, W) bool: the world point of each pixel (points (V, H, W, 3)) lies in front of and inside at
    least one *other* view, and, given that view's sensor depth, not more than 5 % behind its surface."""
    num_views, height, width, _ = points.shape
    seen = torch.zeros((num_views, height, width), dtype=torch.bool, device=points.device)
    for a, b in itertools.permutations(range(num_views), 2):
        pixels, z = cameras[b].world_to_pixels(points[a].reshape(-1, 3))
        column, row = pixels.unbind(-1)
        inside = (z > 0) & (column >= 0) & (column < width) & (row >= 0) & (row < height)
        if sensor_depth is not None:
            surface = sensor_depth[b][row.long().clamp(0, height - 1), column.long().clamp(0, width - 1)]
            inside &= (surface <= 0) | (z < 1.05 * surface)
        seen[a] |= inside.reshape(height, width)
    return seen


def sample_cameras(batch: dict) -> Cameras:
    height, width = batch["depth"].shape[-2:]
    return Cameras(batch["K"][0], batch["cam_to_world"][0], width, height)


def covisible_pixels(batch: dict) -> torch.Tensor:
    """(V, H, W) bool for sample 0: the pixel's true (sensor) surface is seen by another view."""
    cameras, sensor = sample_cameras(batch), batch["depth"][0]
    return seen_by_other_views(cameras, cameras.backproject_depth(sensor), sensor)


def depth_breakdown(depth: torch.Tensor, batch: dict) -> dict[str, float]:
    """Where the rendered-depth error of sample 0 comes from: pixels rendered at under half / over twice
    the sensor depth (share of pixels and of the summed |relative error|), and whether the too-near ones
    put their surface outside every other view (where no render can check it); AbsRel of the rest, and
    AbsRel on co-visible pixels (true surface seen by another view)."""
    cameras = sample_cameras(batch)
    sensor, rendered = batch["depth"][0], depth[0]
    scored, ratio = depth_ratio(rendered, sensor)
    error = (ratio - 1).abs()
    too_near, too_far = ratio < 0.5, ratio > 2
    covisible = covisible_pixels(batch)[scored]
    rendered_seen = seen_by_other_views(cameras, cameras.backproject_depth(rendered))[scored]

    def share(selected: torch.Tensor) -> float:
        return float(error[selected].sum() / error.sum())

    return {
        "too_near": float(too_near.float().mean()),
        "too_near_error_share": share(too_near),
        "too_near_outside_others": float((~rendered_seen[too_near]).float().mean()),
        "others_outside_others": float((~rendered_seen[~too_near]).float().mean()),
        "too_far": float(too_far.float().mean()),
        "too_far_error_share": share(too_far),
        "too_far_covisible": float(covisible[too_far].float().mean()),
        "abs_rel_rest": float(error[~too_near & ~too_far].mean()),
        "covisible": float(covisible.float().mean()),
        "abs_rel_covisible": float(error[covisible].mean()),
    }


def evaluate(model: GS3, batch: dict) -> tuple[dict[str, float], GS3Output]:
    """Metrics and renders of the current weights, head in eval mode (top-k depth bins, no drawing)."""
    model.head.eval()
    with torch.no_grad():
        output = model(batch)
    model.head.train()
    metrics = {k: float(v) for k, v in output.metrics.items()}
    scored, ratio = depth_ratio(output.depth, batch["depth"])
    metrics["median_ratio"] = float(ratio.median())  # signed error: < 1 too near, > 1 too far
    on_edges = textured(batch["image"])[scored]
    metrics["textured_abs_rel"] = float((ratio[on_edges] - 1).abs().mean())
    metrics["covisible_abs_rel"] = float((ratio[covisible_pixels(batch)[None][scored]] - 1).abs().mean())
    return metrics, output


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=sorted(SETUPS), default="spunet")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--scene", default=DEFAULT_SCENE)
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 70], help="two or more views")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--max-scale", type=float, default=3.0)
    parser.add_argument(
        "--head-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra head setting, e.g. opacity_exponent=4 or initial_prior=log_uniform_depth (repeatable)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. model.epipolar={downscale: 1} or model.near=0.5 (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--mask-unit", choices=["point", "pixel", "patch"], default="point")
    parser.add_argument("--mask-patch-size", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=0.0, help="stop after N seconds (0: none)")
    parser.add_argument("--save", metavar="FILE.npz", help="write the final images, renders and depths")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if len(args.frames) < 2:
        sys.exit(f"overfit_pair: --frames {args.frames}: need two or more views")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config_name, head, psnr_target, abs_rel_target = SETUPS[args.setup]
    head_kwargs = ", ".join(
        [f"max_scale: {args.max_scale}"] + [o.replace("=", ": ", 1) for o in args.head_option]
    )
    config = load_config(
        config_name,
        [
            f"model.head={head}",
            f"model.head_kwargs={{{head_kwargs}}}",
            "loss.lpips_weight=0",
            f"data.width={args.width}",
            f"data.height={args.height}",
            *args.override,
        ],
    )
    device = torch.device(args.device)
    mask = {
        "mask_ratio": args.mask_ratio,
        "mask_unit": args.mask_unit,
        "mask_patch_size": args.mask_patch_size,
    }
    batch = build_pair_batch(args.scene, tuple(args.frames), (args.width, args.height), args.seed, mask)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    model = GS3(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    print(f"# {' '.join(sys.argv)}")
    print(
        f"# machine: {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"device {device}"
    )
    print(
        f"# scene {args.scene} frames {args.frames} at {args.width}x{args.height}; "
        f"points {batch['coord'].shape[0]} (visible {int(batch['point_visible'].sum())}); "
        f"encoder {config.model.encoder['type']} head {head} ({head_kwargs}) lr {args.lr} lpips 0; "
        f"mask {mask}"
    )
    print(
        f"{'step':>5} {'loss':>9} {'psnr':>7} {'absrel':>7} {'d<1.25':>7} {'ratio':>6} {'tex_ar':>7} "
        f"{'covis_ar':>8} {'gauss':>7} {'sec':>7}"
    )
    start = time.perf_counter()
    best_psnr, last = -1.0, None
    steps_done = 0
    for step in range(1, args.steps + 1):
        output = model(batch)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        steps_done = step
        elapsed = time.perf_counter() - start
        stop = args.time_limit > 0 and elapsed > args.time_limit
        if step % args.every == 0 or step == 1 or step == args.steps or stop:
            m, evaluated = evaluate(model, batch)
            best_psnr = max(best_psnr, m["psnr"])
            last = (float(output.loss.detach()), m, evaluated)
            print(
                f"{step:5d} {last[0]:9.5f} {m['psnr']:7.2f} {m['depth_abs_rel']:7.4f} "
                f"{m['depth_delta1']:7.4f} {m['median_ratio']:6.2f} {m['textured_abs_rel']:7.4f} "
                f"{m['covisible_abs_rel']:8.4f} {int(m['num_gaussians']):7d} {elapsed:7.1f}",
                flush=True,
            )
        if stop:
            break
    elapsed = time.perf_counter() - start
    m = last[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    target = f">= {psnr_target} dB" + (f", AbsRel <= {abs_rel_target}" if abs_rel_target else "")
    print()
    header = "| setup | steps | final PSNR | best PSNR | AbsRel | co-visible AbsRel | δ<1.25 | s/step "
    header += "| target | peak RSS | machine |"
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.setup} ({config.model.encoder['type']} + {head}, lr {args.lr}) | {steps_done} "
        f"| {m['psnr']:.2f} | {best_psnr:.2f} | {m['depth_abs_rel']:.4f} | {m['covisible_abs_rel']:.4f} "
        f"| {m['depth_delta1']:.4f} "
        f"| {elapsed / steps_done:.2f} | "
        f"{target} | {peak:.2f} GiB (process) | {cpu_model()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {device} |"
    )
    breakdown = depth_breakdown(last[2].depth, batch)
    print()
    print("# where the final rendered-depth error comes from (sensor depth as truth):")
    print(
        f"#   rendered at < 0.5x true depth: {breakdown['too_near']:.1%} of pixels, "
        f"{breakdown['too_near_error_share']:.0%} of the summed |relative error|; "
        f"{breakdown['too_near_outside_others']:.0%} of them put their surface outside every other view "
        f"(other pixels: {breakdown['others_outside_others']:.0%})"
    )
    print(
        f"#   rendered at > 2x true depth: {breakdown['too_far']:.1%} of pixels, "
        f"{breakdown['too_far_error_share']:.0%} of the error, {breakdown['too_far_covisible']:.0%} of them "
        f"co-visible; AbsRel of the remaining pixels {breakdown['abs_rel_rest']:.3f}"
    )
    print(
        f"#   co-visible pixels (true surface seen by another view): {breakdown['covisible']:.1%}, "
        f"AbsRel {breakdown['abs_rel_covisible']:.3f}"
    )
    if args.save:
        save_final(args.save, batch, last[2])


def save_final(path: str, batch: dict, output: GS3Output) -> None:
    """Sample 0's real and rendered images, rendered and sensor depth, and the co-visible and
    Gaussian-producing pixels, (V, H, W[, 3]) arrays in one .npz (written atomically)."""
    arrays = {
        "image": batch["image"][0],
        "render": output.color[0],
        "alpha": output.alpha[0],
        "rendered_depth": output.depth[0],
        "sensor_depth": batch["depth"][0],
        "covisible": covisible_pixels(batch),
    }
    numpy_arrays = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    atomic_write(path, lambda file: np.savez_compressed(file, **numpy_arrays))
    print(f"# saved {path}")


if __name__ == "__main__":
    main()
