"""Pre-training steps under bf16-mixed autocast on the CPU (the GPU default precision): the model really runs
under bfloat16 autocast, the rasterizer is still called with float32 Gaussians and cameras and with autocast
off, and the losses and gradient norms stay finite (no step skipped). The SR-UNet cannot run so on the CPU:
spconv's CPU kernels have no bfloat16 (a KeyError in spconv.pytorch.cppcore), so that case is an expected
failure that flags itself once spconv supports it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import gs3.model
from gs3.config import load_config
from gs3.model import GS3
from gs3.train.runner import pretrain
from test_model import ENCODERS
from test_train import TINY

FIELDS = ("means", "scales", "quats", "opacities", "sh")
SPCONV_HAS_NO_CPU_BF16 = pytest.mark.xfail(
    raises=KeyError, strict=True, reason="spconv's CPU kernels have no bfloat16 (spconv.pytorch.cppcore)"
)


@pytest.mark.parametrize(
    "encoder", ["pointnet2", "resnet50", pytest.param("spunet", marks=SPCONV_HAS_NO_CPU_BF16)]
)
def test_bf16_mixed_pretraining_rasterizes_in_float32(encoder: str, tmp_path: Path, monkeypatch) -> None:
    seen: dict[str, list] = {"predict": [], "rasterize": []}
    real_predict, real_rasterize = GS3.predict, gs3.model.rasterize

    def predict(self, batch):
        gaussians = real_predict(self, batch)
        seen["predict"].append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), gaussians))
        return gaussians

    def rasterize(gaussians, cameras, background=None, backend="auto"):
        out = real_rasterize(gaussians, cameras, background, backend)
        seen["rasterize"].append(
            {
                "autocast": torch.is_autocast_enabled("cpu"),
                "inputs": {getattr(gaussians, f).dtype for f in FIELDS}
                | {cameras.K.dtype, cameras.cam_to_world.dtype, background.dtype},
                "outputs": {out.color.dtype, out.alpha.dtype, out.depth.dtype},
                "finite": all(bool(t.isfinite().all()) for t in (out.color, out.alpha, out.depth)),
            }
        )
        return out

    monkeypatch.setattr(GS3, "predict", predict)
    monkeypatch.setattr(gs3.model, "rasterize", rasterize)
    config_name, encoder_overrides = ENCODERS[encoder]  # the paper config with test_model's tiny encoder
    overrides = [o for o in TINY if not o.startswith("model.encoder=")] + [
        *encoder_overrides,
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.sh_degree=1",
        "model.num_depth_bins=8",
        "trainer.precision=bf16-mixed",
        "optim.max_steps=2",
        "trainer.checkpoint_every=100",
    ]
    config = load_config(config_name, overrides)
    summary = pretrain(config, tmp_path / "run")

    assert summary.steps == 2 and summary.nonfinite_skipped == 0
    assert math.isfinite(summary.first_loss) and math.isfinite(summary.last_loss)
    # the model did run under bf16 autocast: its predictions came out of bfloat16 layers
    assert seen["predict"] and all(
        enabled and dtype == torch.bfloat16 for enabled, dtype, _ in seen["predict"]
    )
    assert seen["rasterize"]
    for call in seen["rasterize"]:
        assert not call["autocast"]
        assert call["inputs"] == {torch.float32} and call["outputs"] == {torch.float32}
        assert call["finite"]
