"""Where a numba-backend forward+backward spends its time, stage by stage, and how much work it is.

Used by benchmarks/rasterizer.py. The stages are the backend's own kernels, called here one after the other
with the same arguments as `gs3.render.numba_backend` (each with all torch threads inside; the backend runs
two cameras side by side on two threads instead, so its end-to-end time can be lower than the sum). The
upstream gradient is a fixed random image: the kernels' cost does not depend on its values.

Work: a (Gaussian, pixel) *evaluation* is a live pixel of a Gaussian's box (its α is computed); a
*composited* pair passed the 1/255 and T ≤ 1e-4 tests. Floating-point operations per item, counted from the
kernels' source (+, −, ×, ÷ and comparisons as one each, rounded): forward 2 per box pixel (the exp
recurrence), 14 per evaluation (offset, σ, α, tests), 13 more per composited pair (T, weight, four
accumulations); backward the same 2 + 14, then 50 per composited pair (T recovery, ∂L/∂α, ten gradient
accumulations). The machine's peak assumes two FMA pipes per core at the nominal clock: float64 lanes × 2
× 2 flops per cycle per core (AVX-512: 8 lanes), and the same without SIMD (1 lane).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from gs3.cameras import Cameras
from gs3.gaussians import Gaussians
from gs3.render import rasterize
from gs3.render.projection import camera_space_coordinate

FLOPS_FORWARD = {"box": 2, "evaluated": 14, "composited": 13}
FLOPS_BACKWARD = {"box": 2, "evaluated": 14, "composited": 50}


def peak_gflops(lanes: int) -> float:
    """cores × GHz × 2 FMA pipes × lanes × 2 flops (nominal clock from /proc/cpuinfo)."""
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        return float("nan")
    return (os.cpu_count() or 1) * mhz / 1000 * 2 * lanes * 2


def simd_lanes() -> int:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 1
    return 8 if " avx512f" in flags else 4 if " avx2" in flags else 2


def profile_numba(g: Gaussians, cameras: Cameras, target: torch.Tensor, runs: int) -> None:
    from gs3.render import numba_backend as nb
    from gs3.render import numba_composite as composite
    from gs3.render import numba_project as project

    threads = torch.get_num_threads()
    width, height = cameras.width, cameras.height
    rng = np.random.default_rng(0)
    grad_out = rng.standard_normal((cameras.K.shape[0], width * height, 5)) * 1e-6
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    work: dict[str, int] = defaultdict(int)

    def sort(visible: np.ndarray, keys: np.ndarray, params: np.ndarray, boxes: np.ndarray):
        gaussians = np.flatnonzero(visible)
        index = gaussians[np.argsort(keys[gaussians], kind="stable")]
        return gaussians, index, params[index], boxes[index]

    for run in range(runs + 1):  # run 0 is the warm-up
        times: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

        def stage(name: str, fn, *args, times=times, **kwargs):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = fn(*args, **kwargs)
            times[name][0] += time.perf_counter() - start
            times[name][1] += time.process_time() - start_cpu
            return result

        def inputs():
            fields = tuple(
                nb._numpy64(getattr(g, f)) for f in ("means", "scales", "quats", "opacities", "sh")
            )
            cams = nb._cameras(cameras.K, cameras.world_to_cam, cameras.centers, torch.zeros(len(cameras), 3))
            keys = camera_space_coordinate(g.means, cameras.world_to_cam, 2).numpy()
            return fields, cams, keys

        fields, cams, keys = stage("inputs to float64 numpy, depth keys", inputs)
        n = fields[0].shape[0]
        for c, cam in enumerate(cams):
            params, boxes = np.empty((n, 10)), np.empty((n, 4), dtype=np.int32)
            visible = np.zeros(n, dtype=np.bool_)
            stage(
                "project + SH forward", nb._parallel, project.project_forward, n, *fields, cam.world_to_cam,
                cam.intrinsics, cam.center, width, height, params, boxes, visible, threads=threads,
            )  # fmt: skip
            gaussians, index, splats, boxes = stage(
                "depth sort + gather", sort, visible, keys[c], params, boxes
            )
            offsets, ids = stage("tile binning", composite.bin_tiles, boxes, width, height, nb.DEFAULT_TILE)
            pixels, tiles = width * height, offsets.shape[0] - 1
            p = nb.CameraPass(
                gaussians, index, splats, boxes, offsets, ids, np.empty(pixels),
                np.empty(pixels, dtype=np.int32), np.empty((pixels, 5)), np.zeros((tiles, 2), dtype=np.int64),
                nb.DEFAULT_TILE,
            )  # fmt: skip
            stage(
                "composite forward", nb._parallel, composite.composite_forward, tiles, p.splats,
                cam.background, p.boxes, p.offsets, p.ids, width, height, p.tile, p.image, p.t_final, p.stop,
                p.counts, threads=threads,
            )  # fmt: skip
            entry_grads = np.zeros((ids.shape[0], composite.NUM_PARAMS))
            stage(
                "composite backward", nb._parallel, composite.composite_backward, tiles, p.splats,
                cam.background, p.boxes, p.offsets, p.ids, width, height, p.tile, p.t_final, p.stop,
                grad_out[c], entry_grads, threads=threads,
            )  # fmt: skip
            splat_grads = np.zeros((n, composite.NUM_PARAMS))
            stage("gradient sums per Gaussian", composite.sum_entries, entry_grads, ids, index, splat_grads)
            grads, grad_sh = np.zeros((n, 11)), np.zeros(fields[4].shape)
            stage(
                "project + SH backward", nb._parallel, project.project_backward, gaussians.shape[0],
                gaussians, splat_grads, fields[0], fields[1], fields[2], fields[4], cam.world_to_cam,
                cam.intrinsics, cam.center, width, height, grads, grad_sh, threads=threads,
            )  # fmt: skip
            if run == 0:
                areas = (boxes[:, 1] - boxes[:, 0] + 1).clip(0) * (boxes[:, 3] - boxes[:, 2] + 1).clip(0)
                work["box"] += int(areas.sum())
                work["evaluated"] += int(p.counts[:, 0].sum())
                work["composited"] += int(p.counts[:, 1].sum())
                work["entries"] += int(ids.shape[0])
                work["splats"] += int(index.shape[0])
        if run > 0:
            for name, (seconds, cpu_seconds) in times.items():
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)

    def end_to_end() -> None:
        params = Gaussians(*(getattr(g, f).detach().clone().requires_grad_() for f in
                             ("means", "scales", "quats", "opacities", "sh")), validate=False)  # fmt: skip
        ((rasterize(params, cameras, backend="numba").color - target) ** 2).mean().backward()

    end_to_end()
    totals = []
    for _ in range(runs):
        start = time.perf_counter()
        end_to_end()
        totals.append(time.perf_counter() - start)

    print(
        f"numba backend, case (a) forward+backward by stage ({threads} threads, both cameras, "
        f"median of {runs})"
    )
    print(f"{'stage':<40} {'wall ms':>8} {'cpu ms':>8}")
    total_wall = 0.0
    for name in wall:
        median, median_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
        total_wall += median
        print(f"{name:<40} {1000 * median:>8.1f} {1000 * median_cpu:>8.1f}")
    print(f"{'sum of stages':<40} {1000 * total_wall:>8.1f}")
    print(f"{'end to end (rasterize + MSE + backward)':<40} {1000 * statistics.median(totals):>8.1f}")

    forward_flops = sum(FLOPS_FORWARD[k] * work[k] for k in FLOPS_FORWARD)
    backward_flops = sum(FLOPS_BACKWARD[k] * work[k] for k in FLOPS_BACKWARD)
    kernel_seconds = statistics.median(wall["composite forward"]) + statistics.median(
        wall["composite backward"]
    )
    lanes = simd_lanes()
    simd, scalar = peak_gflops(lanes), peak_gflops(1)
    rate = (forward_flops + backward_flops) / kernel_seconds / 1e9
    floor_ms = 1000 * (forward_flops + backward_flops) / simd / 1e9
    per_pair_ns = 1e9 * kernel_seconds * threads / (2 * work["evaluated"])
    print(
        f"\nwork per forward pass (both cameras): {work['splats']:,} visible splats, {work['entries']:,} tile"
    )
    print(
        f"  entries, {work['box']:,} box pixels, {work['evaluated']:,} (Gaussian, pixel) evaluations on live"
    )
    print(f"  pixels, {work['composited']:,} composited; the backward re-evaluates the same pairs")
    print(
        f"arithmetic: ~{forward_flops / 1e6:.0f} Mflop forward + ~{backward_flops / 1e6:.0f} Mflop "
        "backward in"
    )
    print(f"  the compositing kernels, {1000 * kernel_seconds:.0f} ms wall: {rate:.2f} GFLOP/s")
    print(
        f"machine peak (float64, nominal clock): {simd:.0f} GFLOP/s with {lanes}-lane SIMD, "
        f"{scalar:.0f} without;"
    )
    print(
        f"  the kernels reach {100 * rate / simd:.1f} % of the SIMD peak, {100 * rate / scalar:.0f} % of "
        "the scalar"
    )
    print(f"  one; floor at the SIMD peak {floor_ms:.1f} ms; {per_pair_ns:.1f} ns of one core per evaluation")
