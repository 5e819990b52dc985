"""Fine-tuning data cost per sample: reading each labelled source, Pointcept's training pipeline, the
evaluation pipeline (grid sampling with the inverse map), and the training pipeline step by step.

Sources: the real ScanNet mesh scene0470_00 (67k vertices), the same vertices as a Pointcept folder (written
to a temporary folder first), a synthetic room's point cloud (density 1000 / m², ~150k points), and the real
labelled frames of scene0014_00 (one 320×240 frame as an image; two frames back-projected as points).
Every figure is the median of ``--runs`` runs of one sample in this process (one torch thread), with the
read alone as the baseline each pipeline is divided by.

    python benchmarks/downstream_data.py [--runs 7] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gs3.data import augment
from gs3.data.synthetic import write_dataset
from gs3.downstream.data import DownstreamDataConfig, build_downstream_dataset
from gs3.downstream.data.point_transforms import center_shift, grid_sample, sphere_crop
from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def median_ms(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def write_pointcept_copy(root: Path) -> Path:
    """scene0470_00's vertices as a Pointcept folder (coord float32, color uint8, normal, segment20)."""
    from gs3.downstream.data import read_scannet_mesh

    points = read_scannet_mesh(DATA / "scannet_mesh" / "scene0470_00")
    folder = root / "val" / "scene0470_00"
    folder.mkdir(parents=True)
    np.save(folder / "coord.npy", points.coord.numpy())
    np.save(folder / "color.npy", np.rint(points.color.numpy() * 255).astype(np.uint8))
    np.save(folder / "normal.npy", points.normal.numpy())
    np.save(folder / "segment20.npy", points.segment.numpy())
    return root


def configs(work: Path) -> dict[str, DownstreamDataConfig]:
    rooms = work / "rooms"
    write_dataset(rooms, 2, num_frames=2, seed=100, point_density=1000.0)
    found = {
        "synthetic cloud": DownstreamDataConfig(root=str(rooms), train_split="all", val_split="all"),
    }
    if (DATA / "scannet_mesh").is_dir():
        mesh = DownstreamDataConfig(source="scannet_mesh", root=str(DATA / "scannet_mesh"))
        found["scannet mesh"] = DownstreamDataConfig(
            **{**mesh.__dict__, "train_split": "all", "val_split": "all"}
        )
        pointcept = write_pointcept_copy(work / "pointcept")
        found["pointcept"] = DownstreamDataConfig(
            source="pointcept", root=str(pointcept), train_split="val", val_split="val"
        )
    if (DATA / "scannet_labelled").is_dir():
        frames = {"source": "frames", "root": str(DATA / "scannet_labelled"), "train_split": "all"}
        found["frames 3D (2 views)"] = DownstreamDataConfig(**frames, val_split="all", frames_per_sample=2)
        found["frames 2D"] = DownstreamDataConfig(**frames, val_split="all", modality="images")
    return found


def pipeline_rows(name: str, config: DownstreamDataConfig, runs: int) -> tuple:
    train = build_downstream_dataset(config, "train", seed=0)
    val = build_downstream_dataset(config, "val", seed=0)
    source = train.sources[0]
    read = median_ms(lambda: train.load(source), runs)
    epochs = iter(range(10**9))

    def train_sample():
        train.set_epoch(next(epochs))
        return train[0]

    train_ms = median_ms(train_sample, runs)
    val_ms = median_ms(lambda: val[0], runs)
    size = len(train.load(source).segment.reshape(-1))
    return name, size, len(train_sample()["segment"].reshape(-1)), read, train_ms, val_ms


def step_rows(config: DownstreamDataConfig, runs: int) -> list[tuple[str, float]]:
    """The training pipeline's steps on one cloud (each on the same input, so their sum ≈ the pipeline)."""
    dataset = build_downstream_dataset(config, "train", seed=0)
    points = dataset.load(dataset.sources[0])
    coord, color = center_shift(points.coord.numpy()), points.color.numpy()
    a, rng = config.point_augment, np.random.default_rng(0)
    steps = {
        "dropout": lambda: augment.random_dropout(rng, len(coord), a.dropout_ratio, 1.0),
        "rotation": lambda: augment.rotate(
            coord, augment.random_axis_rotation(rng, math.pi, math.pi / 64, 1.0)
        ),
        "scale + flip": lambda: augment.random_flip(rng, augment.random_scale(rng, coord), 1.0),
        "jitter": lambda: augment.random_jitter(rng, coord),
        "elastic (both)": lambda: augment.random_elastic(rng, coord, [tuple(p) for p in a.elastic], 1.0),
        "chromatic (3)": lambda: augment.chromatic_jitter(
            rng,
            augment.chromatic_translation(rng, augment.chromatic_auto_contrast(rng, color, 1.0), 1.0),
            1.0,
        ),
        "grid sample (train)": lambda: grid_sample(coord, config.grid_size, rng),
        "grid sample (eval)": lambda: grid_sample(coord, config.grid_size, rng).inverse,
        "sphere crop 20k": lambda: sphere_crop(coord, 20000, rng),
    }
    return [(name, median_ms(step, runs)) for name, step in steps.items()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    torch.set_num_threads(1)
    print(
        f"machine: {cpu_model()}, cores={os.cpu_count()}, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; median of {runs} runs, 1 thread\n")
    with tempfile.TemporaryDirectory() as work:
        found = configs(Path(work))
        header = f"{'source':<22}{'points/px':>10}{'out':>8}{'read ms':>9}{'train ms':>10}{'×read':>7}"
        print(header + f"{'eval ms':>9}{'×read':>7}")
        for name, config in found.items():
            name, size, out, read, train_ms, val_ms = pipeline_rows(name, config, runs)
            line = f"{name:<22}{size:>10}{out:>8}{read:>9.1f}{train_ms:>10.1f}{train_ms / read:>7.2f}"
            print(line + f"{val_ms:>9.1f}{val_ms / read:>7.2f}")
        print("\ntraining pipeline steps on the synthetic room's cloud:")
        for name, ms in step_rows(found["synthetic cloud"], runs):
            print(f"  {name:<22}{ms:>9.1f} ms")
    print(f"\nload average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
