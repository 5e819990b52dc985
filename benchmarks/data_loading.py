"""Data loading throughput: GS³ samples per second from the ScanNet exported layout and from .sens.

A sample = 2 views (interval 5) at 320×240: decode colour (JPEG, DCT-scaled by Pillow's draft when it helps)
and depth, resize, back-project to coloured points, random rotation, 50 % point mask; batches of 4 collated.
Timing starts once the first batch has arrived (worker start-up is reported separately) and covers the
following ``--samples`` samples; median of ``--runs`` runs. Also times the JPEG decode alone, with and
without draft, to show what draft buys.

    python benchmarks/data_loading.py [--runs 5] [--samples 48] [--batch-size 4] [--resolution 320x240]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gs3.data import GS3Dataset, SampleConfig, collate, parse_resolution
from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = {
    "exported": DATA / "scannet_format" / "redkitchen_a",
    "sens": DATA / "sens" / "redkitchen_b.sens",
}


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def time_loader(source: Path, workers: int, args, run: int) -> tuple[float, float, float]:
    """(samples per second after the first batch, seconds to the first batch, main-process CPU ms per
    sample). With 0 workers the CPU time is the whole per-sample cost, a figure that contention from other
    processes inflates far less than wall time."""
    batches = args.samples // args.batch_size
    config = SampleConfig(resolution=parse_resolution(args.resolution))
    dataset = GS3Dataset([source], config, seed=run, samples_per_scene=(batches + 1) * args.batch_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    for batch in iterator:
        count += batch["image"].shape[0]
    cpu_ms = (time.process_time() - cpu_start) * 1000 / count
    return count / (time.perf_counter() - first), first - start, cpu_ms


def time_jpeg(path: Path, size: tuple[int, int], draft: bool, repeats: int = 30) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", size)
            image = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
            np.asarray(image, dtype=np.float32)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--resolution", default="320x240")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    missing = [str(path) for path in SOURCES.values() if not path.exists()]
    if missing:
        print(f"sample data absent: {missing}")
        return 1
    print(
        f"machine: {cpu_model()}, cores={os.cpu_count()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"sizes: {args.resolution}, 2 views, interval 5, batch {args.batch_size}, "
        f"{args.samples} timed samples per run, median of {args.runs} runs\n"
    )

    size = parse_resolution(args.resolution)
    jpeg = SOURCES["exported"] / "color" / "0.jpg"
    full, drafted = time_jpeg(jpeg, size, draft=False), time_jpeg(jpeg, size, draft=True)
    print(
        f"JPEG 640x480 → {args.resolution}: full decode + resize {full:.2f} ms, "
        f"draft decode + resize {drafted:.2f} ms ({full / drafted:.2f}x)\n"
    )

    rows, baseline = [], None
    for name, path in SOURCES.items():
        for workers in args.workers:
            rates, startups, cpu = [], [], []
            for run in range(args.runs):
                rate, startup, cpu_ms = time_loader(path, workers, args, run)
                rates.append(rate)
                startups.append(startup)
                cpu.append(cpu_ms)
            rate = statistics.median(rates)
            baseline = baseline or rate
            spread = (min(rates), max(rates), statistics.median(startups), statistics.median(cpu))
            rows.append((name, workers, rate, *spread, rate / baseline))
    header = f"{'source':<10}{'workers':>8}{'samples/s':>11}{'min':>8}{'max':>8}{'1st batch s':>13}"
    print(header + f"{'main CPU ms/sample':>20}{'ratio':>8}")
    for name, workers, rate, low, high, startup, cpu_ms, ratio in rows:
        line = f"{name:<10}{workers:>8}{rate:>11.1f}{low:>8.1f}{high:>8.1f}{startup:>13.2f}"
        print(line + f"{cpu_ms:>20.1f}{ratio:>7.2f}x")
    print("(with 0 workers 'main CPU ms/sample' is the whole cost of a sample; on an otherwise idle machine")
    print(" N workers deliver about N x 1000 / that figure samples/s)")
    print(
        f"\npeak RSS (process peak, main process): {peak_rss_mib():.0f} MiB; "
        f"largest worker process: {peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB"
    )
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("target: >= 20 samples/s with 2 workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
