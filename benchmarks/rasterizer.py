"""Rasterizer speed and memory: the CPU backends side by side on real pixel-aligned Gaussians and random
scenes, where the numba backend's time goes, how much work a pass is, and a dense brute-force renderer.

    python benchmarks/rasterizer.py [--runs 5] [--threads N] [--quick] [--skip-dense] [--backends numba torch]

(a) two real 320×240 RGB-D views of ../shared/data/scannet_format/redkitchen_a (frames 0 and 5; colour and
    depth read with Pillow, resized to 320×240, K scaled by 0.5): one Gaussian per pixel of both views
    (153,600), on its pixel's ray at its depth (pixels without valid depth take the median valid depth of
    their view, so every pixel has a Gaussian), isotropic scale = one pixel footprint z/fx, opacity 0.8,
    colour = the pixel's RGB as SH degree 0; rendered into both views. Forward, and forward+backward of an
    MSE loss against the images (gradients for every Gaussian field). Then the numba backend's
    forward+backward stage by stage, the (Gaussian, pixel) pairs a pass evaluates and composites, and the
    arithmetic rate this is against the machine's peak.
(b) 10k and 100k random Gaussians (SH degree 3) in front of one 320×240 camera.
(c) the dense renderer (plain autograd over pixel chunks × all Gaussians) at the largest Gaussian count whose
    saved activations fit the memory cap, against the backends on the same scene.
Timings are medians of --runs runs after one warm-up, in one process, the backends' runs interleaved, so
that ratios compare like with like on a shared machine. Peak memory is the process's peak RSS during one
run of each (Linux: VmHWM, reset before the run through /proc/self/clear_refs; elsewhere ru_maxrss, which
only grows), "+MB" its growth over the RSS before; memory freed by an earlier run may stay resident, so the
numba backends' runs come before torch's.
--quick: 3 runs, case (a) and the profile only.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gs3.cameras import Cameras, scale_intrinsics
from gs3.gaussians import Gaussians
from gs3.render import rasterize
from gs3.render.numba_backend import numba_available
from gs3.render.projection import ALPHA_THRESHOLD, project_gaussians
from gs3.render.sh import SH_C0, sh_to_color
from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs
from numba_profile import profile_numba

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scannet_format" / "redkitchen_a"
WIDTH, HEIGHT = 320, 240


# ----------------------------------------------------------------------------------------------------------
# Memory


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> float:
    """Reset the peak RSS where the OS allows it; returns the RSS (MB) now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------------
# Scenes


def load_view(index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    color = Image.open(DATA / "color" / f"{index}.jpg").convert("RGB").resize((WIDTH, HEIGHT), Image.BILINEAR)
    depth_mm = np.asarray(Image.open(DATA / "depth" / f"{index}.png")).astype(np.float32)
    depth_mm[depth_mm >= 65535] = 0
    full_h, full_w = depth_mm.shape
    depth = Image.fromarray(depth_mm).resize((WIDTH, HEIGHT), Image.NEAREST)
    K = torch.from_numpy(np.loadtxt(DATA / "intrinsic" / "intrinsic_depth.txt")[:3, :3]).float()
    K = scale_intrinsics(K, WIDTH / full_w, HEIGHT / full_h)
    pose = torch.from_numpy(np.loadtxt(DATA / "pose" / f"{index}.txt")).float()
    image = torch.from_numpy(np.asarray(color, dtype=np.float32) / 255.0)
    return image, torch.from_numpy(np.asarray(depth, dtype=np.float32) / 1000.0), K, pose


def pixel_aligned_scene() -> tuple[Gaussians, Cameras, torch.Tensor, int]:
    views = [load_view(i) for i in (0, 5)]
    images = torch.stack([v[0] for v in views])
    cameras = Cameras(torch.stack([v[2] for v in views]), torch.stack([v[3] for v in views]), WIDTH, HEIGHT)
    depth = torch.stack([v[1] for v in views])
    invalid = int((depth <= 0).sum())
    for i in range(2):  # invalid depth: the view's median valid depth, so that every pixel has a Gaussian
        depth[i][depth[i] <= 0] = depth[i][depth[i] > 0].median()
    means = cameras.backproject_depth(depth).reshape(-1, 3)
    fx = cameras.K[:, 0, 0].reshape(2, 1, 1).expand_as(depth).reshape(-1)
    n = means.shape[0]
    gaussians = Gaussians(
        means=means,
        scales=(depth.reshape(-1) / fx)[:, None].expand(n, 3).contiguous(),
        quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).contiguous(),
        opacities=torch.full((n,), 0.8),
        sh=((images.reshape(-1, 3) - 0.5) / SH_C0)[:, None, :],
    )
    return gaussians, cameras, images, invalid


