"""trainer.deterministic: PyTorch's deterministic algorithms for the run only; two runs and a run killed with
SIGKILL and resumed end bit-identical with two threads — gs3.train.determinism and the runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gs3.config import load_config
from gs3.train.determinism import CUBLAS_WORKSPACE, CUBLAS_WORKSPACE_VARIABLE, TorchFlags, deterministic_flags

from test_train import REPO, tiny_overrides, wait_for, write_config  # isort: skip

TWO_THREADS = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def test_flags_round_trip(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE_VARIABLE, raising=False)
    before = TorchFlags.current()
    assert not before.deterministic
    try:
        deterministic_flags(on_cuda=False).apply()
        now = TorchFlags.current()
        assert now.deterministic and not now.warn_only and now.cudnn_deterministic and not now.cudnn_benchmark
        assert os.environ[CUBLAS_WORKSPACE_VARIABLE] == CUBLAS_WORKSPACE
        assert deterministic_flags(on_cuda=True).warn_only  # CUDA: warn where no deterministic kernel exists
    finally:
        before.apply()
    assert TorchFlags.current() == before and CUBLAS_WORKSPACE_VARIABLE not in os.environ
    monkeypatch.setenv(CUBLAS_WORKSPACE_VARIABLE, ":16:8")  # the user's own setting is kept
    assert deterministic_flags(on_cuda=False).cublas_workspace == ":16:8"


def test_on_for_the_run_and_restored_after_it_and_after_an_error(tmp_path, monkeypatch):
    from gs3.model import GS3
    from gs3.train.runner import pretrain

    seen: list[bool] = []
    original = GS3.forward

    def recording(self, batch):
        seen.append(torch.are_deterministic_algorithms_enabled())
        if len(seen) == 3:
            raise RuntimeError("stop here")
        return original(self, batch)

    monkeypatch.setattr(GS3, "forward", recording)
    extra = ["optim.max_steps=2", "trainer.checkpoint_every=100", "trainer.deterministic=true"]
    config = load_config("demo", tiny_overrides(tmp_path / "cache", extra))
    pretrain(config, out_dir=tmp_path / "run")
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="stop here"):
        pretrain(config, out_dir=tmp_path / "run2")
    assert seen == [True, True, True] and not torch.are_deterministic_algorithms_enabled()
    config.trainer.deterministic = False
    seen.clear()
    pretrain(config, out_dir=tmp_path / "run3")
    assert seen == [False, False]


def start(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gs3.cli", "pretrain", "--config", str(config), "--out", str(out), *extra],
        cwd=REPO,
        env={**os.environ, **TWO_THREADS},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def assert_bit_identical(a: Path, b: Path) -> None:
    first = torch.load(a / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    second = torch.load(b / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for key, value in first["state_dict"].items():  # parameters and BatchNorm statistics
        assert torch.equal(value, second["state_dict"][key]), key
    for state, other in zip(
        first["optimizer_states"][0]["state"].values(), second["optimizer_states"][0]["state"].values()
    ):
        assert torch.equal(state["exp_avg"], other["exp_avg"])
        assert torch.equal(state["exp_avg_sq"], other["exp_avg_sq"])
    assert first["global_step"] == second["global_step"]


@pytest.mark.slow
def test_two_runs_and_a_killed_and_resumed_run_are_bit_identical_with_two_threads(tmp_path):
    config = write_config(tmp_path, ["trainer.deterministic=true", "optim.max_steps=8"])
    assert "gs3 pretrain: 8 steps" in finish(start(config, tmp_path / "a"))
    finish(start(config, tmp_path / "b"))
    assert_bit_identical(tmp_path / "a", tmp_path / "b")

    out = tmp_path / "killed"
    process = start(config, out)
    wait_for(lambda: (out / "checkpoints" / "step-00000002.ckpt").exists(), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoints" / "step-00000008.ckpt").exists(), "killed too late to test anything"
    assert "gs3 pretrain: 8 steps" in finish(start(config, out, "--resume", "auto"))
    assert_bit_identical(tmp_path / "a", out)
