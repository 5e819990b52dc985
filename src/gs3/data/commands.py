"""``gs3 data``: data tools.

gs3 data export-sens FILE.sens --out DIR [--every N]
gs3 data pairs ROOT --out FILE [--split train] [--interval 5] [--views 2] [--stride S] [--min-overlap X]
gs3 data synthetic …        (implemented in gs3.data.synthetic_command, loaded only when used)
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from gs3.errors import GS3Error

SYNTHETIC_MODULE = "gs3.data.synthetic_command"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    export = actions.add_parser("export-sens", help="write a .sens file as the ScanNet exported layout")
    export.add_argument("sens", type=Path, metavar="FILE.sens")
    export.add_argument("--out", type=Path, required=True, help="output scene folder")
    export.add_argument("--every", type=int, default=1, help="export every N-th frame (default 1)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")

    pairs = actions.add_parser("pairs", help="precompute view-pair lists with their overlap (JSON)")
    pairs.add_argument("root", type=Path, help="dataset root (exported scenes and/or .sens files)")
    pairs.add_argument("--out", type=Path, required=True, help="output JSON file")
    pairs.add_argument("--split", default=None, help="all (default) | train | val | test | a file of names")
    pairs.add_argument("--interval", type=int, default=5, help="frames between views (default 5)")
    pairs.add_argument("--views", type=int, default=2, help="views per sample (default 2)")
    pairs.add_argument("--stride", type=int, default=None, help="frames between windows (default interval)")
    pairs.add_argument("--min-overlap", type=float, default=0.0, help="keep samples with overlap >= X")
    pairs.add_argument("--tolerance", type=float, default=0.05, help="relative depth tolerance (0.05)")
    pairs.add_argument("--min-valid-depth", type=float, default=0.3, help="min share of valid depth pixels")
    pairs.add_argument("--resolution", default="160x120", help="resolution for the overlap test (160x120)")
    pairs.add_argument("--quiet", action="store_true", help="no progress bar")

    # The synthetic generator (gs3.data.synthetic_command) owns its arguments. Its module is imported only
    # when this action runs: the remaining words are collected here (prefix_chars "\0" turns off option
    # parsing, so even --help passes through) and parsed by a parser the module fills in.
    synthetic = actions.add_parser(
        "synthetic", help="generate synthetic RGB-D scenes with labels", add_help=False, prefix_chars="\0"
    )
    synthetic.add_argument("synthetic_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run_synthetic(words: list[str]) -> int:
    try:
        module = importlib.import_module(SYNTHETIC_MODULE)
    except ModuleNotFoundError as error:
        if error.name != SYNTHETIC_MODULE:
            raise
        raise GS3Error(f"the synthetic scene generator ({SYNTHETIC_MODULE}) is not available") from None
    parser = argparse.ArgumentParser(prog="gs3 data synthetic", description=module.__doc__)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(words)) or 0)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "export-sens":
        from gs3.data.sens import export_sens

        positions = export_sens(args.sens, args.out, every=args.every, progress=not args.quiet)
        print(f"wrote {len(positions)} frames to {args.out}")
        return 0
    if args.data_command == "pairs":
        from gs3.data.transforms import parse_resolution
        from gs3.data.views import pair_list_for_root, write_pair_list

        pair_list = pair_list_for_root(
            args.root,
            split=args.split,
            num_views=args.views,
            interval=args.interval,
            stride=args.stride,
            min_overlap=args.min_overlap,
            relative_tolerance=args.tolerance,
            resolution=parse_resolution(args.resolution),
            min_valid_depth=args.min_valid_depth,
            progress=not args.quiet,
        )
        write_pair_list(args.out, pair_list)
        skipped = ", ".join(f"{reason}: {count}" for reason, count in sorted(pair_list["skipped"].items()))
        print(
            f"wrote {len(pair_list['samples'])} samples to {args.out}"
            + (f" (skipped {skipped})" if skipped else "")
        )
        return 0
    if args.data_command == "synthetic":
        return run_synthetic(args.synthetic_args)
    raise AssertionError(args.data_command)
