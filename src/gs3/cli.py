"""The `gs3` command. Each subcommand lives in the module that owns it; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

from gs3 import __version__
from gs3.errors import GS3Error
from gs3.quiet import quiet_dependencies

# subcommand → module providing `add_arguments(parser)` and `run(args) -> int | None`
SUBCOMMANDS = {
    "pretrain": ("gs3.train.commands.pretrain", "pre-train an encoder by rendering predicted Gaussians"),
    "render": (
        "gs3.train.commands.render",
        "render frames with a checkpoint; write PNGs and Gaussians (.ply)",
    ),
    "export": ("gs3.train.commands.export", "export encoder weights for Pointcept / mmdet3d / torchvision"),
    "finetune": (
        "gs3.train.commands.finetune",
        "fine-tune an encoder for semantic segmentation, then evaluate it (metrics.json)",
    ),
    "evaluate": (
        "gs3.train.commands.evaluate",
        "score a fine-tuned checkpoint: mIoU, mAcc, allAcc, per-class IoU, confusion matrix",
    ),
    "data": ("gs3.data.commands", "data tools: .sens export, view-pair lists, synthetic scenes"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="gs3", description="GS³ pre-training of 2D/3D encoders by rendering predicted 3D Gaussians."
    )
    parser.add_argument("--version", action="version", version=f"gs3 {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        # Import only the module that will run: keeps `gs3 --help` and each command's start-up fast.
        if name in argv[:1]:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            modules[name] = module
    return parser, modules


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; `key=value` overrides may also follow options (`--out DIR key=value`), which plain
    argparse rejects once an option has ended the positional list (and subparsers cannot be intermixed)."""
    args, rest = parser.parse_known_args(argv)
    overrides = [item for item in rest if "=" in item and not item.startswith("-")]
    unknown = [item for item in rest if item not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_dependencies()  # dependencies' start-up noise out of gs3's output (gs3.quiet says which)
    parser, modules = build_parser(argv)
    args = parse(parser, argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except GS3Error as error:
        print(f"gs3 {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gs3 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
