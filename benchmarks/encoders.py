"""Forward+backward time and peak memory of the three GS³ encoders on a real 2-view 320×240 sample.

    python benchmarks/encoders.py [--data ../shared/data] [--runs 5] [--device cpu|cuda] [--only NAME ...]

The sample: frames 0 and 5 of scannet_format/redkitchen_a, resized to 320×240 (colour by 2×2 averaging,
depth by taking every second pixel so no depth is blended across edges, K scaled by 0.5), valid-depth
pixels back-projected to world points with gs3.cameras.Cameras. 50 % of the points (3D) / pixels (2D) are
hidden at random: point encoders see the visible points; the image encoder sees both images with hidden
pixels set to 0 (a dense CNN costs the same whatever the mask).

Time: median of `--runs` forward+backward passes (after one warm-up), the loss being the sum of the
features times a fixed random tensor. Memory: on CUDA the peak of torch.cuda.max_memory_allocated during a
pass; on CPU the growth of the process's peak RSS over its resident size just before one pass (Linux:
VmHWM reset through /proc/self/clear_refs; elsewhere ru_maxrss), in a fresh subprocess per encoder.
Ratios are against the first encoder in the table, timed in the same process.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gs3.cameras import Cameras, pixel_centers
from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCENE = "scannet_format/redkitchen_a"
FRAMES = (0, 5)
WIDTH, HEIGHT = 320, 240
MASK_RATIO = 0.5
ENCODERS = ("SpUNet-v1m1", "PointNet2SASSG", "ResNet50")


def read_frame(scene: Path, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (H,W,3), depth (H,W) m, K (3,3), cam_to_world (4,4)) at full 640×480 resolution."""
    try:
        from gs3.data import open_scene

        frame = open_scene(scene).frame(index)
        return frame.image, frame.depth, frame.K, frame.cam_to_world
    except ImportError:  # gs3.data not available: read the exported layout directly
        image = (
            np.asarray(Image.open(scene / "color" / f"{index}.jpg").convert("RGB"), dtype=np.float32) / 255
        )
        depth = np.asarray(Image.open(scene / "depth" / f"{index}.png"), dtype=np.float32)
        depth[depth >= 65535] = 0
        K = np.loadtxt(scene / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
        pose = np.loadtxt(scene / "pose" / f"{index}.txt")
        return (
            torch.from_numpy(image),
            torch.from_numpy(depth / 1000),
            torch.tensor(K, dtype=torch.float32),
            torch.tensor(pose, dtype=torch.float32),
        )


def load_sample(data: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two views at 320×240, their world points and 50 % masks."""
    images, depths, Ks, poses = [], [], [], []
    for index in FRAMES:
        image, depth, K, pose = read_frame(data / SCENE, index)
        sx, sy = WIDTH / image.shape[1], HEIGHT / image.shape[0]
        images.append(F.interpolate(image.permute(2, 0, 1)[None], size=(HEIGHT, WIDTH), mode="area")[0])
        step_y, step_x = depth.shape[0] // HEIGHT, depth.shape[1] // WIDTH
        depths.append(depth[step_y // 2 :: step_y, step_x // 2 :: step_x][:HEIGHT, :WIDTH])
        Ks.append(K * torch.tensor([[sx, sx, sx], [sy, sy, sy], [1.0, 1.0, 1.0]]))
        poses.append(pose)
    image = torch.stack(images).permute(0, 2, 3, 1).contiguous()  # (V, H, W, 3)
    depth = torch.stack(depths)
    cameras = Cameras(torch.stack(Ks), torch.stack(poses), WIDTH, HEIGHT)
    pixels = pixel_centers(HEIGHT, WIDTH).reshape(1, -1, 2).expand(len(FRAMES), -1, -1)
    world = cameras.pixels_to_world(pixels, depth.reshape(len(FRAMES), -1))
    valid = depth.reshape(-1) > 0
    generator = torch.Generator().manual_seed(seed)
    point_visible = torch.rand(int(valid.sum()), generator=generator) >= MASK_RATIO
    pixel_visible = torch.rand(image.shape[:3], generator=generator) >= MASK_RATIO
    coord = world.reshape(-1, 3)[valid][point_visible]
    color = image.reshape(-1, 3)[valid][point_visible]
    return {
        "coord": coord.contiguous(),
        "color": color.contiguous(),
        "offset": torch.tensor([coord.shape[0]]),
        "image": image * pixel_visible[..., None],
        "valid_points": torch.tensor(int(valid.sum())),
    }


def build(name: str, device: torch.device) -> torch.nn.Module:
    from gs3.encoders import build_encoder

    return build_encoder({"type": name}).to(device).train()


def inputs_for(model: torch.nn.Module, sample: dict[str, torch.Tensor], device: torch.device) -> tuple:
    if model.modality == "image":
        return (sample["image"].to(device),)
    return sample["coord"].to(device), sample["color"].to(device), sample["offset"].to(device)


def one_pass(model: torch.nn.Module, inputs: tuple, weights: dict) -> None:
    model.zero_grad(set_to_none=True)
    out = model(*inputs)
    if "w" not in weights:
        weights["w"] = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    (out * weights["w"]).sum().backward()
    if out.is_cuda:
        torch.cuda.synchronize()


def time_encoder(name: str, sample: dict, device: torch.device, runs: int) -> dict:
    torch.manual_seed(0)
    model = build(name, device)
    inputs = inputs_for(model, sample, device)
    weights: dict = {}
    one_pass(model, inputs, weights)  # warm-up (allocator, kernel selection)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        one_pass(model, inputs, weights)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    params = sum(p.numel() for p in model.parameters())
    return {
        "name": name,
        "median_s": statistics.median(times),
        "times": times,
        "peak_mib": peak,
        "params": params,
    }


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_peak_rss_growth(data: Path, name: str) -> float:
    """Peak-RSS growth (MiB) over one forward+backward, in this (fresh) process.

    On Linux the peak (VmHWM) is reset just before the pass (/proc/self/clear_refs), so an earlier peak
    (data loading, model construction) cannot hide the pass's own; elsewhere ru_maxrss is used.
    """
    sample = load_sample(data)
    torch.manual_seed(0)
    model = build(name, torch.device("cpu"))
    inputs = inputs_for(model, sample, torch.device("cpu"))
    resident = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = _status_kib("VmHWM") is not None and resident is not None
    except OSError:
        reset = False
    before = resident if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    one_pass(model, inputs, {})
    after = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024  # KiB -> MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="*", default=list(ENCODERS))
    parser.add_argument("--rss-of", help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    args = parser.parse_args()
    if args.rss_of:
        print(json.dumps({"rss_mib": cpu_peak_rss_growth(args.data, args.rss_of)}))
        return
    if not (args.data / SCENE).is_dir():
        sys.exit(f"benchmarks/encoders.py: {args.data / SCENE} not found (pass --data)")
    device = torch.device(args.device)
    sample = load_sample(args.data)
    print(f"machine: {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"sample: {SCENE} frames {FRAMES}, {WIDTH}x{HEIGHT}, {len(FRAMES)} views; "
        f"{int(sample['valid_points'])} valid-depth points, {sample['coord'].shape[0]} visible after "
        f"{MASK_RATIO:.0%} masking; image encoder input {tuple(sample['image'].shape)}"
    )
    rows, notes = [], []
    for name in args.only:
        try:
            row = time_encoder(name, sample, device, args.runs)
        except Exception as error:  # e.g. spconv missing: report and carry on with the others
            notes.append(f"{name}: skipped ({type(error).__name__}: {str(error).splitlines()[0]})")
            continue
        if device.type == "cpu":
            result = subprocess.run(
                [sys.executable, __file__, "--data", str(args.data), "--rss-of", name],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = result.stdout.strip().splitlines()
            row["peak_mib"] = json.loads(lines[-1])["rss_mib"] if result.returncode == 0 and lines else None
        rows.append(row)
    memory = "peak alloc MiB" if device.type == "cuda" else "peak RSS +MiB"
    header = ("encoder", "params", "fwd+bwd median s", "min s", "max s", memory, "time ratio")
    widths = (16, 10, 17, 7, 7, 15, 10)
    print(
        "\n"
        + " ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths)))
    )
    for row in rows:
        cells = (
            row["name"],
            f"{row['params'] / 1e6:.2f}M",
            f"{row['median_s']:.3f}",
            f"{min(row['times']):.3f}",
            f"{max(row['times']):.3f}",
            f"{row['peak_mib']:.0f}" if row["peak_mib"] is not None else "n/a",
            f"{row['median_s'] / rows[0]['median_s']:.2f}",
        )
        print(" ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))))
    print(f"({args.runs} timed runs each after 1 warm-up; time ratio vs {rows[0]['name'] if rows else '-'})")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
