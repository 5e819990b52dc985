"""benchmarks/transfer.py: the protocol expands into fair runs whose configs load, and the report's paired
differences are computed per seed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def transfer():
    sys.path.insert(0, str(BENCHMARKS))  # transfer.py imports its sibling machine_info
    try:
        spec = importlib.util.spec_from_file_location("transfer_benchmark", BENCHMARKS / "transfer.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("transfer_benchmark", None)


@pytest.fixture(scope="module", params=["transfer_cpu.yaml", "transfer_ablations_cpu.yaml"])
def protocol(transfer, request):
    return transfer.load_protocol(BENCHMARKS / request.param, quick=False)


def _option(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_plan_has_every_run_once_and_arms_differ_only_in_the_starting_point(transfer, protocol, tmp_path):
    runs = transfer.plan(protocol, tmp_path)
    arms, fine = protocol["arms"], protocol["finetune"]
    pretrained_arms = [arm for arm, spec in arms.items() if spec is not None]
    curve = [s for s in protocol["pretrain"]["curve"] if s < transfer._final_steps(protocol)]
    expected = (
        len(pretrained_arms)
        + len(fine["settings"]) * len(fine["modes"]) * len(protocol["seeds"]) * (len(arms))
        + len(curve) * len(pretrained_arms) * len(fine["modes"]) * len(protocol["seeds"])
    )
    assert len(runs) == expected
    assert len({run.key for run in runs}) == len(runs)
    assert len({run.folder for run in runs}) == len(runs)

    # Group the fine-tuning runs of one (setting, mode, seed, pre-training steps): their commands must be
    # identical once the output folder and the --pretrained checkpoint are taken out.
    groups: dict[tuple, list] = {}
    for run in runs:
        if run.key.startswith("pretrain/"):
            assert run.needs is None
            continue
        info = run.info
        if info["arm"] == "scratch":
            assert run.needs is None and "--pretrained" not in run.command
        else:
            checkpoint = Path(_option(run.command, "--pretrained"))
            assert run.needs is not None and checkpoint.parent == run.needs.folder / "checkpoints"
        stripped = [
            item
            for i, item in enumerate(run.command)
            if item not in ("--out", "--pretrained") and run.command[i - 1] not in ("--out", "--pretrained")
        ]
        key = (info["setting"], info["mode"], info["seed"])
        groups.setdefault(key, []).append(stripped)
    for key, commands in groups.items():
        assert all(command == commands[0] for command in commands), key
    for run in runs:
        if run.key.startswith("pretrain/"):  # every arm gets the same data, steps and schedule
            overrides = run.command[run.command.index("auto") + 1 :]
            assert all(item in overrides for item in protocol["pretrain"]["overrides"])


def test_every_planned_command_loads_its_config(transfer, protocol, tmp_path):
    """A misspelt key in the protocol would otherwise fail hours into the experiment."""
    from gs3.cli import build_parser, parse
    from gs3.config import load_config
    from gs3.downstream.config import load_finetune_config

    seen = set()
    for run in transfer.plan(protocol, tmp_path):
        argv = run.command[3:]  # after `python -m gs3.cli`
        parser, _ = build_parser(argv)
        args = parse(parser, argv)
        signature = (args.command, args.config, tuple(args.overrides))
        if signature in seen:
            continue
        seen.add(signature)
        loader = load_config if args.command == "pretrain" else load_finetune_config
        config = loader(args.config, list(args.overrides))
        if args.command == "finetune":
            assert config.model.mode == run.info["mode"]
            assert config.trainer.seed == run.info["seed"]
        else:
            assert config.optim.max_steps == transfer._final_steps(protocol)


def test_summary_pairs_each_seed_with_the_same_seed_of_scratch(transfer, tmp_path):
    protocol = transfer.load_protocol(BENCHMARKS / "transfer_cpu.yaml", quick=False)
    runs = [
        run
        for run in transfer.plan(protocol, tmp_path)
        if run.info.get("setting") == "rooms_4"
        and run.info.get("mode") == "finetune"
        and run.info.get("pretrain_steps") in (0, transfer._final_steps(protocol))
        and run.info["arm"] in ("scratch", "gs3_depth_bin")
    ]
    scores = {("scratch", 0): 0.30, ("scratch", 1): 0.50, ("scratch", 2): 0.40}
    scores |= {("gs3_depth_bin", 0): 0.35, ("gs3_depth_bin", 1): 0.51, ("gs3_depth_bin", 2): 0.37}
    for run in runs:
        run.folder.mkdir(parents=True)
        miou = scores[(run.info["arm"], run.info["seed"])]
        record = {"seconds": 1.0, "metrics": {"miou": miou, "macc": miou + 0.1}}
        run.done_file.write_text(json.dumps(record))
    rows = {row["arm"]: row for row in transfer.summarise(runs)["rows"]}
    differences = [5.0, 1.0, -3.0]  # per seed, in mIoU points
    mean = sum(differences) / 3
    std = (sum((d - mean) ** 2 for d in differences) / 2) ** 0.5
    assert rows["gs3_depth_bin"]["miou_vs_scratch"] == pytest.approx((mean, std))
    assert rows["gs3_depth_bin"]["miou"][0] == pytest.approx(100 * (0.35 + 0.51 + 0.37) / 3)
    assert rows["scratch"]["miou_vs_scratch"] == (0.0, 0.0)
    assert rows["gs3_depth_bin"]["seeds"] == [0, 1, 2]


def test_the_ablations_reuse_the_main_protocols_runs(transfer, tmp_path):
    main = transfer.plan(transfer.load_protocol(BENCHMARKS / "transfer_cpu.yaml", quick=False), tmp_path)
    ablations = transfer.plan(
        transfer.load_protocol(BENCHMARKS / "transfer_ablations_cpu.yaml", quick=False), tmp_path
    )
    commands = {run.key: run.command for run in main}
    shared = [run for run in ablations if run.key in commands]
    assert {run.info["arm"] for run in shared} == {"scratch", "gs3_point_offset"}
    assert all(run.command == commands[run.key] for run in shared)  # the same run, so done.json counts
