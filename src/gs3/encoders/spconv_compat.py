"""The one place gs3 imports spconv: a clear error when it is missing, and its two CPU fixes.

1. Backward on CPU. spconv 2.x's CPU build computes sparse convolutions on the CPU, but
`spconv.pytorch.ops.indice_conv_backward` asks `get_current_stream()` for the current CUDA stream
unconditionally (the forward pass and the pair generation only ask when the tensors are on CUDA).
`get_current_stream` is `torch.cuda.current_stream().cuda_stream`, which raises "Torch not compiled
with CUDA enabled" on a CPU-only torch, so every backward pass through a sparse convolution fails on
CPU. `ops` imports the function by name from `cppcore`, so it is replaced in both modules with one that
returns stream 0 (the value spconv itself passes for CPU tensors elsewhere) when CUDA is absent and
defers to spconv's own otherwise.

2. A data race in the CPU scatter-add (spconv 2.3.8, csrc/sparse/gather.py `GatherCPU::scatter_add`): the
OpenMP-parallel loop writes its row pointers `buf`/`out_ptr` into variables shared by all threads, so with
more than one thread rows are added to the wrong voxels. Measured here: a 5×5×5 SubMConv3d on 1.4k voxels
differs from dense conv3d by up to 5 % of its output range in about half the calls (1 thread: exact). The
CPU gather-GEMM-scatter path in `spconv.pytorch.ops` (forward and input-gradient) calls it through the
`SpconvOps` name, which is replaced there by a view of SpconvOps whose `scatter_add_cpu` is torch's
`index_add_` on the same memory. CUDA tensors never reach this function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from gs3.errors import GS3Error

MISSING_SPCONV_MESSAGE = "the SR-UNet needs spconv: pip install spconv (CPU) or spconv-cu12x (CUDA)"


class MissingDependencyError(GS3Error, ImportError):
    """An optional dependency is not installed (an ImportError that the CLI prints as one line)."""


def _stream_or_zero(original: Callable[[], int]) -> Callable[[], int]:
    def get_current_stream() -> int:
        if not torch.cuda.is_available():
            return 0
        return original()

    get_current_stream.gs3_cpu_fix = True  # type: ignore[attr-defined]
    return get_current_stream


class _SpconvOpsWithSafeScatter:
    """spconv's SpconvOps with a race-free `scatter_add_cpu`; every other attribute is spconv's own."""

    gs3_cpu_fix = True

    def __init__(self, spconv_ops: Any) -> None:
        self._spconv_ops = spconv_ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spconv_ops, name)

    def scatter_add_cpu(self, out: Any, inp: Any, inds: Any) -> None:
        """out[inds[i]] += inp[i] for i < len(inds), in place on spconv's (tensorview) CPU tensors."""
        out_rows = torch.from_numpy(out.numpy_view())
        indices = torch.from_numpy(inds.numpy_view()).long()
        rows = torch.from_numpy(inp.numpy_view())[: indices.shape[0]]
        out_rows.index_add_(0, indices, rows)


def _apply_cpu_fixes(ops: ModuleType, cppcore: ModuleType) -> None:
    if not getattr(cppcore.get_current_stream, "gs3_cpu_fix", False):
        fixed = _stream_or_zero(cppcore.get_current_stream)
        cppcore.get_current_stream = fixed
        ops.get_current_stream = fixed
    if not getattr(ops.SpconvOps, "gs3_cpu_fix", False):
        ops.SpconvOps = _SpconvOpsWithSafeScatter(ops.SpconvOps)


def require_spconv() -> ModuleType:
    """Return `spconv.pytorch` with the CPU fixes applied; raise one clear line when it is missing."""
    try:
        spconv_pytorch = importlib.import_module("spconv.pytorch")
        ops = importlib.import_module("spconv.pytorch.ops")
        cppcore = importlib.import_module("spconv.pytorch.cppcore")
    except ImportError as error:
        raise MissingDependencyError(MISSING_SPCONV_MESSAGE) from error
    _apply_cpu_fixes(ops, cppcore)
    return spconv_pytorch
