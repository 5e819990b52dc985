"""Does GS³ pre-training help? Pre-train every arm, fine-tune every (arm, setting, mode, seed), report.

    python benchmarks/transfer.py                         # the CPU protocol (benchmarks/transfer_cpu.yaml)
    python benchmarks/transfer.py --quick                 # the same, small: checks the plumbing (~15 min)
    python benchmarks/transfer.py --protocol my.yaml --jobs 4 --out runs/transfer_gpu
    python benchmarks/transfer.py --report-only           # tables and plot from what has finished

A protocol (YAML, see transfer_cpu.yaml) names arms (a pre-training config + overrides, or null for scratch),
downstream settings (a fine-tuning config + overrides), modes (finetune, linear_probe) and seeds. Every arm
pre-trains on the same data (assembled under OUT/pretrain_data: generated synthetic rooms and the real scenes
`include` names, read with data.train_split=all) for the same number of steps; every fine-tuning run of a
setting has the same steps, data and seed in every arm.

Each run is a `gs3 pretrain` / `gs3 finetune` subprocess (own memory, own threads: `--jobs` of them at once,
each with cores/jobs threads) with its log in its folder. The command is resumable: a finished run leaves
`done.json` and is not run again; an interrupted one continues from its last checkpoint (--resume auto).

The report (OUT/<protocol name>.md, .png and .json; protocols can share OUT and the runs they have in
common): per arm, the pre-training's time, final PSNR and rendered-depth AbsRel; per setting and mode, mIoU
and mAcc as mean ± std over seeds and the paired difference to scratch (mean ± std of per-seed differences:
same seed = same head, scenes and augmentation); the curve of mIoU against pre-training steps; a plot of mIoU
against the labelled rooms, one line per arm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[0].parent / "shared" / "data"


@dataclass
class Run:
    """One subprocess: a pre-training arm or a fine-tuning run; `needs`: the run whose checkpoint it uses."""

    key: str
    folder: Path
    command: list[str]
    needs: Run | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done_file(self) -> Path:
        return self.folder / "done.json"

    def done(self) -> bool:
        return self.done_file.is_file()


# --- protocol ---------------------------------------------------------------------------------------------
def load_protocol(path: Path, quick: bool) -> dict[str, Any]:
    protocol = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if quick:
        q = protocol["quick"]
        protocol["seeds"] = q["seeds"]
        protocol["finetune"]["modes"] = q["modes"]
        protocol["pretrain"]["curve"] = q["curve"]
        protocol["pretrain"]["overrides"] += q["pretrain_overrides"]
        protocol["finetune"]["overrides"] += q["finetune_overrides"]
        protocol["finetune"]["settings"] = [
            s for s in protocol["finetune"]["settings"] if s["name"] in q["settings"]
        ]
        protocol["name"] += "_quick"
    return protocol


def gs3_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gs3.cli", *args]


def plan(protocol: dict[str, Any], out: Path) -> list[Run]:
    """Every run of the protocol, pre-training first (fine-tuning runs wait for their arm)."""
    pre, fine = protocol["pretrain"], protocol["finetune"]
    data_root = out / "pretrain_data"
    runs: list[Run] = []
    pretrain_runs: dict[str, Run | None] = {}
    for arm, spec in protocol["arms"].items():
        if spec is None:
            pretrain_runs[arm] = None
            continue
        folder = out / "pretrain" / arm
        overrides = [
            *spec.get("overrides", []),
            "data.source=scannet",
            f"data.root={data_root}",
            *pre["overrides"],
            "trainer.progress_bar=false",
        ]
        command = gs3_command(
            "pretrain", "--config", spec["config"], "--out", str(folder), "--resume", "auto"
        )
        run = Run(f"pretrain/{arm}", folder, [*command, *overrides], info={"arm": arm})
        pretrain_runs[arm] = run
        runs.append(run)

    steps = int(_override_value(pre["overrides"], "optim.max_steps"))
    for setting in fine["settings"]:
        for mode in fine["modes"]:
            for seed in protocol["seeds"]:
                for arm, pretrain_run in pretrain_runs.items():
                    checkpoints = [(steps, "last.ckpt")]
                    if pretrain_run is not None and setting["name"] == fine["curve_setting"]:
                        checkpoints += [(s, f"step-{s:08d}.ckpt") for s in pre["curve"] if s < steps]
                    for pretrain_steps, checkpoint in checkpoints:
                        if pretrain_run is None and pretrain_steps != steps:
                            continue
                        tail = "" if pretrain_steps == steps else f"@{pretrain_steps}"
                        key = f"finetune/{setting['name']}/{mode}/seed{seed}/{arm}{tail}"
                        folder = out / key
                        command = gs3_command("finetune", "--config", setting["config"], "--out", str(folder))
                        command += ["--resume", "auto"]
                        if pretrain_run is not None:
                            command += ["--pretrained", str(pretrain_run.folder / "checkpoints" / checkpoint)]
                        overrides = [
                            *setting.get("overrides", []),
                            *fine["overrides"],
                            f"model.mode={mode}",
                            f"trainer.seed={seed}",
                            "trainer.progress_bar=false",
                        ]
                        info = {
                            "arm": arm,
                            "setting": setting["name"],
                            "labelled": setting.get("labelled"),
                            "mode": mode,
                            "seed": seed,
                            "pretrain_steps": pretrain_steps if pretrain_run is not None else 0,
                        }
                        runs.append(Run(key, folder, [*command, *overrides], pretrain_run, info))
    return runs


def _override_value(overrides: list[str], key: str) -> str:
    values = [item.split("=", 1)[1] for item in overrides if item.startswith(key + "=")]
    if not values:
        raise SystemExit(f"transfer: the protocol's pretrain.overrides must set {key}")
    return values[-1]


def assemble_pretrain_data(protocol: dict[str, Any], out: Path, shared: Path) -> None:
    """OUT/pretrain_data: links to generated synthetic rooms and to the real scenes the protocol includes."""
    from gs3.data.synthetic import write_dataset

    root = out / "pretrain_data"
    root.mkdir(parents=True, exist_ok=True)
    spec = protocol["pretrain"]["synthetic"]
    rooms = out / "pretrain_rooms"
    if not (rooms / "scenes.txt").is_file():
        print(f"transfer: generating {spec['scenes']} synthetic rooms (seed {spec['seed']}) into {rooms}")
        write_dataset(
            rooms,
            num_scenes=spec["scenes"],
            num_frames=spec["frames"],
            seed=spec["seed"],
            width=spec["width"],
            height=spec["height"],
        )
    names = (rooms / "scenes.txt").read_text().split()
    targets = [rooms / name for name in names]
    for item in protocol["pretrain"]["include"]:
        target = shared / item
        if not target.exists():
            raise SystemExit(f"transfer: {target} not found (pass --shared-data, or drop it from `include`)")
        targets.append(target)
    for target in targets:
        link = root / target.name
        if not link.is_symlink():
            link.symlink_to(target.resolve())


# --- running ----------------------------------------------------------------------------------------------
def execute(run: Run, threads: int) -> None:
    run.folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",  # several runs share the cores
    }
    start = time.monotonic()
    with open(run.folder / "log.txt", "a") as log:
        log.write(f"$ {shlex.join(run.command)}\n")
        log.flush()
        code = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise RuntimeError(f"{run.key} failed (exit {code}); see {run.folder / 'log.txt'}")
    record = {"seconds": round(time.monotonic() - start, 1), "threads": threads, "command": run.command}
    if run.key.startswith("finetune/"):
        record["metrics"] = json.loads((run.folder / "metrics.json").read_text())
    tmp = run.done_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, run.done_file)


def run_all(runs: list[Run], jobs: int) -> None:
    """Runs `jobs` at a time, each waiting for the pre-training it needs; a failure stops new runs."""
    from tqdm import tqdm

    pending = [run for run in runs if not run.done()]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    lock = threading.Condition()
    running: set[str] = set()
    failures: list[str] = []
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), unit="run", desc="transfer")

    def next_ready() -> Run | None:
        for run in pending:
            if run.needs is None or run.needs.done():
                pending.remove(run)
                return run
        return None

    def worker() -> None:
        while True:
            with lock:
                run = None
                while not failures and pending:
                    run = next_ready()
                    if run is not None or not running:
                        break
                    lock.wait()
                if run is None:
                    lock.notify_all()
                    return
                running.add(run.key)
                bar.set_postfix_str(", ".join(sorted(running)), refresh=True)
            try:
                execute(run, threads)
            except Exception as error:  # reported at the end; the other runs finish
                with lock:
                    failures.append(str(error))
            with lock:
                running.discard(run.key)
                bar.update(1)
                lock.notify_all()

    workers = [threading.Thread(target=worker) for _ in range(jobs)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    bar.close()
    if failures:
        raise SystemExit("transfer: " + "; ".join(failures))
    if pending:
        raise SystemExit(f"transfer: {len(pending)} runs could not start (their pre-training is missing)")


# --- report -----------------------------------------------------------------------------------------------
def pretrain_figures(run: Run) -> dict[str, Any]:
    """Time and the last logged PSNR / rendered-depth AbsRel / δ<1.25 of a pre-training arm (TensorBoard)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    done = json.loads(run.done_file.read_text())
    events = EventAccumulator(str(run.folder / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    figures: dict[str, Any] = {"minutes": done["seconds"] / 60, "threads": done["threads"]}
    for tag in ("train/psnr", "train/depth_abs_rel", "train/depth_delta1", "train/loss"):
        if tag in events.Tags()["scalars"]:
            values = events.Scalars(tag)
            tail = [v.value for v in values[-5:]]  # the last five logged points: one is noisy
            figures[tag.split("/")[1]] = statistics.mean(tail)
            figures[tag.split("/")[1] + "_first"] = values[0].value
            figures["steps"] = values[-1].step
    return figures


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[Run]) -> dict[str, Any]:
    """Per (setting, mode, pretrain steps, arm): scores over seeds, and paired differences to scratch."""
    rows: dict[tuple, dict[int, dict[str, float]]] = {}
    for run in runs:
        if not run.key.startswith("finetune/") or not run.done():
            continue
        metrics = json.loads(run.done_file.read_text())["metrics"]
        i = run.info
        group = (i["setting"], i["mode"], i["pretrain_steps"], i["arm"])
        rows.setdefault(group, {})[i["seed"]] = {"miou": metrics["miou"], "macc": metrics["macc"]}
    table = []
    for (setting, mode, steps, arm), by_seed in rows.items():
        scratch = rows.get((setting, mode, 0, "scratch"), {})
        entry = {
            "setting": setting,
            "mode": mode,
            "pretrain_steps": steps,
            "arm": arm,
            "seeds": sorted(by_seed),
        }
        for metric in ("miou", "macc"):
            values = [100 * by_seed[s][metric] for s in sorted(by_seed)]
            entry[metric] = mean_std(values)
            paired = [
                100 * (by_seed[s][metric] - scratch[s][metric]) for s in sorted(by_seed) if s in scratch
            ]
            entry[f"{metric}_vs_scratch"] = mean_std(paired) if arm != "scratch" else (0.0, 0.0)
        table.append(entry)
    return {"rows": table}


def fmt(pair: tuple[float, float], signed: bool = False) -> str:
    mean, std = pair
    return f"{mean:+.1f} ± {std:.1f}" if signed else f"{mean:.1f} ± {std:.1f}"


def write_report(protocol: dict[str, Any], runs: list[Run], out: Path, command: str) -> None:
    arms = list(protocol["arms"])
    summary = summarise(runs)
    pretrain = {
        run.info["arm"]: pretrain_figures(run)
        for run in runs
        if run.key.startswith("pretrain/") and run.done()
    }
    lines = [
        f"# Transfer experiment: {protocol['name']}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        f"Seeds: {protocol['seeds']}; mean ± std over seeds; 'vs scratch' is the mean ± std of the per-seed "
        "differences (same seed: same head initialisation, scene subset and augmentation).",
        "",
        "## Pre-training arms",
        "",
        "| arm | steps | minutes | threads | PSNR first → last (dB) | rendered-depth AbsRel | δ<1.25 |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, f in pretrain.items():
        lines.append(
            f"| {arm} | {f.get('steps', '?')} | {f['minutes']:.1f} | {f['threads']} | "
            f"{f.get('psnr_first', float('nan')):.1f} → {f.get('psnr', float('nan')):.1f} | "
            f"{f.get('depth_abs_rel', float('nan')):.3f} | {f.get('depth_delta1', float('nan')):.3f} |"
        )
    final = [r for r in summary["rows"] if r["pretrain_steps"] in (0, _final_steps(protocol))]
    for mode in protocol["finetune"]["modes"]:
        lines += ["", f"## {mode}: mIoU / mAcc (%)", ""]
        settings = [s["name"] for s in protocol["finetune"]["settings"]]
        lines.append("| arm | " + " | ".join(f"{s} mIoU | vs scratch | mAcc" for s in settings) + " |")
        lines.append("|---|" + "---|---|---|" * len(settings))
        for arm in arms:
            cells = []
            for setting in settings:
                row = next(
                    (r for r in final if r["arm"] == arm and r["setting"] == setting and r["mode"] == mode),
                    None,
                )
                if row is None:
                    cells += ["–", "–", "–"]
                    continue
                vs = "" if arm == "scratch" else fmt(row["miou_vs_scratch"], signed=True)
                cells += [fmt(row["miou"]), vs, fmt(row["macc"])]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    curve = [r for r in summary["rows"] if r["setting"] == protocol["finetune"]["curve_setting"]]
    if any(r["pretrain_steps"] not in (0, _final_steps(protocol)) for r in curve):
        lines += ["", f"## mIoU against pre-training steps ({protocol['finetune']['curve_setting']})", ""]
        lines += ["| arm | mode | pre-training steps | mIoU | vs scratch |", "|---|---|---|---|---|"]
        for r in sorted(curve, key=lambda r: (r["arm"], r["mode"], r["pretrain_steps"])):
            if r["arm"] != "scratch":
                lines.append(
                    f"| {r['arm']} | {r['mode']} | {r['pretrain_steps']} | {fmt(r['miou'])} | "
                    f"{fmt(r['miou_vs_scratch'], signed=True)} |"
                )
    stem = out / protocol["name"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"pretrain": pretrain, **summary}, indent=1))
    plot(protocol, final, stem.with_suffix(".png"))
    print("\n".join(lines))
    print(f"\ntransfer: wrote {stem}.md, .png and .json")


