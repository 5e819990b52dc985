"""Time per pre-training step and peak memory of each paper config (320×240 by default), batch 1 and 4.

    python benchmarks/pretrain_step.py          # all three paper configs, batch 1 and 4, CPU (+CUDA)
    python benchmarks/pretrain_step.py --configs gs3_rgbd_spunet --batch-sizes 1 --repeats 5 --device cpu

A step = forward (encoder → epipolar transformer → head → rasterize every view) + backward + AdamW step, on
synthetic rooms at the config's resolution (generated once into --cache). Each (config, batch, device) runs in
a fresh subprocess so that its peak memory is its own: on CUDA torch.cuda.max_memory_allocated; on the CPU the
process peak RSS (resource.getrusage ru_maxrss), which includes Python, torch and the data. LPIPS needs the
VGG-16 weights, which are not available offline: pass --vgg-weights to include it, otherwise λ_LPIPS = 0 and
the table says so. Ratios compare the time per *sample* with batch 1 of the same config and device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

PAPER_CONFIGS = ("gs3_rgbd_spunet", "gs3_rgbd_pointnet2", "gs3_rgb_resnet50")


def measure_one(args: argparse.Namespace) -> dict:
    """One (config, batch, device) in this process: median step time and peak memory."""
    import torch

    from gs3.config import load_config
    from gs3.data.collate import collate
    from gs3.model import GS3
    from gs3.train.data import build_dataset, prepare_synthetic

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
    prepare_synthetic(config)
    dataset = build_dataset(config)
    batch = collate([dataset[i % len(dataset)] for i in range(args.batch)])
    device = torch.device(args.device)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    torch.manual_seed(0)
    model = GS3(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            output = model(batch)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up (allocations, spconv index building caches)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(args.repeats)]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        memory = f"{peak:.2f} GiB (cuda max allocated)"
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        memory = f"{peak_kib / 2**20:.2f} GiB peak RSS (+{(peak_kib - rss_before) / 2**20:.2f} in steps)"
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "memory": memory,
        "repeats": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(PAPER_CONFIGS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/gs3/bench"))
    parser.add_argument("--vgg-weights", default=None)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.device = args.device[0]
        print(json.dumps(measure_one(args)))
        return

    import torch

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"images {args.width}x{args.height}, 2 views, mask 0.5, step = forward + backward + AdamW; median of "
        f"{args.repeats} after 1 warm-up; LPIPS {'on' if args.vgg_weights else 'off (no VGG weights)'}"
    )
    header = f"{'config':<20} {'device':<6} {'batch':>5} {'median s/step':>14} {'s/sample':>9} {'ratio':>6}"
    header += "  memory"
    print(header)
    print("-" * len(header))
    for device in devices:
        for name in args.configs:
            baseline = None
            for batch in args.batch_sizes:
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    name,
                    "--batch",
                    str(batch),
                    "--device",
                    device,
                    "--repeats",
                    str(args.repeats),
                    "--width",
                    str(args.width),
                    "--height",
                    str(args.height),
                    "--cache",
                    args.cache,
                ] + (["--vgg-weights", args.vgg_weights] if args.vgg_weights else [])
                try:
                    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"{name:<20} {device:<6} {batch:>5} {'timeout':>14}")
                    continue
                if result.returncode != 0:
                    reason = (result.stderr.strip().splitlines() or ["?"])[-1][:80]
                    print(f"{name:<20} {device:<6} {batch:>5} {'failed':>14}  {reason}")
                    continue
                row = json.loads(result.stdout.strip().splitlines()[-1])
                per_sample = row["median_s"] / batch
                baseline = baseline or per_sample
                print(
                    f"{name:<20} {device:<6} {batch:>5} {row['median_s']:>14.3f} {per_sample:>9.3f} "
                    f"{per_sample / baseline:>6.2f}  {row['memory']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
