"""`gs3 finetune --config NAME|PATH [--pretrained FILE] [--resume auto|CKPT] [--out DIR] [key=value ...]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help="packaged fine-tuning config (e.g. demo_semseg_spunet_synthetic) or a YAML path",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.1 data.root=DIR"
    )
    parser.add_argument(
        "--pretrained",
        metavar="FILE",
        help="encoder weights: a gs3 pre-training checkpoint or a `gs3 export` file (default: from scratch)",
    )
    parser.add_argument(
        "--resume", metavar="CKPT|auto", help="continue from a checkpoint; 'auto': the run's last one"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="run folder (default: trainer.out_dir or runs/<config name>)"
    )


def run(args: argparse.Namespace) -> int:
    from gs3.downstream.config import load_finetune_config
    from gs3.train.finetune import finetune

    config = load_finetune_config(args.config, args.overrides)
    finetune(config, pretrained=args.pretrained, out_dir=args.out, resume=args.resume)
    return 0