def random_scene(n: int, seed: int = 0) -> tuple[Gaussians, Cameras]:
    gen = torch.Generator().manual_seed(seed)
    K = torch.tensor([[292.5, 0, 160.0], [0, 292.5, 120.0], [0, 0, 1]])
    cameras = Cameras(K[None], torch.eye(4)[None], WIDTH, HEIGHT)
    z = 1.0 + 4.0 * torch.rand(n, generator=gen)
    pixels = torch.rand(n, 2, generator=gen) * torch.tensor([WIDTH, HEIGHT])
    means = torch.stack([(pixels[:, 0] - 160) / 292.5 * z, (pixels[:, 1] - 120) / 292.5 * z, z], dim=-1)
    gaussians = Gaussians(
        means=means,
        scales=torch.exp(torch.empty(n, 3).uniform_(math.log(0.003), math.log(0.03), generator=gen)),
        quats=torch.randn(n, 4, generator=gen),
        opacities=0.05 + 0.95 * torch.rand(n, generator=gen),
        sh=0.3 * torch.randn(n, 16, 3, generator=gen),
    )
    return gaussians, cameras


# ----------------------------------------------------------------------------------------------------------
# Dense brute force: every visible Gaussian at every pixel, plain autograd, chunked over pixel rows only.


def dense_rasterize(gaussians: Gaussians, cameras: Cameras, rows_per_chunk: int = 8) -> torch.Tensor:
    g, W, H = gaussians, cameras.width, cameras.height
    proj = project_gaussians(g.means, g.scales, g.quats, g.opacities, cameras.K, cameras.world_to_cam, W, H)
    images = []
    for c in range(cameras.K.shape[0]):
        index = proj.visible[c].nonzero().squeeze(1)
        index = index[torch.sort(proj.depths[c, index].detach(), stable=True).indices]
        mean, conic = proj.means2d[c, index], proj.conics[c, index]
        rgb = sh_to_color(g.sh[index], g.means[index] - cameras.centers[c])
        opacity = g.opacities[index]
        rows = []
        for y0 in range(0, H, rows_per_chunk):
            ys, xs = torch.meshgrid(
                torch.arange(y0, min(H, y0 + rows_per_chunk)) + 0.5, torch.arange(W) + 0.5, indexing="ij"
            )
            dx = xs.reshape(-1, 1) - mean[:, 0]
            dy = ys.reshape(-1, 1) - mean[:, 1]
            sigma = 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy
            alpha = torch.clamp_max(opacity * torch.exp(-sigma), 0.999)
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
            t_incl = torch.cumprod(1 - alpha, dim=1)
            alpha = torch.where(t_incl > 1e-4, alpha, torch.zeros_like(alpha))  # T is monotone: a suffix
            t_incl = torch.cumprod(1 - alpha, dim=1)
            t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=1)
            rows.append((alpha * t_excl) @ rgb)
        images.append(torch.cat(rows).reshape(H, W, 3))
    return torch.stack(images)


# ----------------------------------------------------------------------------------------------------------


