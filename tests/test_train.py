"""Pre-training runner: deterministic data order, atomic checkpoints, exact resumption after SIGKILL,
two-process data parallel, export round trips, non-finite step skipping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gs3.config import load_config
from gs3.errors import GS3Error
from gs3.train import checkpoint as ckpt
from gs3.train.module import cosine_schedule
from gs3.train.sampling import ResumableSampler

SPUNET = (
    "model.encoder={type: SpUNet-v1m1, base_channels: 8, channels: [8, 16, 16, 8], layers: [1, 1, 1, 1],"
    " voxel_size: 0.1, out_channels: 16}"
)
TINY = [
    "data.source=synthetic",
    "data.width=24",
    "data.height=16",
    "data.frame_interval=2",
    "data.synthetic_scenes=2",
    "data.synthetic_frames=8",
    "data.batch_size=1",
    "data.num_workers=0",
    "data.extra={samples_per_scene: 2}",
    SPUNET,
    "model.sh_degree=0",
    "model.head_kwargs={max_scale: 3.0}",
    "model.epipolar={num_layers: 1, num_heads: 2, num_samples: 4, downscale: 2}",
    "loss.lpips_weight=0",
    "optim.lr=1e-3",
    "optim.max_steps=6",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.checkpoint_every=2",
    "trainer.keep_checkpoints=10",
    "trainer.log_every=1",
    "trainer.image_every=2",
    "trainer.progress_bar=false",
]
REPO = Path(__file__).resolve().parents[1]
SERIAL = {
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}  # same thread count everywhere


def tiny_overrides(cache: Path, extra: list[str] = ()) -> list[str]:
    return [*TINY, f"data.cache_dir={cache}", *extra]


# --- data order ------------------------------------------------
def test_sampler_is_a_function_of_seed_and_shards_disjointly():
    ranks = [ResumableSampler(10, 2, seed=3, epochs=2, rank=r, world_size=2) for r in range(2)]
    streams = [list(s) for s in ranks]
    assert streams[0] == list(ResumableSampler(10, 2, seed=3, epochs=2, rank=0, world_size=2))
    assert streams[0] != list(ResumableSampler(10, 2, seed=4, epochs=2, rank=0, world_size=2))
    for epoch in range(2):
        seen = [i for s in streams for i, e in s if e == epoch]
        assert sorted(seen) == list(range(8)) or len(set(seen)) == len(seen) == 8  # 2 batches × 2 × 2 ranks
    assert len(streams[0]) == len(ranks[0]) == 2 * 2 * 2


def test_sampler_resume_is_the_suffix():
    full = list(ResumableSampler(7, 2, seed=0, epochs=3))
    resumed = ResumableSampler(7, 2, seed=0, epochs=3)
    resumed.resume_at(4)
    assert list(resumed) == full[8:]
    assert list(resumed) == full[8:]  # iterating again (Lightning creates iterators twice) skips again


def test_sampler_tiny_dataset_repeats_to_fill_a_batch():
    sampler = ResumableSampler(1, 4, seed=0, max_batches=3)
    assert [i for i, _ in sampler] == [0] * 12


def test_cosine_schedule_end_points():
    assert cosine_schedule(0, 100, 1e-4, 1e-6) == pytest.approx(1e-4)
    assert cosine_schedule(50, 100, 1e-4, 1e-6) == pytest.approx((1e-4 + 1e-6) / 2)
    assert cosine_schedule(100, 100, 1e-4, 1e-6) == pytest.approx(1e-6)
    assert cosine_schedule(0, 100, 1e-4, 1e-6, warmup_steps=10) == pytest.approx(1e-5)


# --- atomic writes ---------------------------------------------
def test_atomic_save_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    ckpt.atomic_torch_save({"x": torch.ones(3)}, path)

    def broken(obj, file):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_checkpoint_file", broken)
    with pytest.raises(OSError):
        ckpt.atomic_torch_save({"x": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_latest_checkpoint_and_stale_temporaries(tmp_path):
    for step in (2, 10):
        ckpt.atomic_torch_save({"s": step}, tmp_path / ckpt.step_checkpoint_name(step))
    (tmp_path / ".step-00000012.ckpt.abc.tmp").write_bytes(b"half")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step-00000010.ckpt"
    ckpt.atomic_link(tmp_path / "step-00000002.ckpt", tmp_path / ckpt.LAST_NAME)
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / ckpt.LAST_NAME
    assert [p.name for p in ckpt.remove_stale_temporaries(tmp_path)] == [".step-00000012.ckpt.abc.tmp"]


def test_load_checkpoint_rejects_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(GS3Error, match="not a gs3"):
        ckpt.load_checkpoint(tmp_path / "x.ckpt")
    with pytest.raises(GS3Error, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.ckpt")


# --- export ----------------------------------------------------
def fake_trained_checkpoint(config, path: Path) -> dict:
    """A checkpoint as GS3Module writes it, with weights perturbed away from their initialisation."""
    from gs3.train.module import GS3Module

    module = GS3Module(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator))
    checkpoint = {"state_dict": module.state_dict(), "global_step": 7}
    module.on_save_checkpoint(checkpoint)
    ckpt.atomic_torch_save(checkpoint, path)
    return checkpoint


POINTNET2 = (
    "model.encoder={type: PointNet2SASSG, out_channels: 16, num_points: [32], radius: [0.4],"
    " num_samples: [8], sa_channels: [[16, 16]], fp_channels: [], point_fp_channels: [[16]]}"
)
RESNET50 = "model.encoder={type: ResNet50, out_channels: 16, full_resolution_channels: 8}"
EXPORTS = [
    pytest.param("pointcept", SPUNET, "gs3_rgbd_spunet", id="pointcept-spunet"),
    pytest.param("mmdet3d", POINTNET2, "gs3_rgbd_pointnet2", id="mmdet3d-pointnet2"),
    # ResNet-50 is 100 MB of weights to perturb, save and load: slow on a shared 2-core machine.
    pytest.param(
        "torchvision", RESNET50, "gs3_rgb_resnet50", id="torchvision-resnet50", marks=pytest.mark.slow
    ),
    pytest.param("mmdet3d", RESNET50, "gs3_rgb_resnet50", id="mmdet3d-resnet50", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("format", "encoder_override", "name"), EXPORTS)
def test_export_loads_into_a_fresh_encoder(tmp_path, format, encoder_override, name):
    from gs3.encoders import build_encoder
    from gs3.train.export import backbone_from_export, export_checkpoint, load_export

    config = load_config(name, ["loss.lpips_weight=0", encoder_override])
    checkpoint = fake_trained_checkpoint(config, tmp_path / "run.ckpt")
    sidecar = export_checkpoint(tmp_path / "run.ckpt", format, tmp_path / "encoder.pth")
    payload = load_export(tmp_path / "encoder.pth")
    if format == "torchvision":
        assert all(not k.startswith(("backbone.", "fc.")) for k in payload)
    else:
        assert all(k.startswith("backbone.") for k in payload["state_dict"])
    fresh = build_encoder(dict(config.model.encoder))
    report = fresh.load_backbone_state_dict(backbone_from_export(payload, format), strict=True)
    for field in ("missing", "unexpected"):
        assert not getattr(report, field, None), f"{field}: {getattr(report, field)}"
    # the exported values are the checkpoint's encoder weights, key for key
    for key, value in fresh.backbone_state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][f"model.encoder.{key}"])
    meta = json.loads(sidecar.read_text())
    assert meta["step"] == 0 or meta["step"] == 7
    assert (
        meta["format"] == format
        and meta["config"]["model"]["encoder"]["type"] == config.model.encoder["type"]
    )
    assert "gs3_version" in meta


def test_export_refuses_a_format_that_does_not_fit(tmp_path):
    from gs3.train.export import export_checkpoint

    config = load_config("gs3_rgbd_spunet", ["loss.lpips_weight=0", SPUNET])
    fake_trained_checkpoint(config, tmp_path / "run.ckpt")
    with pytest.raises(GS3Error, match="does not fit") as error:
        export_checkpoint(tmp_path / "run.ckpt", "torchvision", tmp_path / "x.pth")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "x.pth").exists()


# --- whole runs ------------------------------------------------
def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, **SERIAL}
    return subprocess.Popen(
        [sys.executable, "-m", "gs3.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(a: dict, b: dict, exact: bool = False) -> None:
    """Equal weights. Runs with the same thread count match bitwise; float sums in a different thread order
    differ by ~1e-6, so a resumed run is held to 1e-5, far below what one batch out of order changes
    (~1e-3)."""
    assert a.keys() == b.keys()
    for key in a:
        if exact or not a[key].is_floating_point():
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def write_config(tmp_path: Path, extra: list[str] = ()) -> Path:
    from omegaconf import OmegaConf

    from gs3.config import config_to_yaml

    config = load_config("demo", tiny_overrides(tmp_path / "cache", extra))
    path = tmp_path / "tiny.yaml"
    path.write_text(config_to_yaml(config))
    assert OmegaConf.load(path)  # readable
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("reference")
    config = write_config(tmp)
    output = finish(run_cli(["pretrain", "--config", str(config), "--out", str(tmp / "run")]))
    assert "gs3 pretrain: 6 steps" in output
    return config, tmp / "run"


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    start = time.monotonic()
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"run ended before the condition: {process.stdout.read()[-3000:]}")
        if time.monotonic() - start > timeout:
            process.kill()
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(uninterrupted, tmp_path):
    config, reference = uninterrupted
    out = tmp_path / "run"
    process = run_cli(["pretrain", "--config", str(config), "--out", str(out)])
    wait_for(lambda: (out / "checkpoints" / "step-00000004.ckpt").exists(), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoints" / "step-00000006.ckpt").exists(), "killed too late to test anything"
    output = finish(run_cli(["pretrain", "--config", str(config), "--out", str(out), "--resume", "auto"]))
    assert "gs3 pretrain: 6 steps" in output
    assert_same_weights(
        weights(out / "checkpoints" / "last.ckpt"), weights(reference / "checkpoints" / "last.ckpt")
    )
    resumed = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    straight = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=False)
    for a, b in zip(
        resumed["optimizer_states"][0]["state"].values(), straight["optimizer_states"][0]["state"].values()
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert resumed["lr_schedulers"][0]["last_epoch"] == straight["lr_schedulers"][0]["last_epoch"] == 6


KILL_IN_WRITE = """
import sys, time
from gs3.train import checkpoint
original = checkpoint._write_checkpoint_file
def slow_write(obj, file):
    if obj.get("global_step") == 4:
        import io
        buffer = io.BytesIO()
        original(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        file.flush()
        time.sleep(600)  # killed here, half written
    original(obj, file)
checkpoint._write_checkpoint_file = slow_write
from gs3.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_the_previous_one(uninterrupted, tmp_path):
    config, reference = uninterrupted
    out = tmp_path / "run"
    script = tmp_path / "kill_in_write.py"
    script.write_text(textwrap.dedent(KILL_IN_WRITE))
    env = {**os.environ, **SERIAL}
    process = subprocess.Popen(
        [sys.executable, str(script), "pretrain", "--config", str(config), "--out", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    folder = out / "checkpoints"
    wait_for(lambda: any(p.stat().st_size > 0 for p in folder.glob(".step-00000004.ckpt.*.tmp")), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (folder / "step-00000004.ckpt").exists()
    last = ckpt.load_checkpoint(folder / "last.ckpt")  # intact and readable
    assert last["global_step"] == 2
    output = finish(run_cli(["pretrain", "--config", str(config), "--out", str(out), "--resume", "auto"]))
    assert "gs3 pretrain: 6 steps" in output
    assert not list(folder.glob("*.tmp"))
    assert_same_weights(weights(folder / "last.ckpt"), weights(reference / "checkpoints" / "last.ckpt"))


DDP_SCRIPT = """
import os, sys, torch
from gs3.config import load_config
from gs3.train.runner import pretrain
import gs3.train.module as module_lib
config = load_config(sys.argv[1], ["trainer.strategy=ddp", "trainer.devices=2"])
original = module_lib.GS3Module.on_train_end
def record(self):
    # parameters: BatchNorm running statistics are per rank by design (DDP broadcasts them before forward)
    torch.save({k: v.detach().clone() for k, v in self.model.named_parameters()},
               os.path.join(sys.argv[2], f"rank{self.global_rank}.pt"))
module_lib.GS3Module.on_train_end = record
pretrain(config, out_dir=sys.argv[2])
"""


@pytest.mark.slow
def test_two_process_data_parallel_ranks_agree(tmp_path):
    config = write_config(tmp_path, ["optim.max_steps=3", "trainer.checkpoint_every=100"])
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, **SERIAL}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(config),
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "gs3 pretrain: 3 steps" in result.stdout
    rank0, rank1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert_same_weights(rank0, rank1, exact=True)  # DDP broadcasts and averages: bitwise equal
    import lightning as L

    from gs3.model import GS3

    L.seed_everything(0, verbose=False)  # as the runner does before building the model
    initial = dict(GS3(load_config(str(config))).named_parameters())
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0), "no training happened"


@pytest.mark.slow
def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    from gs3.model import GS3
    from gs3.train.module import NonFiniteLossError
    from gs3.train.runner import pretrain

    calls = {"n": 0}
    original = GS3.forward

    def sometimes_nan(self, batch):
        output = original(self, batch)
        calls["n"] += 1
        if calls["n"] in (2, 3):
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(GS3, "forward", sometimes_nan)
    config = load_config(
        "demo", tiny_overrides(tmp_path / "cache", ["optim.max_steps=5", "trainer.checkpoint_every=100"])
    )
    summary = pretrain(config, out_dir=tmp_path / "run")
    assert summary.nonfinite_skipped == 2
    assert summary.steps == 3  # 5 batches, 2 of them skipped
    assert (
        torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["gs3"]["nonfinite_total"] == 2
    )

    calls["n"] = 0
    monkeypatch.setattr(GS3, "forward", lambda self, batch: _nan(original(self, batch)))
    config = load_config("demo", tiny_overrides(tmp_path / "cache", ["trainer.max_nonfinite_in_row=3"]))
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        pretrain(config, out_dir=tmp_path / "run2")


def _nan(output):
    output.loss = output.loss * float("nan")
    return output


def test_render_writes_pngs_and_a_ply_of_the_predicted_gaussians(tmp_path):
    import numpy as np
    from PIL import Image

    from gs3.gaussians import load_ply
    from gs3.train.data import prepare_synthetic, synthetic_root
    from gs3.train.module import GS3Module
    from gs3.train.rendering import render_frames

    config = load_config("demo", tiny_overrides(tmp_path / "cache"))
    prepare_synthetic(config)
    module = GS3Module(config)
    checkpoint = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(checkpoint)
    ckpt.atomic_torch_save(checkpoint, tmp_path / "run.ckpt")
    scene = synthetic_root(config) / "synthetic_0000"
    previous_umask = os.umask(0o027)
    try:
        line = render_frames(tmp_path / "run.ckpt", scene, [0, 2], tmp_path / "out")
    finally:
        os.umask(previous_umask)
    assert "PSNR" in line
    for path in (tmp_path / "out").iterdir():  # the umask's permissions (gaussians.ply was once 0600)
        assert path.stat().st_mode & 0o777 == 0o640, path
    for frame in (0, 2):
        color = np.asarray(Image.open(tmp_path / "out" / f"render_{frame}.png"))
        assert color.shape == (16, 24, 3)
        depth = Image.open(tmp_path / "out" / f"depth_{frame}.png")
        assert depth.mode.startswith("I;16") and depth.size == (24, 16)
    # mask ratio 0: one Gaussian (k = 1) per valid-depth pixel of both views
    valid = sum(int((np.asarray(Image.open(scene / "depth" / f"{f}.png")) > 0).sum()) for f in (0, 2))
    assert len(load_ply(tmp_path / "out" / "gaussians.ply")) == valid
    with pytest.raises(GS3Error, match="not in scene"):
        render_frames(tmp_path / "run.ckpt", scene, [0, 999], tmp_path / "out")


@pytest.mark.slow
def test_resume_of_an_epoch_based_run_crosses_epochs_exactly(tmp_path):
    """optim.epochs (no max_steps) as the paper configs: the schedule length comes from the dataset and a
    resumed run continues the data order across the epoch boundary."""
    config = write_config(tmp_path, ["optim.max_steps=-1", "optim.epochs=2", "trainer.checkpoint_every=3"])
    finish(run_cli(["pretrain", "--config", str(config), "--out", str(tmp_path / "a")]))
    step3 = tmp_path / "a" / "checkpoints" / "step-00000003.ckpt"
    output = finish(
        run_cli(["pretrain", "--config", str(config), "--out", str(tmp_path / "b"), "--resume", str(step3)])
    )
    assert "gs3 pretrain: 8 steps" in output  # 2 scenes × 2 samples per scene, batch 1, 2 epochs
    a = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=False)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 8
    assert_same_weights(a["state_dict"], b["state_dict"])


def test_resuming_a_finished_run_says_there_is_nothing_to_do(tmp_path, capsys):
    from gs3.train.runner import pretrain

    config = load_config(
        "demo", tiny_overrides(tmp_path / "cache", ["optim.max_steps=2", "trainer.progress_bar=false"])
    )
    first = pretrain(config, out_dir=tmp_path / "run")
    assert first.steps_this_run == 2 and "nothing to do" not in first.line()
    again = pretrain(config, out_dir=tmp_path / "run", resume="auto")
    assert again.steps == 2 and again.steps_this_run == 0
    assert again.checkpoint == tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert "nothing to do" in capsys.readouterr().out.strip().splitlines()[-1]


def test_skipped_samples_are_logged_as_running_totals_by_reason():
    from types import SimpleNamespace

    from gs3.train.steps import SteppedModule

    module = SteppedModule()
    module.config = SimpleNamespace(trainer=SimpleNamespace(seed=0))
    written: list[dict[str, float]] = []
    module._write_scalars = written.append
    module.begin_step({"skipped": {"invalid pose": 2}}, 0)
    module.begin_step({"skipped": {}}, 1)
    module.begin_step({"skipped": {"invalid pose": 1, "low overlap": 3}}, 2)
    assert written == [
        {"data/skipped/invalid pose": 2.0},
        {"data/skipped/invalid pose": 3.0, "data/skipped/low overlap": 3.0},
    ]
    assert module.skipped_data == {"invalid pose": 3, "low overlap": 3}