def _final_steps(protocol: dict[str, Any]) -> int:
    return int(_override_value(protocol["pretrain"]["overrides"], "optim.max_steps"))


def plot(protocol: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    """mIoU against labelled training rooms (log axis), one line per arm, one panel per mode."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("transfer: matplotlib is not installed; no plot (pip install matplotlib)")
        return
    settings = {s["name"]: s["labelled"] for s in protocol["finetune"]["settings"] if s.get("labelled")}
    modes = protocol["finetune"]["modes"]
    figure, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), squeeze=False)
    for axis, mode in zip(axes[0], modes):
        for arm in protocol["arms"]:
            points = sorted(
                (settings[r["setting"]], *r["miou"])
                for r in rows
                if r["arm"] == arm and r["mode"] == mode and r["setting"] in settings
            )
            if points:
                x, mean, std = zip(*points)
                axis.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=arm)
        axis.set_xscale("log")
        axis.set_xticks(sorted(settings.values()), [str(v) for v in sorted(settings.values())])
        axis.set_xlabel("labelled training rooms")
        axis.set_ylabel("mIoU (%) on held-out rooms")
        axis.set_title(mode.replace("_", " "))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"{protocol['name']}: mean ± std over seeds {protocol['seeds']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", type=Path, default=HERE / "transfer_cpu.yaml")
    parser.add_argument("--quick", action="store_true", help="the protocol's small variant (~15 minutes)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<protocol name>)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each gets cores/jobs threads)")
    parser.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED, help="gs3's shared real data")
    parser.add_argument("--report-only", action="store_true", help="write the report from finished runs")
    args = parser.parse_args()

    protocol = load_protocol(args.protocol, args.quick)
    out = (args.out or Path("runs") / protocol["name"]).resolve()
    runs = plan(protocol, out)
    command = "python " + shlex.join(sys.argv)
    if not args.report_only:
        assemble_pretrain_data(protocol, out, args.shared_data)
        todo = sum(not run.done() for run in runs)
        print(f"transfer: {len(runs)} runs ({todo} to do) into {out}, {args.jobs} at a time")
        run_all(runs, max(1, args.jobs))
    write_report(protocol, runs, out, command)


if __name__ == "__main__":
    main()
