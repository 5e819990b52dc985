"""`gs3 render --checkpoint CKPT --scene DIR --frames I J [...] --out DIR`.

Writes, per frame: render_<I>.png (rendered colour), depth_<I>.png (rendered depth, 16-bit millimetres like
ScanNet's depth PNGs), depth_<I>_color.png (colourised, same scale as the sensor depth), real_<I>.png,
grid.png (real | rendered | rendered depth | sensor depth per view), and gaussians.ply, the predicted
Gaussians in the 3D Gaussian-splatting layout (opens in Gaussian-splatting viewers).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a gs3 pre-training checkpoint (.ckpt)")
    parser.add_argument(
        "--scene", required=True, help="a scene folder in the ScanNet exported layout, or a .sens"
    )
    parser.add_argument(
        "--frames",
        required=True,
        nargs="+",
        type=int,
        metavar="I",
        help="two or more frame numbers (file stems of the scene's color/ folder)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--mask-ratio",
        type=float,
        default=0.0,
        help="fraction of points/pixels hidden from the model (default 0: all visible)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")


def run(args: argparse.Namespace) -> int:
    from gs3.train.rendering import render_frames

    summary = render_frames(
        args.checkpoint, args.scene, args.frames, args.out, args.mask_ratio, args.seed, args.device
    )
    print(summary)
    return 0
