"""Pure-PyTorch Gaussian rasterizer: the reference backend, on any device, exact w.r.t. gsplat's rules.

Design
------
1. *Projection* (`projection.py`, ordinary autograd): per camera, EWA projection to 2D means, conics, depths;
   culling (z < 0.01, opacity < 1/255, bounding box off screen). Colours from SH for the visible ones.
2. *Binning*: the visible Gaussians of a camera are stably sorted by depth (ties keep index order, as gsplat's
   stable radix sort does). Each Gaussian covers the pixels whose centres lie inside its bounding box of
   extend = min(3.33, √(2 ln(255·o))) standard deviations per axis: the exact box of its α ≥ 1/255 ellipse,
   the box gsplat 1.5.3 bins into 16×16 tiles (before rounding up to whole tiles). Outside it α < 1/255, so
   working only inside it never drops a contributing pixel. On a CPU a 16×16 tile is only a coarser version
   of this box (2–9× more pixels than a pixel-sized Gaussian's box, every one evaluated), so the unit of work
   here is the (Gaussian, pixel) pair: Gaussians whose boxes round up to the same window shape (1..8 px,
   then 4 steps per octave) are evaluated together on a dense (G, wy, wx) grid by broadcasting.
3. *Compositing in chunks*: Gaussians are taken front to back in chunks of at most `pair_budget` window
   pixels, so memory is bounded whatever the scene and no Gaussians × pixels tensor is ever built. Per
   chunk: α = min(0.999, o·exp(−σ)); pairs with σ < 0 or α < 1/255 are dropped; the rest are sorted by one
   integer key (pixel · chunk length + depth rank, the per-pixel analogue of gsplat's tile << 32 | depth key)
   and composited per pixel with a segmented exclusive cumulative sum of log(1 − α) in float64, continuing
   each pixel's transmittance T from the previous chunks. gsplat's stop rule is reproduced exactly: a pair is
   composited only while T·(1 − α) > 1e-4; the first pair that fails and everything behind it are
   excluded, and the pixel is marked done so that later chunks skip it (early termination).
4. *Backward* (`_Composite`, a custom autograd Function). Per composited pair the closed form
       ∂L/∂αᵢ = Tᵢ·(g_C·cᵢ + g_D·zᵢ) − (g_C·S^Cᵢ + g_D·S^Dᵢ − g_A·T_N) / (1 − αᵢ),
   where S^Cᵢ = C − Σ_{j≤i} wⱼcⱼ (C includes T_N·background), S^D likewise, wⱼ = αⱼTⱼ, needs only the final
   per-pixel colour, depth and T_N (float64) and a running per-pixel prefix. Then α → (o, σ) → (mean2d,
   conic), scattered to the Gaussians; the projection's autograd carries them to means, scales, quats, SH.
   The forward keeps the composited pairs of its first chunks for the backward (index, pixel, α, T: ~33 bytes
   a pair) up to `keep_limit` pairs per camera; chunks beyond it are recomputed chunk by chunk in backward
   (same pairs, same order), so memory stays bounded for any scene and the common case skips the replay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gs3.cameras import Cameras
from gs3.gaussians.container import Gaussians
from gs3.render.projection import ALPHA_THRESHOLD, LOG_T_MIN, bbox_extend, project_gaussians
from gs3.render.sh import sh_to_color

DEFAULT_PAIR_BUDGET = 1 << 21  # window pixels evaluated per chunk
DEFAULT_KEEP_LIMIT = 1 << 24  # composited pairs kept for backward per camera (~33 bytes each), beyond: replay
_BOX_MARGIN = 1e-3  # pixels: keeps float rounding at the ellipse's edge on the safe (inclusive) side


@dataclass
class PixelBoxes:
    """Per Gaussian (depth order): first pixel column/row, box size, and the window it is evaluated on."""

    u0: Int[Tensor, " m"]
    v0: Int[Tensor, " m"]
    nx: Int[Tensor, " m"]
    ny: Int[Tensor, " m"]
    window_x: Int[Tensor, " m"]
    window_y: Int[Tensor, " m"]

    @property
    def cost(self) -> Int[Tensor, " m"]:
        return self.window_x * self.window_y


def pixel_boxes(
    means2d: Float[Tensor, "m 2"],
    cov2d: Float[Tensor, "m 3"],
    opacities: Float[Tensor, " m"],
    width: int,
    height: int,
) -> PixelBoxes:
    """Pixels whose centre (u + 0.5, v + 0.5) can have α ≥ 1/255, clipped to the image."""
    extend = bbox_extend(opacities).double()
    rx = extend * cov2d[:, 0].double().sqrt() * (1 + 1e-5) + _BOX_MARGIN
    ry = extend * cov2d[:, 2].double().sqrt() * (1 + 1e-5) + _BOX_MARGIN
    mx, my = means2d[:, 0].double(), means2d[:, 1].double()
    u0 = torch.ceil(mx - rx - 0.5).clamp(0, width).long()
    u1 = torch.floor(mx + rx - 0.5).clamp(-1, width - 1).long()
    v0 = torch.ceil(my - ry - 0.5).clamp(0, height).long()
    v1 = torch.floor(my + ry - 0.5).clamp(-1, height - 1).long()
    nx = (u1 - u0 + 1).clamp_min(0)
    ny = (v1 - v0 + 1).clamp_min(0)
    empty = (nx == 0) | (ny == 0)
    return PixelBoxes(u0, v0, nx, ny, _window(nx, empty), _window(ny, empty))


def _window(size: Tensor, empty: Tensor) -> Tensor:
    """Size rounded up to 1..8, then to 4 steps per octave (10, 12, 14, 16, 20, …; ≤ 25 % padding): few
    distinct window shapes to vectorise over, little wasted work (0 for empty boxes)."""
    size = size.clamp_min(1)
    step = (2 ** (torch.floor(torch.log2(size.double())).long() - 2)).clamp_min(1)
    rounded = torch.div(size + step - 1, step, rounding_mode="floor") * step
    return torch.where(empty, torch.zeros_like(size), rounded)


def plan_chunks(cost: Int[Tensor, " m"], budget: int) -> list[tuple[int, int]]:
    """Split Gaussians [0, m) into consecutive ranges costing at most `budget` (≥ 1 Gaussian each)."""
    m = cost.shape[0]
    if m == 0:
        return []
    cumulative = cost.cumsum(0).cpu()
    chunks, start, spent = [], 0, 0
    while start < m:
        end = int(torch.searchsorted(cumulative, spent + budget, right=True))
        end = max(end, start + 1)
        chunks.append((start, end))
        spent = int(cumulative[end - 1])
        start = end
    return chunks


@dataclass
class _PixelState:
    """What each pixel carries from one chunk to the next."""

    log_t: Tensor  # (P,) float64 log transmittance
    done: Tensor  # (P,) bool: compositing stopped
    acc: Tensor  # forward: (P, 4) Σ w·(rgb, z); backward: (P,) float64 Σ w·(g_C·c + g_D·z)


@dataclass
class _Pairs:
    """Composited (Gaussian, pixel) pairs of one chunk, sorted by pixel then depth."""

    gaussian: Tensor  # index into the camera's sorted Gaussians
    pixel: Tensor
    first: Tensor  # bool: first pair of its pixel in this chunk
    alpha: Tensor
    t_before: Tensor  # transmittance in front of the pair (compute dtype)
    log1m: Tensor  # log(1 − α), float64
    stopped: Tensor  # pixels whose compositing stops inside this chunk


def _candidates(
    start: int,
    end: int,
    boxes: PixelBoxes,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    width: int,
    done: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """(sort key = pixel·span + Gaussian index, α) of every pair with α ≥ 1/255 on a live pixel.

    Gaussians sharing a window shape are evaluated together on a dense (G, wy, wx) grid by broadcasting."""
    device = means2d.device
    span = end - start
    window_x, window_y = boxes.window_x[start:end], boxes.window_y[start:end]
    shape_id = window_x * 4096 + window_y
    keys, alphas = [], []
    for shape in torch.unique(shape_id[window_x > 0]).tolist():
        wx, wy = shape // 4096, shape % 4096
        ids = (shape_id == shape).nonzero().squeeze(1) + start
        cols = torch.arange(wx, device=device)
        rows = torch.arange(wy, device=device)
        u = boxes.u0[ids, None] + cols  # (G, wx)
        v = boxes.v0[ids, None] + rows  # (G, wy)
        mean, conic = means2d[ids], conics[ids]
        # Window cells outside the box get an infinite offset: σ = inf (or NaN), so they fail the tests below.
        inf = torch.tensor(float("inf"), dtype=mean.dtype, device=device)
        dx = torch.where(cols < boxes.nx[ids, None], (u.to(mean.dtype) + 0.5) - mean[:, :1], inf)
        dy = torch.where(rows < boxes.ny[ids, None], (v.to(mean.dtype) + 0.5) - mean[:, 1:], inf)
        # −σ = −½a·dx² − ½c·dy² − b·dx·dy, built with two passes over the (G, wy, wx) grid.
        neg_sigma = torch.addcmul(
            (-0.5 * conic[:, 0:1] * dx * dx)[:, None, :] + (-0.5 * conic[:, 2:3] * dy * dy)[:, :, None],
            dy[:, :, None],
            (-conic[:, 1:2] * dx)[:, None, :],
        )
        alpha = opacities[ids, None, None] * torch.exp(neg_sigma)
        ok = (neg_sigma <= 0) & (alpha >= ALPHA_THRESHOLD)  # the 0.999 cap is above the threshold
        flat = ok.reshape(-1).nonzero().squeeze(1)
        gaussian = ids[torch.div(flat, wx * wy, rounding_mode="floor")]
        pixel = ((v * width)[:, :, None] + u[:, None, :]).reshape(-1)[flat]
        alpha = torch.clamp_max(alpha.reshape(-1)[flat], 0.999)
        if done is not None:
            live = (~done[pixel]).nonzero().squeeze(1)
            gaussian, pixel, alpha = gaussian[live], pixel[live], alpha[live]
        keys.append(pixel * span + (gaussian - start))
        alphas.append(alpha)
    if not keys:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, means2d.new_zeros(0)
    return torch.cat(keys), torch.cat(alphas)


def _chunk_pairs(
    start: int,
    end: int,
    boxes: PixelBoxes,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    width: int,
    state: _PixelState,
) -> _Pairs:
    done = state.done if bool(state.done.any()) else None
    keys, alpha = _candidates(start, end, boxes, means2d, conics, opacities, width, done)
    span = end - start
    if span * (state.done.shape[0] + 1) < 2**31:  # int32 keys sort faster
        keys = keys.int()
    keys, order = torch.sort(keys)  # keys are unique: (pixel, depth rank)
    alpha = alpha[order]
    keys = keys.long()
    pixel = torch.div(keys, span, rounding_mode="floor")
    gaussian = keys - pixel * span + start
    first = torch.ones_like(pixel, dtype=torch.bool)
    first[1:] = pixel[1:] != pixel[:-1]

    log1m = torch.log1p(-alpha.double())
    log_t_before = state.log_t[pixel] + segmented_exclusive_cumsum(log1m, first)
    keep = log_t_before + log1m > LOG_T_MIN  # gsplat: stop before the Gaussian that brings T to ≤ 1e-4
    stopped = pixel[~keep]
    # Kept pairs are a prefix of their pixel's run, so `first` still marks each pixel's first kept pair.
    kept = keep.nonzero().squeeze(1)
    return _Pairs(
        gaussian=gaussian[kept],
        pixel=pixel[kept],
        first=first[kept],
        alpha=alpha[kept],
        t_before=torch.exp(log_t_before[kept]).to(alpha.dtype),
        log1m=log1m[kept],
        stopped=stopped,
    )


def segmented_exclusive_cumsum(values: Tensor, first: Tensor) -> Tensor:
    """Exclusive cumulative sum along dim 0 restarting where `first` is True (values float64)."""
    inclusive = values.cumsum(0)
    exclusive = inclusive - values
    segment = first.cumsum(0) - 1
    return exclusive - exclusive[first][segment]


def _advance(state: _PixelState, pairs: _Pairs) -> None:
    state.log_t.index_add_(0, pairs.pixel, pairs.log1m)
    state.done[pairs.stopped] = True


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of one camera's depth-sorted splats; recomputes pairs in backward."""

    @staticmethod
    def forward(
        ctx, means2d, conics, opacities, colors, depths, background, boxes, chunks, width, height, keep_limit
    ):
        num_pixels = width * height
        device = means2d.device
        state = _PixelState(
            log_t=torch.zeros(num_pixels, dtype=torch.float64, device=device),
            done=torch.zeros(num_pixels, dtype=torch.bool, device=device),
            acc=torch.zeros(num_pixels, 4, dtype=means2d.dtype, device=device),
        )
        features = torch.cat([colors, depths[:, None]], dim=-1)
        # Pairs are kept for backward while they fit under keep_limit (~33 bytes each); the rest are replayed.
        kept, kept_pairs, keeping = [], 0, any(ctx.needs_input_grad)
        for start, end in chunks:
            pairs = _chunk_pairs(start, end, boxes, means2d, conics, opacities, width, state)
            kept_pairs += pairs.pixel.shape[0]
            keeping = keeping and kept_pairs <= keep_limit  # kept chunks are a prefix of `chunks`
            if keeping:
                kept.append(pairs)
            weights = pairs.alpha * pairs.t_before
            contribution = weights[:, None] * features[pairs.gaussian]
            state.acc.index_add_(0, pairs.pixel, contribution)
            _advance(state, pairs)
        t_final = torch.exp(state.log_t)
        color = state.acc[:, :3].double() + t_final[:, None] * background.double()
        depth = state.acc[:, 3].double()
        ctx.save_for_backward(means2d, conics, opacities, colors, depths, background, color, depth, t_final)
        ctx.boxes, ctx.chunks, ctx.width, ctx.kept = boxes, chunks, width, kept
        dtype = means2d.dtype
        return (
            color.to(dtype).reshape(height, width, 3),
            (1 - t_final).to(dtype).reshape(height, width, 1),
            depth.to(dtype).reshape(height, width, 1),
        )

    @staticmethod
    def backward(ctx, grad_color, grad_alpha, grad_depth):
        means2d, conics, opacities, colors, depths, _, color, depth, t_final = ctx.saved_tensors
        boxes, chunks, width = ctx.boxes, ctx.chunks, ctx.width
        device, dtype = means2d.device, means2d.dtype
        num_pixels = t_final.shape[0]
        g_color = grad_color.reshape(num_pixels, 3)
        g_alpha = grad_alpha.reshape(num_pixels)
        g_depth = grad_depth.reshape(num_pixels)
        g_feature = torch.cat([g_color, g_depth[:, None]], dim=-1)
        # Per pixel: g_C·C + g_D·D − g_A·T_N, so that the suffix term of pair i is q − (Σ_{j≤i} rⱼ).
        q = (g_color.double() * color).sum(-1) + g_depth.double() * depth - g_alpha.double() * t_final

        m = means2d.shape[0]
        grads = torch.zeros(m, 9, dtype=dtype, device=device)  # mean2d(2) conic(3) opacity color(3)
        grad_z = torch.zeros(m, dtype=dtype, device=device)
        state = _PixelState(
            log_t=torch.zeros(num_pixels, dtype=torch.float64, device=device),
            done=torch.zeros(num_pixels, dtype=torch.bool, device=device),
            acc=torch.zeros(num_pixels, dtype=torch.float64, device=device),
        )
        features = torch.cat([colors, depths[:, None]], dim=-1)
        for index, (start, end) in enumerate(chunks):
            if index < len(ctx.kept):
                pairs = ctx.kept[index]
            else:
                pairs = _chunk_pairs(start, end, boxes, means2d, conics, opacities, width, state)
            g = pairs.gaussian
            gf = g_feature[pairs.pixel]
            weights = pairs.alpha * pairs.t_before
            direct = (gf * features[g]).sum(-1)  # g_C·c + g_D·z
            r = (weights * direct).double()
            prefix = state.acc[pairs.pixel] + segmented_exclusive_cumsum(r, pairs.first) + r
            suffix = (q[pairs.pixel] - prefix).to(dtype)
            g_alpha_pair = pairs.t_before * direct - suffix / (1 - pairs.alpha)

            conic = conics[g]
            row = torch.div(pairs.pixel, width, rounding_mode="floor")
            dx = ((pairs.pixel - row * width).to(dtype) + 0.5) - means2d[g, 0]
            dy = (row.to(dtype) + 0.5) - means2d[g, 1]
            vis = torch.exp(-(0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy))
            o = opacities[g]
            # α = min(0.999, o·vis): no gradient through the cap (as gsplat)
            g_alpha_pair = torch.where(o * vis <= 0.999, g_alpha_pair, torch.zeros_like(g_alpha_pair))
            g_sigma = -g_alpha_pair * o * vis
            per_pair = torch.stack(
                [
                    -g_sigma * (conic[:, 0] * dx + conic[:, 1] * dy),
                    -g_sigma * (conic[:, 1] * dx + conic[:, 2] * dy),
                    0.5 * g_sigma * dx * dx,
                    g_sigma * dx * dy,
                    0.5 * g_sigma * dy * dy,
                    g_alpha_pair * vis,
                ],
                dim=-1,
            )
            per_pair = torch.cat([per_pair, weights[:, None] * gf[:, :3]], dim=-1)
            grads.index_add_(0, g, per_pair)
            grad_z.index_add_(0, g, weights * gf[:, 3])
            state.acc.index_add_(0, pairs.pixel, r)
            _advance(state, pairs)
        grad_background = (g_color * t_final.to(dtype)[:, None]).sum(0) if ctx.needs_input_grad[5] else None
        return (
            grads[:, 0:2],
            grads[:, 2:5],
            grads[:, 5],
            grads[:, 6:9],
            grad_z,
            grad_background,
            None,
            None,
            None,
            None,
            None,
        )


