"""`gs3 pretrain --config NAME|PATH [key=value ...] [--resume CKPT|auto] [--out DIR]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="packaged config name (e.g. demo, gs3_rgbd_spunet) or a YAML path"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=3e-4"
    )
    parser.add_argument(
        "--resume", metavar="CKPT|auto", help="continue from a checkpoint; 'auto': the run's last one"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="run folder (default: trainer.out_dir or runs/<config name>)"
    )


def run(args: argparse.Namespace) -> int:
    from gs3.config import load_config
    from gs3.train.runner import pretrain

    config = load_config(args.config, args.overrides)
    pretrain(config, out_dir=args.out, resume=args.resume)
    return 0