def timed(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def leaves(g: Gaussians) -> Gaussians:
    fields = [
        getattr(g, f).detach().clone().requires_grad_()
        for f in ("means", "scales", "quats", "opacities", "sh")
    ]
    return Gaussians(*fields, validate=False)


def renderer(backend: str):
    if backend == "dense":
        return dense_rasterize
    return lambda g, cameras: rasterize(g, cameras, backend=backend).color


def forward(g: Gaussians, cameras: Cameras, render):
    def run():
        with torch.no_grad():
            return render(g, cameras)

    return run


def forward_backward(g: Gaussians, cameras: Cameras, render, target: torch.Tensor | None = None):
    def run():
        params = leaves(g)
        color = render(params, cameras)
        reference = target if target is not None else torch.full_like(color, 0.5)
        ((color - reference) ** 2).mean().backward()

    return run


def calibration_ms() -> float:
    """Milliseconds for a 10M-element float32 multiply: how busy the (shared) machine is right now."""
    x = torch.rand(10_000_000)
    return 1000 * timed(lambda: x * 3.0, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="3 runs; case (a) and the profile only")
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--backends", nargs="+", default=["numba", "torch"], choices=["numba", "torch"])
    parser.add_argument(
        "--dense-memory-gb", type=float, default=3.0, help="cap on the dense renderer's activations"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = 3 if args.quick else args.runs
    backends = [b for b in args.backends if b != "numba" or numba_available()]

    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, load average {load} at start"
    )
    print(
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, numba backend: {numba_available()}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"timings: median of {runs} runs, the backends' runs interleaved (a load change on a shared machine "
        "hits all alike); peak = process peak RSS during one run, numba's measured before torch's"
    )
    print(f"load probe: 10M-element float32 multiply {calibration_ms():.1f} ms at start\n")
    header = (
        f"{'case':<46} {'gaussians':>9} {'cams':>4} {'backend':<7} {'mode':<8} {'median s':>9} "
        f"{'peak MB':>8} {'+MB':>6} {'vs torch':>8}"
    )
    print(header)
    print("-" * len(header))

    def compare(case: str, g: Gaussians, cameras: Cameras, target=None, names=None) -> dict:
        names = names or backends
        fns = {}
        for backend in names:
            for mode in ("fwd", "fwd+bwd"):
                if args.quick and backend == "torch" and mode == "fwd":
                    continue
                render = renderer(backend)
                fns[backend, mode] = (
                    forward(g, cameras, render)
                    if mode == "fwd"
                    else forward_backward(g, cameras, render, target)
                )
        memory = {}
        for key in sorted(fns, key=lambda k: k[0] == "torch"):  # torch's larger peak last
            fns[key]()  # warm-up (and compilation or cache loading)
            before = reset_peak()
            fns[key]()
            memory[key] = (peak_mb(), peak_mb() - before)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in fns}
        for _ in range(runs):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        medians = {key: statistics.median(t) for key, t in times.items()}
        for (backend, mode), seconds in medians.items():
            baseline = medians.get(("torch", mode))
            ratio = f"{baseline / seconds:.1f}x" if baseline else ""
            peak, growth = memory[backend, mode]
            print(
                f"{case:<46} {len(g):>9} {cameras.K.shape[0]:>4} {backend:<7} {mode:<8} {seconds:>9.3f} "
                f"{peak:>8.0f} {growth:>6.0f} {ratio:>8}",
                flush=True,
            )
        return medians

    scene_a = None
    if DATA.is_dir():
        g, cameras, images, invalid = pixel_aligned_scene()
        scene_a = (g, cameras, images)
        compare(f"(a) pixel-aligned, 2 real views ({invalid} px filled)", g, cameras, images)
    else:
        print(f"(a) skipped: {DATA} not found")

    if scene_a is not None and "numba" in backends:
        print()
        profile_numba(*scene_a, runs)

    if not args.quick:
        print()
        for n in (10_000, 100_000):
            g, cameras = random_scene(n)
            compare(f"(b) {n // 1000}k random, SH degree 3, {WIDTH}x{HEIGHT}", g, cameras)

    if not args.skip_dense and not args.quick:
        # Saved activations of the dense renderer ≈ 12 float32 tensors of pixels × Gaussians.
        n_dense = int(args.dense_memory_gb * 2**30 / (12 * 4 * WIDTH * HEIGHT))
        g, cameras = random_scene(n_dense, seed=1)
        print(
            f"\n(c) dense vs the backends, {n_dense} random Gaussians (largest under the "
            f"{args.dense_memory_gb:g} GB activation cap), 1 camera {WIDTH}x{HEIGHT}"
        )
        medians = compare("(c) dense comparison", g, cameras, names=[*backends, "dense"])
        with torch.no_grad():
            dense = dense_rasterize(g, cameras)
            for backend in backends:
                diff = (dense - renderer(backend)(g, cameras)).abs().max().item()
                print(
                    f"speed-up of {backend} over dense: forward "
                    f"{medians['dense', 'fwd'] / medians[backend, 'fwd']:.1f}x, forward+backward "
                    f"{medians['dense', 'fwd+bwd'] / medians[backend, 'fwd+bwd']:.1f}x; "
                    f"max |dense − {backend}| = {diff:.2e}"
                )
    print(f"\nload probe: 10M-element float32 multiply {calibration_ms():.1f} ms at the end")


if __name__ == "__main__":
    main()
