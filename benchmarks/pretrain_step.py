"""Time per pre-training step and peak memory, per config, batch size, device and rasterizer backend, with a
profile of where a step's time goes.

    python benchmarks/pretrain_step.py --quick    # gs3_rgbd_spunet, real kitchen pair at 160×120, batch 1,
                                                  # 2 threads, numba and torch backends, profile (issue 16)
    python benchmarks/pretrain_step.py            # the three paper configs, batch 1 and 4, synthetic rooms at
                                                  # 320×240, CPU (numba, torch) and CUDA (gsplat) when present
    python benchmarks/pretrain_step.py --configs gs3_rgbd_spunet --batch-sizes 1 --scene DIR --width 160 \\
        --height 120 --threads 2 --repeats 5 --profile

A step = forward (encoder → epipolar transformer → head → rasterize every view) + backward + AdamW step.
Data: with --scene, a real pair (frames --frames of an exported scene, default
../shared/data/scannet_format/redkitchen_a frames 0 and 5) built with gs3.data (seeded 50 % mask, no
rotation), the same pair repeated for batches > 1; without it, synthetic rooms at the config's resolution
(generated once into --cache). Each backend's model has `model.rasterizer=B` ("auto" is numba on the CPU,
gsplat on CUDA); `gs3.model.rasterize` is wrapped to time it.
Each (config, batch, device) runs in a fresh subprocess; in it every backend has its own model and
optimizer (same initial weights) and their steps alternate, so that a load change on a shared machine hits
all backends alike ("vs torch" is an in-process ratio). Peak memory is that of one step per backend: on
CUDA torch.cuda.max_memory_allocated; on the CPU the process peak RSS (VmHWM reset before the step through
/proc/self/clear_refs; Python, torch, both models and the data included), numba's step before torch's.
LPIPS needs the VGG-16 weights, which are not available offline: pass --vgg-weights to include it,
otherwise λ_LPIPS = 0 and the table says so. "per sample" compares with batch 1 of the same config, device
and backend; "vs torch" the torch backend's time in the same process.

--profile splits a step (median over the repeats) into: encoder + epipolar transformer + head forward
(`GS3.predict`), rasterizer forward (every `rasterize` call), the rest of the forward (loss, metrics),
rasterizer backward (from the gradient reaching the rasterizer's outputs to its inputs' gradients leaving,
stamped by identity autograd nodes around each call), the rest of the backward, and the optimizer step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

PAPER_CONFIGS = ("gs3_rgbd_spunet", "gs3_rgbd_pointnet2", "gs3_rgb_resnet50")
KITCHEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scannet_format" / "redkitchen_a"
PARTS = (
    "model forward",
    "rasterizer forward",
    "loss forward",
    "rasterizer backward",
    "other backward",
    "optimizer",
)


def real_batch(scene: str, frames: list[int], width: int, height: int, batch: int, seed: int = 0) -> dict:
    import numpy as np

    from gs3.data import SampleConfig, build_sample, collate, open_scene

    opened = open_scene(scene)
    config = SampleConfig(num_views=len(frames), resolution=(width, height), augment=False, mask_ratio=0.5)
    views = [opened.frame(position, config.resolution) for position in frames]
    sample = build_sample(views, config, np.random.default_rng(seed), Path(scene).name)
    return collate([sample] * batch)


def synthetic_batch(args: argparse.Namespace, config) -> dict:
    from gs3.data.collate import collate
    from gs3.train.data import build_dataset, prepare_synthetic

    prepare_synthetic(config)
    dataset = build_dataset(config)
    return collate([dataset[i % len(dataset)] for i in range(args.batch)])


class Clock:
    """Accumulates the step's parts; the rasterizer's backward span is stamped by identity autograd nodes."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.backward_start: list[float] = []
        self.backward_end: list[float] = []

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds


def stamp_function(clock: Clock):
    import torch

    class Stamp(torch.autograd.Function):
        """Identity; its backward notes the time (the rasterizer's gradient arriving or leaving)."""

        @staticmethod
        def forward(ctx, where, *tensors):
            ctx.where = where
            return tuple(t.view_as(t) for t in tensors)

        @staticmethod
        def backward(ctx, *grads):
            (clock.backward_start if ctx.where == "outputs" else clock.backward_end).append(
                time.perf_counter()
            )
            return (None, *grads)

    return Stamp


