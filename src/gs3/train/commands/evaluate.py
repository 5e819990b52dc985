"""`gs3 evaluate --checkpoint CKPT [--out DIR] [--device DEV] [key=value ...]`.

Scores a `gs3 finetune` checkpoint on the validation split of its own config (overrides apply, e.g.
`data.root=DIR data.val_split=val`) and writes metrics.json, metrics.txt and confusion_matrix.csv.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a gs3 finetune checkpoint (.ckpt)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides of the checkpoint's config"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: <run>/evaluation for <run>/checkpoints/X.ckpt)",
    )
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")


def run(args: argparse.Namespace) -> int:
    from gs3.train.finetune import evaluate_checkpoint

    evaluate_checkpoint(args.checkpoint, args.overrides, args.out, args.device)
    return 0
