"""Memory and time of one pre-training step: GS³ against the NeRF-rendering baseline (Ponder), the paper's
Table 2, side by side, with the paper's ratios as targets.

    python benchmarks/pretrain_memory.py                 # 320×240, batch 4: GS³ whole images vs NeRF rays
    python benchmarks/pretrain_memory.py --quick         # 160×120, batch 2, smaller volume: minutes
    python benchmarks/pretrain_memory.py --encoders spunet --device cuda

A step = forward + backward + AdamW step on synthetic rooms (generated once into --cache), measured after
one warm-up step, each row in a fresh subprocess. Memory is measured at the allocator, not process RSS:
- CUDA: torch.cuda.max_memory_allocated over the step (peak reset before it).
- CPU: the CPU allocator's own allocation and free events, recorded by torch.profiler (profile_memory):
  the peak of the bytes allocated during the step and not yet freed, plus the bytes live when it starts
  (parameters, optimiser state, buffers, the batch). Memory that libraries allocate outside torch's
  allocator (oneDNN convolution scratch space) is not in it; the process's peak RSS is printed for
  reference.
Split of the peak: parameters + optimiser state (their tensors' sizes: AdamW keeps two moments per
parameter); saved for backward = what the graph holds when the forward pass ends (the allocator's live
bytes then, less parameters, optimiser state and the batch: tensors saved by autograd, including the NeRF's
double-backward graph for its eikonal / NeuS terms, and those a custom backward keeps itself, like the
torch rasterizer's composited pairs); transient = peak − that (gradients and the temporaries of whichever
phase peaks). `--breakdown` also prints the autograd-saved bytes per part of the model
(torch.autograd.graph.saved_tensors_hooks; a custom Function's own attributes are not seen there) and
adds two GS³ rows: without the LPIPS term; with the epipolar transformer's activation checkpointing
(`model.epipolar.checkpoint=true`); and a NeRF row at ¼ of Table 2's rays with the textbook trilinear
lookup (autograd over the 8 gathered corners).

Rows (Table 2: GS³ renders whole 320×240 images, batch 4 × 2 views; the NeRF 4,800 rays per batch):
1. both methods for every encoder at Table 2's settings;
2. the NeRF's memory against its rays per batch: ¼ and ½ of Table 2's, then doubling beyond it until the
   next point would pass --budget-gb (predicted from a straight-line fit): the largest that fits, and
   the fit extrapolated to as many rays as GS³ renders pixels; GS³ at batch 1, 2 for its own slope;
3. memory per rendered pixel (peak / pixels or rays rendered per step) for both.
GS³'s LPIPS-VGG term is included with a randomly initialised VGG-16 (memory and time do not depend on the
weights' values; the real ones need a download). Times on a shared machine are only indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from machine_info import cpu_model  # benchmarks/ is on sys.path when a script runs
from memory_probe import Components, allocator_timeline, tensor_bytes

GIB = 2**30
ENCODERS = {  # name: (GS³ config, NeRF config, encoder override for the NeRF config or None)
    "spunet": ("gs3_rgbd_spunet", "ponder_rgbd_spunet", None),
    "pointnet2": ("gs3_rgbd_pointnet2", "ponder_rgbd_spunet", "model.encoder={type: PointNet2SASSG}"),
    "resnet50": ("gs3_rgb_resnet50", "ponder_rgb_resnet50", None),
}
TARGET_RATIO, TARGET_PER_PIXEL, TARGET_GS3_GIB = 3.7, 10.0, 5.0


# ------------------------------------------------------------------------------------- one measurement
def naive_trilinear_lookup(values, coords, shape, base=None):
    """Gather the 8 corners, weight and sum with plain autograd: what a straightforward port of the NeRF
    baseline's lookup costs (autograd keeps the (N, 8, C) corners, and builds every gradient)."""
    from gs3.render.volume import trilinear_corners

    index, weights = trilinear_corners(coords, shape, base)
    return (values[index] * weights[..., None].to(values.dtype)).sum(dim=1)


