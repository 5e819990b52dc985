"""What determinism costs, and how far apart runs end without it.

    python benchmarks/determinism.py --quick              # cost on the demo config (~1 min on 2 cores)
    python benchmarks/determinism.py --configs demo gs3_rgbd_spunet --repeats 7
    python benchmarks/determinism.py --spread --runs 3 --steps 10    # + whole runs, default vs deterministic
    python benchmarks/determinism.py --configs --spread              # whole runs only
    python benchmarks/determinism.py --spread --reference-src /path/to/old/src   # spread of another gs3

Cost: one training step (forward, backward, AdamW) of a config on synthetic rooms, timed in one process
with three settings taken in turn (so load changes hit them alike): gs3's default; the SR-UNet's
voxel-to-point gather written as advanced indexing (`features[inverse]`, whose backward is a threaded
`index_put_(accumulate=True)` that sums in thread-timing order: what gs3 did before) instead of
`index_select`; and `trainer.deterministic` (PyTorch's deterministic algorithms, gs3.train.determinism).
Ratios are medians against the default in the same process.

Spread (--spread): `gs3 pretrain --config demo optim.max_steps=STEPS` run RUNS times as separate processes
with --threads torch threads, with and without trainer.deterministic, and the largest absolute difference
of the final weights (parameters, and BatchNorm statistics) of every run against the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("default", "indexing gather", "deterministic")


def build(config_name: str, cache: str, width: int, height: int):
    import torch

    from gs3.config import load_config
    from gs3.data.collate import collate
    from gs3.model import GS3
    from gs3.train.data import build_dataset, prepare_synthetic

    overrides = [
        "data.source=synthetic",
        f"data.cache_dir={cache}",
        "data.synthetic_scenes=1",
        "data.synthetic_frames=12",
        f"data.width={width}",
        f"data.height={height}",
        "data.batch_size=1",
        "loss.lpips_weight=0",
    ]
    config = load_config(config_name, overrides)
    prepare_synthetic(config)
    batch = collate([build_dataset(config)[0]])
    torch.manual_seed(0)
    model = GS3(config).train()
    return model, batch


def indexing_gather(self, coord, feat, offset):
    """SpUNetV1M1.forward with the gather gs3 used before (advanced indexing)."""
    from gs3.encoders.voxelize import voxelize

    voxels = voxelize(coord, feat, offset, self.voxel_size)
    voxel_features = self.forward_voxels(voxels.grid_coord, voxels.batch, voxels.feat, voxels.batch_size)
    return voxel_features[voxels.inverse]


def measure_cost(config_name: str, args: argparse.Namespace) -> dict[str, list[float]]:
    import torch

    from gs3.encoders.sparse_unet import SpUNetV1M1
    from gs3.train.determinism import TorchFlags, deterministic_flags

    model, batch = build(config_name, args.cache, args.width, args.height)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    default_flags, default_forward = TorchFlags.current(), SpUNetV1M1.forward
    uses_spunet = isinstance(model.encoder, SpUNetV1M1)

    def step(setting: str) -> float:
        if setting == "deterministic":
            deterministic_flags(on_cuda=False).apply()
        if setting == "indexing gather":
            SpUNetV1M1.forward = indexing_gather
        try:
            start = time.perf_counter()
            output = model(batch)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            optimizer.step()
            return time.perf_counter() - start
        finally:
            default_flags.apply()
            SpUNetV1M1.forward = default_forward

    settings = [s for s in SETTINGS if uses_spunet or s != "indexing gather"]
    for setting in settings:
        step(setting)  # warm-up
    times: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(args.repeats):
        for setting in settings:
            times[setting].append(step(setting))
    return times


def run_pretrain(
    out: Path, steps: int, threads: int, deterministic: bool, src: str | None, cache: str
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if src:
        env["PYTHONPATH"] = src
    command = [
        sys.executable,
        "-m",
        "gs3.cli",
        "pretrain",
        "--config",
        "demo",
        f"optim.max_steps={steps}",
        f"data.cache_dir={cache}",
        "trainer.progress_bar=false",
        f"trainer.checkpoint_every={steps}",
        *(["trainer.deterministic=true"] if deterministic else []),  # (a reference gs3 may predate it)
        "--out",
        str(out),
    ]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pretrain failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def weight_differences(a: Path, b: Path) -> tuple[float, float]:
    """Largest |difference| of parameters and of BatchNorm statistics between two runs' last checkpoints."""
    import torch

    first = torch.load(a / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    second = torch.load(b / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    parameters, statistics_ = 0.0, 0.0
    for key, value in first.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        difference = float((value - second[key]).abs().max())
        if "running_" in key:
            statistics_ = max(statistics_, difference)
        else:
            parameters = max(parameters, difference)
    return parameters, statistics_


def measure_spread(args: argparse.Namespace) -> list[tuple[str, list[tuple[float, float]]]]:
    rows = []
    variants = [("default", False, None), ("deterministic", True, None)]
    if args.reference_src:
        variants.insert(0, (f"default, {args.reference_src}", False, args.reference_src))
    with tempfile.TemporaryDirectory(prefix="gs3-spread-") as folder:
        for name, deterministic, src in variants:
            outs = [Path(folder) / f"{len(rows)}_{i}" for i in range(args.runs)]
            for out in outs:
                run_pretrain(out, args.steps, args.threads, deterministic, src, args.cache)
            rows.append((name, [weight_differences(outs[0], out) for out in outs[1:]]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=["demo", "gs3_rgbd_spunet"], help="none: no cost")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per setting (default 7)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="demo config at 80x60, 5 repeats")
    parser.add_argument("--spread", action="store_true", help="also run whole demo runs and compare weights")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reference-src", help="also measure the spread of the gs3 sources at this path")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/gs3/bench"))
    args = parser.parse_args()
    if args.quick:
        args.configs, args.width, args.height = ["demo"], 80, 60
    args.repeats = args.repeats or (5 if args.quick else 7)

    import torch

    torch.set_num_threads(args.threads)
    print(
        f"# machine: {cpu_model()}, {os.cpu_count()} CPUs; torch {torch.__version__}, {args.threads} threads"
    )
    print(f"# command: python benchmarks/determinism.py {' '.join(sys.argv[1:])}")
    if args.configs:
        print(f"# step = forward + backward + AdamW, batch 1, {args.width}x{args.height}, LPIPS off")
        print("| config | setting | median step (s) | ratio to default |")
        print("|---|---|---:|---:|")
    for config_name in args.configs:
        times = measure_cost(config_name, args)
        base = statistics.median(times["default"])
        for setting, values in times.items():
            median = statistics.median(values)
            print(f"| {config_name} | {setting} | {median:.3f} | {median / base:.2f} |")
    if args.spread:
        print()
        print(f"# spread: demo, {args.steps} steps, {args.runs} runs, {args.threads} threads")
        print("# largest |weight difference| against run 1")
        print("| build | run | parameters | BatchNorm statistics |")
        print("|---|---|---:|---:|")
        for name, differences in measure_spread(args):
            for index, (parameters, statistics_) in enumerate(differences, start=2):
                print(f"| {name} | {index} | {parameters:.3g} | {statistics_:.3g} |")


if __name__ == "__main__":
    main()