def instrument(clock: Clock, profile: bool) -> None:
    """gs3.model.rasterize, timed and stamped when profiling."""
    import gs3.model
    from gs3.gaussians import Gaussians
    from gs3.model import GS3
    from gs3.render import RenderOutput, rasterize

    fields = ("means", "scales", "quats", "opacities", "sh")
    stamp = stamp_function(clock)

    def timed_rasterize(gaussians, cameras, background=None, backend="auto"):
        if not profile:
            return rasterize(gaussians, cameras, background, backend=backend)
        start = time.perf_counter()
        inputs = stamp.apply("inputs", *(getattr(gaussians, f) for f in fields))
        out = rasterize(Gaussians(*inputs, validate=False), cameras, background, backend=backend)
        color, alpha, depth = stamp.apply("outputs", out.color, out.alpha, out.depth)
        clock.add("rasterizer forward", time.perf_counter() - start)
        return RenderOutput(color, alpha, depth)

    gs3.model.rasterize = timed_rasterize
    if profile:
        predict = GS3.predict

        def timed_predict(self, batch):
            start = time.perf_counter()
            gaussians = predict(self, batch)
            clock.add("model forward", time.perf_counter() - start)
            return gaussians

        GS3.predict = timed_predict


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """Reset the peak RSS where Linux allows it (/proc/self/clear_refs); returns the RSS (KiB) now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_one(args: argparse.Namespace) -> dict:
    """One (config, batch, device) in this process, every backend in `args.backend` (comma-separated) with
    its own model and optimizer (same initial weights), their steps interleaved: per backend the median
    step time, the peak memory of one step and the profile."""
    import torch

    from gs3.config import load_config
    from gs3.model import GS3

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        "data.source=synthetic",
        f"data.cache_dir={args.cache}",
        "data.synthetic_scenes=1",
        "data.synthetic_frames=12",
        f"data.width={args.width}",
        f"data.height={args.height}",
        f"data.batch_size={args.batch}",
        f"loss.lpips_weight={0.05 if args.vgg_weights else 0.0}",
    ]
    if args.vgg_weights:
        overrides.append(f"loss.vgg_weights={args.vgg_weights}")
    config = load_config(args.one, overrides)
    if args.scene:
        batch = real_batch(args.scene, args.frames, args.width, args.height, args.batch)
    else:
        batch = synthetic_batch(args, config)
    device = torch.device(args.device)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    backends = args.backend.split(",")
    clock = Clock()
    instrument(clock, args.profile)
    models, optimizers = {}, {}
    for backend in backends:
        torch.manual_seed(0)
        model_config = dataclasses.replace(config.model, rasterizer=backend)
        models[backend] = GS3(dataclasses.replace(config, model=model_config)).to(device).train()
        optimizers[backend] = torch.optim.AdamW(models[backend].parameters(), lr=1e-4, weight_decay=0.05)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step(backend: str) -> dict[str, float]:
        model, optimizer = models[backend], optimizers[backend]
        clock.parts.clear()
        clock.backward_start.clear()
        clock.backward_end.clear()
        start = sync()
        with autocast:
            output = model(batch)
        forward_done = sync()
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        backward_done = sync()
        optimizer.step()
        done = sync()
        parts = dict(clock.parts)
        parts["loss forward"] = forward_done - start - sum(parts.values())
        raster_backward = 0.0
        if clock.backward_start and clock.backward_end:
            raster_backward = max(clock.backward_end) - min(clock.backward_start)
        parts["rasterizer backward"] = raster_backward
        parts["other backward"] = backward_done - forward_done - raster_backward
        parts["optimizer"] = done - backward_done
        parts["step"] = done - start
        return parts

    for backend in backends:
        step(backend)  # warm-up (allocations, spconv index building caches, numba cache loading)
    memory = {}
    for backend in sorted(backends, key=lambda b: b == "torch"):  # torch's larger peak last
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(backend)
            memory[backend] = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (cuda max allocated)"
        else:
            before = _reset_peak_rss()
            step(backend)
            peak = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            memory[backend] = f"{peak / 2**20:.2f} GiB peak RSS (+{(peak - before) / 2**20:.2f} in the step)"
    steps: dict[str, list[dict[str, float]]] = {backend: [] for backend in backends}
    for _ in range(args.repeats):
        for backend in backends:
            steps[backend].append(step(backend))
    return {
        backend: {
            "median_s": statistics.median(s["step"] for s in runs),
            "min_s": min(s["step"] for s in runs),
            "parts": {p: statistics.median(s.get(p, 0.0) for s in runs) for p in PARTS}
            if args.profile
            else {},
            "memory": memory[backend],
            "threads": torch.get_num_threads(),
        }
        for backend, runs in steps.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(PAPER_CONFIGS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--backends", nargs="+", default=["numba", "torch"], help="CPU rasterizer backends")
    parser.add_argument("--threads", type=int, default=None, help="torch (and numba backend) threads")
    parser.add_argument("--scene", default=None, help="a real exported scene instead of synthetic rooms")
    parser.add_argument("--frames", nargs="+", type=int, default=[0, 5])
    parser.add_argument("--profile", action="store_true", help="split the step into its parts")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="gs3_rgbd_spunet, the real kitchen pair at 160x120, batch 1, 2 threads, 3 repeats, --profile",
    )
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/gs3/bench"))
    parser.add_argument("--vgg-weights", default=None)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.device = args.device[0]
        print(json.dumps(measure_one(args)))
        return
    if args.quick:
        args.configs, args.batch_sizes, args.repeats = ["gs3_rgbd_spunet"], [1], 3
        args.width, args.height, args.threads, args.profile = 160, 120, 2, True
        args.scene = args.scene or str(KITCHEN)

    import torch

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
        + (
            f", load average {Path('/proc/loadavg').read_text().split()[0]}"
            if Path("/proc/loadavg").exists()
            else ""
        )
    )
    print(f"command: {' '.join(sys.argv)}")
    data = f"real pair {args.scene} frames {args.frames}" if args.scene else "synthetic rooms"
    print(
        f"{data}, images {args.width}x{args.height}, mask 0.5, step = forward + backward + AdamW; median of "
        f"{args.repeats} after 1 warm-up; LPIPS {'on' if args.vgg_weights else 'off (no VGG weights)'}; "
        f"threads {args.threads or 'torch default'}"
    )
    header = (
        f"{'config':<20} {'device':<6} {'backend':<7} {'batch':>5} {'median s/step':>14} {'s/sample':>9} "
        f"{'per sample':>10} {'vs torch':>8}  memory"
    )
    print(header)
    print("-" * len(header))
    profiles = []
    for device in devices:
        backends = args.backends if device == "cpu" else ["gsplat"]
        for name in args.configs:
            for batch in args.batch_sizes:
                command = [
                    sys.executable, __file__, "--one", name, "--batch", str(batch), "--device", device,
                    "--backend", ",".join(backends), "--repeats", str(args.repeats),
                    "--width", str(args.width), "--height", str(args.height), "--cache", args.cache,
                    "--frames", *map(str, args.frames),
                ]  # fmt: skip
                command += ["--threads", str(args.threads)] if args.threads else []
                command += ["--scene", args.scene] if args.scene else []
                command += ["--profile"] if args.profile else []
                command += ["--vgg-weights", args.vgg_weights] if args.vgg_weights else []
                try:
                    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"{name:<20} {device:<6} {'':<7} {batch:>5} {'timeout':>14}")
                    continue
                if result.returncode != 0:
                    reason = (result.stderr.strip().splitlines() or ["?"])[-1][:80]
                    print(f"{name:<20} {device:<6} {'':<7} {batch:>5} {'failed':>14}  {reason}")
                    continue
                rows = json.loads(result.stdout.strip().splitlines()[-1])
                for backend, row in rows.items():
                    base = baseline_per_sample.setdefault((name, device, backend), row["median_s"] / batch)
                    per_sample = row["median_s"] / batch
                    torch_row = rows.get("torch")
                    versus = f"{torch_row['median_s'] / row['median_s']:.2f}x" if torch_row else ""
                    print(
                        f"{name:<20} {device:<6} {backend:<7} {batch:>5} {row['median_s']:>14.3f} "
                        f"{per_sample:>9.3f} {per_sample / base:>10.2f} {versus:>8}  {row['memory']}",
                        flush=True,
                    )
                    if row["parts"]:
                        profiles.append((f"{name} {device} {backend} batch {batch}", row))
    if profiles:
        print("\nwhere a step's time goes (median s over the repeats; the largest part marked *):")
        print(f"{'part':<22}" + "".join(f"{label.split()[2]:>12}" for label, _ in profiles))
        for part in PARTS:
            cells = []
            for _, row in profiles:
                largest = max(row["parts"], key=row["parts"].get)
                cells.append(f"{row['parts'][part]:>11.3f}{'*' if part == largest else ' '}")
            print(f"{part:<22}" + "".join(cells))
        print(f"{'step':<22}" + "".join(f"{row['median_s']:>11.3f} " for _, row in profiles))


baseline_per_sample: dict[tuple[str, str, str], float] = {}

if __name__ == "__main__":
    main()
