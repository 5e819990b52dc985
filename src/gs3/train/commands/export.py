"""`gs3 export --checkpoint CKPT --format pointcept|mmdet3d|torchvision --out FILE`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a gs3 pre-training checkpoint (.ckpt)")
    parser.add_argument(
        "--format",
        required=True,
        choices=["pointcept", "mmdet3d", "torchvision"],
        help="pointcept: SpUNet; mmdet3d: PointNet2SASSG (VoteNet) or ResNet-50 (ImVoxelNet); "
        "torchvision: ResNet-50",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="output weights file (a FILE.json sidecar is written too)",
    )


def run(args: argparse.Namespace) -> int:
    from gs3.train.export import export_checkpoint

    sidecar = export_checkpoint(args.checkpoint, args.format, args.out)
    print(f"gs3 export: wrote {args.out} ({args.format}) and {sidecar}")
    return 0