def composite(
    means2d: Float[Tensor, "m 2"],
    conics: Float[Tensor, "m 3"],
    opacities: Float[Tensor, " m"],
    colors: Float[Tensor, "m 3"],
    depths: Float[Tensor, " m"],
    cov2d: Float[Tensor, "m 3"],
    background: Float[Tensor, " 3"],
    width: int,
    height: int,
    pair_budget: int = DEFAULT_PAIR_BUDGET,
    keep_limit: int = DEFAULT_KEEP_LIMIT,
) -> tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w 1"], Float[Tensor, "h w 1"]]:
    """Composite one camera's splats, already sorted front to back (depth ascending)."""
    with torch.no_grad():
        boxes = pixel_boxes(means2d.detach(), cov2d.detach(), opacities.detach(), width, height)
        chunks = plan_chunks(boxes.cost, pair_budget)
    return _Composite.apply(
        means2d, conics, opacities, colors, depths, background, boxes, chunks, width, height, keep_limit
    )


def rasterize_torch(
    gaussians: Gaussians,
    cameras: Cameras,
    background: Float[Tensor, "c 3"],
    pair_budget: int = DEFAULT_PAIR_BUDGET,
    keep_limit: int = DEFAULT_KEEP_LIMIT,
) -> tuple[Float[Tensor, "c h w 3"], Float[Tensor, "c h w 1"], Float[Tensor, "c h w 1"]]:
    width, height = cameras.width, cameras.height
    world_to_cam = cameras.world_to_cam
    projected = project_gaussians(
        gaussians.means,
        gaussians.scales,
        gaussians.quats,
        gaussians.opacities,
        cameras.K,
        world_to_cam,
        width,
        height,
    )
    outputs = []
    for c in range(cameras.K.shape[0]):
        index = projected.visible[c].nonzero().squeeze(1)
        order = torch.sort(projected.depths[c, index].detach(), stable=True).indices
        index = index[order]
        means = gaussians.means[index]
        colors = sh_to_color(gaussians.sh[index], means - cameras.centers[c])
        outputs.append(
            composite(
                projected.means2d[c, index],
                projected.conics[c, index],
                gaussians.opacities[index],
                colors,
                projected.depths[c, index],
                projected.cov2d[c, index],
                background[c],
                width,
                height,
                pair_budget,
                keep_limit,
            )
        )
    color, alpha, depth = (torch.stack(parts) for parts in zip(*outputs))
    return color, alpha, depth
