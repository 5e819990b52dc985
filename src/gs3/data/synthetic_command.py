"""`gs3 data synthetic`: write procedural RGB-D scenes in the ScanNet exported layout (plus labels)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gs3.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write scenes synthetic_0000, ... into"
    )
    parser.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    parser.add_argument("--frames", type=int, default=60, help="frames per scene (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; scene k depends on (seed, k) only")
    parser.add_argument("--width", type=int, default=320, help="image width in pixels (default 320)")
    parser.add_argument("--height", type=int, default=240, help="image height in pixels (default 240)")
    parser.add_argument(
        "--point-density",
        type=float,
        default=1000.0,
        help="labelled point cloud density, points per m² (default 1000); 0 skips points.npz",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing per scene")


def run(args: argparse.Namespace) -> int:
    from gs3.data.synthetic import write_dataset

    for name in ("scenes", "frames", "width", "height"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {args.seed}")
    if args.point_density < 0:
        raise ConfigError(f"--point-density must be non-negative, got {args.point_density}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a folder")
    start = time.perf_counter()

    def report(folder: Path) -> None:
        if not args.quiet:
            print(f"wrote {folder} ({args.frames} frames, {args.width}x{args.height})", flush=True)

    folders = write_dataset(
        args.out,
        args.scenes,
        args.frames,
        seed=args.seed,
        width=args.width,
        height=args.height,
        point_density=args.point_density or None,
        progress=report,
    )
    if not args.quiet:
        elapsed = time.perf_counter() - start
        print(f"{len(folders)} scene(s) in {elapsed:.1f} s; list in {args.out / 'scenes.txt'}")
    return 0
