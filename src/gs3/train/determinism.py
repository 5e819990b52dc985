"""`trainer.deterministic: true`: runs, and runs resumed after a kill, that are bit-identical.

Without it, gs3 is already deterministic where that costs nothing: the data of a step is a pure function of
(seed, step) (gs3.train.sampling), model-side randomness is reseeded from (seed, step, rank) every step
(gs3.train.module), and the one threaded CPU operation that summed in an order set by thread timing on
the default configs (the backward of the SR-UNet's voxel-to-point gather, an `index_put_` with repeated
indices) was replaced by `index_select`, whose backward sums in index order. What remains is left to
PyTorch's switch, which this module turns on for the run and restores afterwards:

- `torch.use_deterministic_algorithms(True)`: every operation with a deterministic implementation uses it
  (on the CPU, for example, `index_put_(accumulate=True)` sorts its indices first), and one without it
  raises on the CPU;
- cuDNN: deterministic kernels, no benchmarking (`cudnn.deterministic`, `cudnn.benchmark = False`);
- `CUBLAS_WORKSPACE_CONFIG=:4096:8` (cuBLAS reproducibility), unless already set.

This is what Lightning's `Trainer(deterministic=True)` sets, done by a callback instead so that the flags
are restored when the run ends or fails (Lightning's stay on for the rest of the process).

Results are bit-identical for a fixed machine, software and thread count: a different number of threads
splits reductions differently and changes the last bits. Measured on 2 cores with 2 threads (demo config,
benchmarks/determinism.py): before the gather fix two default runs ended up to 0.004 apart in their
parameters after 10 steps (0.008 in BatchNorm statistics) and 0.010 (0.086) after 100 steps; now default
runs of the shipped configs come out bit-identical too, and this mode costs 0-2 % per step. Code that
gs3 adds (a compiled rasterizer's backward, for example) must keep that: when
`torch.are_deterministic_algorithms_enabled()`, sum in an order that does not depend on thread timing.

On CUDA some operations gs3 uses have no deterministic kernel in PyTorch (the backward passes of
`grid_sample` in the epipolar sampler, of bilinear `interpolate` and `adaptive_avg_pool2d`; `cumsum`
in the torch rasterizer), and gsplat's backward (like, as far as we know, spconv's CUDA kernels)
accumulates gradients with atomics, which PyTorch cannot see. There the switch is
turned on with `warn_only=True`: PyTorch warns where such an operation runs instead of stopping the run,
and a start-up line says that CUDA runs are not bit-identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

CUBLAS_WORKSPACE_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE = ":4096:8"
CUDA_NOTICE = (
    "gs3: trainer.deterministic on CUDA: deterministic algorithms on, but grid_sample / interpolate / "
    "adaptive_avg_pool2d backward and cumsum have no deterministic CUDA kernels (PyTorch warns where they "
    "run) and gsplat accumulates with atomics: CUDA runs are not bit-identical; CPU runs are"
)


@dataclass(frozen=True)
class TorchFlags:
    """The process-wide settings deterministic mode changes."""

    deterministic: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    cublas_workspace: str | None

    @classmethod
    def current(cls) -> TorchFlags:
        return cls(
            deterministic=torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cublas_workspace=os.environ.get(CUBLAS_WORKSPACE_VARIABLE),
        )

    def apply(self) -> None:
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.cublas_workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE_VARIABLE, None)
        else:
            os.environ[CUBLAS_WORKSPACE_VARIABLE] = self.cublas_workspace


def deterministic_flags(on_cuda: bool, current: TorchFlags | None = None) -> TorchFlags:
    """The settings of deterministic mode (warn-only on CUDA, see the module docstring)."""
    current = current or TorchFlags.current()
    return TorchFlags(
        deterministic=True,
        warn_only=on_cuda,
        cudnn_deterministic=True,
        cudnn_benchmark=False,
        cublas_workspace=current.cublas_workspace or CUBLAS_WORKSPACE,
    )


class Deterministic(Callback):
    """Deterministic mode from `setup` (before the first forward pass) to `teardown` or `on_exception`."""

    def __init__(self) -> None:
        self.saved: TorchFlags | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        on_cuda = trainer.strategy.root_device.type == "cuda"
        self.saved = TorchFlags.current()
        deterministic_flags(on_cuda, self.saved).apply()
        if on_cuda and trainer.is_global_zero:
            print(CUDA_NOTICE, flush=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()  # Lightning skips `teardown` when the run fails

    def _restore(self) -> None:
        if self.saved is not None:
            self.saved.apply()
            self.saved = None


def determinism_callbacks(config: Any) -> list[Callback]:
    """The callbacks `trainer.deterministic` asks for (none when it is off)."""
    return [Deterministic()] if config.trainer.deterministic else []
