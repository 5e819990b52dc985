"""Time and mIoU of `gs3 finetune` demo runs (from scratch unless --pretrained), one table row per config.

    python benchmarks/finetune_demos.py                       # the four CPU demo configs, full length
    python benchmarks/finetune_demos.py --quick               # 20 steps each: checks the plumbing only
    python benchmarks/finetune_demos.py --configs demo_semseg_spunet_synthetic --pretrained enc.pth
    python benchmarks/finetune_demos.py --configs demo_semseg_resnet50_frames --set data.root=/data/labelled

Each run goes through the Python API (`gs3.train.finetune.finetune`), in its own subprocess so runs do not
share caches or thread pools, with the same thread count (--threads, default 1: on a machine shared with
other jobs more threads make the OpenMP kernels wait for each other). The table gives the wall time of
training and of the final evaluation (scored on the validation split's original points / pixels) and the
scores from the run's metrics.json. Run folders go under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

DEMOS = (
    "demo_semseg_spunet_synthetic",
    "demo_semseg_pointnet2_synthetic",
    "demo_semseg_spunet_frames",
    "demo_semseg_resnet50_frames",
)


def run_one(args: argparse.Namespace) -> None:
    """One config in this process; prints its metrics.json as one JSON line."""
    from gs3.downstream.config import load_finetune_config
    from gs3.train.finetune import finetune

    overrides = ["trainer.progress_bar=false", *args.set]
    if args.quick:
        overrides += ["optim.max_steps=20", "evaluation.every=0"]
    config = load_finetune_config(args.one, overrides)
    start = time.monotonic()
    metrics = finetune(config, pretrained=args.pretrained, out_dir=Path(args.out) / args.one)
    metrics["run"]["wall_seconds"] = round(time.monotonic() - start, 1)
    print("RESULT " + json.dumps(metrics))


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=list(DEMOS))
    parser.add_argument("--pretrained", help="encoder weights for every run (default: from scratch)")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every run")
    parser.add_argument(
        "--quick", action="store_true", help="20 steps per run, no validation during training"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/finetune_demos")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args)
        return

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    rows = []
    for name in args.configs:
        command = [sys.executable, __file__, "--one", name, "--out", args.out, "--set", *args.set]
        command += ["--pretrained", args.pretrained] if args.pretrained else []
        command += ["--quick"] if args.quick else []
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{name}: failed\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append((name, json.loads(lines[-1][len("RESULT ") :])))

    print(
        f"# gs3 finetune demos — {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{args.threads} thread(s)"
    )
    print(f"# command: {' '.join(sys.argv)}")
    print("| config | init | steps | train time | eval time | val samples | mIoU | mAcc | allAcc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, metrics in rows:
        run = metrics["run"]
        init = "pre-trained" if run.get("pretrained") else "scratch"
        print(
            f"| {name} | {init} | {run['steps']} | {run['train_seconds']:.0f} s | "
            f"{run['eval_seconds']:.0f} s | {run['val_samples']} | {percent(metrics['miou'])} | "
            f"{percent(metrics['macc'])} | "
            f"{percent(metrics['allacc'])} |"
        )


if __name__ == "__main__":
    main()