def measure_one(spec: dict) -> dict:
    import torch

    from gs3.config import load_config
    from gs3.data.collate import collate
    from gs3.losses import LPIPS, RenderLoss, load_lpips_linear_weights
    from gs3.model import build_model
    from gs3.train.data import build_dataset, prepare_synthetic
    from gs3.train.module import parameter_groups
    from gs3.vgg import VGG16Features

    overrides = [
        "data.source=synthetic",
        f"data.cache_dir={spec['cache']}",
        "data.synthetic_scenes=1",
        "data.synthetic_frames=12",
        f"data.width={spec['width']}",
        f"data.height={spec['height']}",
        f"data.batch_size={spec['batch']}",
        "loss.lpips_weight=0",  # GS³'s LPIPS is put back below with a random-weight VGG
        *spec.get("overrides", []),
    ]
    config = load_config(spec["config"], overrides)
    prepare_synthetic(config)
    dataset = build_dataset(config)
    device = torch.device(spec["device"])
    batch = collate([dataset[i % len(dataset)] for i in range(spec["batch"])])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if spec.get("naive_lookup"):  # diagnostic: the textbook lookup (8 gathered corners kept for backward)
        import gs3.ponder.model

        gs3.ponder.model.trilinear_lookup = naive_trilinear_lookup
    torch.manual_seed(0)
    model = build_model(config)
    if spec["method"] == "gs3" and spec.get("lpips", True):
        model.render_loss = RenderLoss(0.05, lpips=LPIPS(VGG16Features(), load_lpips_linear_weights()))
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-4, weight_decay=0.05)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    saved: dict[int, tuple[int, str]] = {}
    exclude: set[int] = set()
    import gs3.model as gs3_model

    labels = {
        "render_rays": "ray rendering",
        "point_volume": "volume pooling",
        "image_volume": "volume lifting",
    }
    components = Components(model, labels)
    gs3_model.rasterize = components._labelled(gs3_model.rasterize, "rasterizer")

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude and storage.data_ptr() not in saved:
            saved[storage.data_ptr()] = (storage.nbytes(), components.current)
        return tensor

    held = {}

    def step(record_saved: bool = False) -> None:
        torch.manual_seed(1)  # the same rays and samples every step
        optimizer.zero_grad(set_to_none=True)
        with autocast, torch.profiler.record_function("forward"):
            if record_saved:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                    output = model(batch)
            else:
                output = model(batch)
        if device.type == "cuda":
            held["after_forward"] = torch.cuda.memory_allocated()
        with torch.profiler.record_function("backward"):
            output.loss.backward()
        with torch.profiler.record_function("optimizer"):
            optimizer.step()

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()  # warm-up: optimiser state, spconv index caches, allocator pools
    times = [timed() for _ in range(spec["repeats"])]
    optimizer.zero_grad(set_to_none=True)
    parameters = [p for p in model.parameters()]
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    inputs = [v for v in batch.values() if isinstance(v, torch.Tensor)]
    exclude |= {t.untyped_storage().data_ptr() for t in [*parameters, *inputs, *model.buffers()]}
    parameter_bytes = tensor_bytes(parameters)
    state_bytes = tensor_bytes(state)
    input_bytes = tensor_bytes(inputs)
    buffer_bytes = tensor_bytes(list(model.buffers()))
    where = ""
    live_at_start = parameter_bytes + state_bytes + input_bytes + buffer_bytes
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step(record_saved=True)
        peak, after_forward = torch.cuda.max_memory_allocated(), held["after_forward"]
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(record_saved=True)
        peak_above_start, forward_above_start, where = allocator_timeline(prof)
        peak, after_forward = live_at_start + peak_above_start, live_at_start + forward_above_start
    hooked_bytes = sum(size for size, _ in saved.values())
    by_component: dict[str, int] = {}
    for size, component in saved.values():
        by_component[component] = by_component.get(component, 0) + size
    persistent = parameter_bytes + state_bytes
    rendered = spec["rendered"]
    return {
        "peak": peak,
        "persistent": persistent,
        "saved": after_forward - live_at_start,
        "saved_hooked": hooked_bytes,
        "inputs": input_bytes + buffer_bytes,
        "transient": peak - after_forward,
        "parameters": parameter_bytes,
        "saved_by_component": by_component,
        "peak_at": where,
        "median_s": statistics.median(times) if times else float("nan"),
        "rendered": rendered,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


# --------------------------------------------------------------------------------------------- the table
def spec_for(method: str, encoder: str, args: argparse.Namespace, batch: int, rays_per_view: int = 0) -> dict:
    gs3_config, nerf_config, encoder_override = ENCODERS[encoder]
    views = 2
    spec = {
        "method": method,
        "encoder": encoder,
        "width": args.width,
        "height": args.height,
        "batch": batch,
        "device": args.device,
        "cache": args.cache,
        "repeats": args.repeats,
        "overrides": [],
    }
    if method == "gs3":
        spec["config"] = gs3_config
        spec["rendered"] = batch * views * args.width * args.height
    else:
        spec["config"] = nerf_config
        spec["overrides"] = [f"model.volume.rays_per_view={rays_per_view}", *args.volume_overrides]
        if encoder_override:
            spec["overrides"].append(encoder_override)
        spec["rendered"] = batch * views * rays_per_view
    return spec


def run(spec: dict, timeout: float) -> dict | str:
    command = [sys.executable, __file__, "--one", json.dumps(spec)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout"
    if result.returncode != 0:
        lines = (result.stderr.strip().splitlines() or ["?"])[-1:]
        return f"failed (rc {result.returncode}): {lines[0][:90]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def gib(value: float) -> str:
    return f"{value / GIB:7.2f}"


def print_row(label: str, row: dict | str, breakdown: bool = False) -> None:
    if isinstance(row, str):
        print(f"{label:<34} {row}", flush=True)
        return
    print(
        f"{label:<34} {row['rendered']:>9,} {gib(row['peak'])} {gib(row['persistent'])} {gib(row['saved'])} "
        f"{gib(row['transient'])} {row['peak'] / row['rendered'] / 1024:>10.1f} {row['median_s']:>8.2f} "
        f"{gib(row['rss'])}",
        flush=True,
    )
    if breakdown:
        parts = sorted(row["saved_by_component"].items(), key=lambda item: -item[1])
        listed = ", ".join(f"{name} {size / GIB:.2f}" for name, size in parts)
        print(f"    autograd-saved by part (GB): {listed}; peak in {row['peak_at'] or '?'}", flush=True)


def linear_fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares intercept and slope of peak bytes against rays."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var > 0 else 0.0
    return mean_y - slope * mean_x, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="160×120, batch 2, a 64×64×16 volume: minutes")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps after the warm-up")
    parser.add_argument(
        "--budget-gb", type=float, default=None, help="largest NeRF run (default: 60%% of RAM/GPU)"
    )
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/gs3/bench"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per row")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="autograd-saved bytes per model part; GS³ rows without LPIPS and with checkpointing",
    )
    parser.add_argument("--table2-only", action="store_true", help="only the Table 2 rows (no trends)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(json.loads(args.one))))
        return

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.setting = "quick" if args.quick else "Table 2"
    if args.quick:
        args.width, args.height, batch, rays = 160, 120, 2, 150  # rays : pixels = 1 : 128, as Table 2
        args.volume_overrides = ["model.volume.grid_shape=[64, 64, 16]"]
    else:
        args.width, args.height, batch, rays = 320, 240, 4, 600
        args.volume_overrides = []
    if args.budget_gb is None:
        if args.device == "cuda":
            total = torch.cuda.get_device_properties(0).total_memory
        else:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        args.budget_gb = 0.6 * total / GIB
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({cpu_model()})"
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"measured on {device_name}"
    )
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{args.width}x{args.height}, 2 views, batch {batch}, mask 0.5; step = forward + backward + AdamW; "
        f"time = median of {args.repeats} after a warm-up; memory at the "
        + (
            "CUDA allocator (max_memory_allocated)"
            if args.device == "cuda"
            else "CPU allocator (profiler events)"
        )
        + f"; NeRF runs up to {args.budget_gb:.1f} GB"
    )
    header = (
        f"{'row':<34} {'rendered':>9} {'peak GB':>7} {'par+opt':>7} {'saved':>7} {'trans.':>7} "
        f"{'KiB/pixel':>10} {'s/step':>8} {'RSS GB':>7}"
    )
    print(header)
    print("-" * len(header))
    rows: dict[str, dict | str] = {}
    for encoder in args.encoders:
        for method, label in (("gs3", "GS³"), ("nerf", "NeRF")):
            spec = spec_for(method, encoder, args, batch, rays)
            name = f"{label} {encoder} ({args.setting})"
            rows[name] = run(spec, args.timeout)
            print_row(name, rows[name], args.breakdown)
    # the NeRF's trend against rays (first encoder): a quarter and half of Table 2's rays, then doubling
    # beyond it while the straight-line fit predicts the next point within the budget
    encoder = args.encoders[0]
    points = []
    if args.table2_only:
        summarise(rows, points, [], encoder, args, batch)
        return
    base = rows.get(f"NeRF {encoder} ({args.setting})")
    if isinstance(base, dict):
        points.append((base["rendered"], base["peak"]))
    below = [rays // 4, rays // 2]
    above = [rays * 2**k for k in range(1, 12) if rays * 2**k <= args.width * args.height]
    for per_view in below + above:
        next_rays = batch * 2 * per_view
        if per_view > rays and len(points) >= 2:
            intercept, slope = linear_fit(points)
            if intercept + slope * next_rays > args.budget_gb * GIB:
                break
        name = f"NeRF {encoder}, {next_rays:,} rays"
        rows[name] = run(spec_for("nerf", encoder, args, batch, per_view), args.timeout)
        print_row(name, rows[name], args.breakdown)
        if not isinstance(rows[name], dict):
            break
        points.append((rows[name]["rendered"], rows[name]["peak"]))
    if args.breakdown:  # where GS³'s memory goes
        for name, change in (
            (f"GS³ {encoder}, LPIPS off", {"lpips": False}),
            (f"GS³ {encoder}, epipolar ckpt", {"overrides": ["model.epipolar.checkpoint=true"]}),
        ):
            rows[name] = run({**spec_for("gs3", encoder, args, batch), **change}, args.timeout)
            print_row(name, rows[name], args.breakdown)
        name = f"NeRF {encoder}, naive lookup, {batch * 2 * (rays // 4):,} rays"  # vs the ¼-rays row above
        rows[name] = run(
            {**spec_for("nerf", encoder, args, batch, rays // 4), "naive_lookup": True}, args.timeout
        )
        print_row(name, rows[name], args.breakdown)
    gs3_points = []
    for small in range(1, batch):
        if batch % small == 0:
            name = f"GS³ {encoder}, batch {small}"
            rows[name] = run(spec_for("gs3", encoder, args, small), args.timeout)
            print_row(name, rows[name], args.breakdown)
            if isinstance(rows[name], dict):
                gs3_points.append((rows[name]["rendered"], rows[name]["peak"]))
    summarise(rows, points, gs3_points, encoder, args, batch)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summarise(rows, points, gs3_points, encoder, args, batch) -> None:
    pixels = batch * 2 * args.width * args.height
    print()
    if len(points) >= 2:
        intercept, slope = linear_fit(points)
        whole = intercept + slope * pixels
        fits = "fits" if whole <= args.budget_gb * GIB else "does not fit"
        print(
            f"NeRF {encoder} trend ({len(points)} points, {min(points)[0]:,}..{max(points)[0]:,} rays): "
            f"{intercept / GIB:.2f} GB + {slope / 1024:.1f} KiB per ray; whole images ({pixels:,} rays): "
            f"{whole / GIB:,.0f} GB extrapolated ({fits} in the {args.budget_gb:.1f} GB budget)"
        )
    table2 = rows.get(f"GS³ {encoder} ({args.setting})")
    if gs3_points and isinstance(table2, dict):
        intercept, slope = linear_fit([*gs3_points, (table2["rendered"], table2["peak"])])
        print(f"GS³ {encoder} trend: {intercept / GIB:.2f} GB + {slope / 1024:.2f} KiB per rendered pixel")
    print()
    print("targets (same run)" + (" [--quick: not Table 2's settings]" if args.quick else "") + ":")
    for name in args.encoders:
        gs3, nerf = rows.get(f"GS³ {name} ({args.setting})"), rows.get(f"NeRF {name} ({args.setting})")
        if not (isinstance(gs3, dict) and isinstance(nerf, dict)):
            print(f"  {name}: not measured")
            continue
        ratio = nerf["peak"] / gs3["peak"]
        per_pixel = (nerf["peak"] / nerf["rendered"]) / (gs3["peak"] / gs3["rendered"])
        gs3_gib = gs3["peak"] / GIB
        print(
            f"  {name}: NeRF / GS³ peak {ratio:.2f}x (>= {TARGET_RATIO}: {verdict(ratio >= TARGET_RATIO)}); "
            f"per rendered pixel {per_pixel:,.0f}x (>= {TARGET_PER_PIXEL:.0f}: "
            f"{verdict(per_pixel >= TARGET_PER_PIXEL)}); GS³ {gs3_gib:.2f} GB "
            f"(<= {TARGET_GS3_GIB:.0f}: {verdict(gs3_gib <= TARGET_GS3_GIB)})"
        )


if __name__ == "__main__":
    main()
