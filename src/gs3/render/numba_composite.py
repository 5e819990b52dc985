"""Compiled compositing of the numba backend: tile binning, front-to-back compositing, back-to-front backward.

Everything here works on float64 numpy arrays of one camera's splats, already culled and sorted front to back
(depth ascending, ties in index order). A splat row of `params` is

    (mean_x, mean_y, conic_a, conic_b, conic_c, opacity, red, green, blue, depth)

with conic (a, b, c) = (inv00, inv01, inv11) of the 2D covariance (0.3 blur included). The rules are
DESIGN.md's (gsplat 1.5.3): σ = ½(a·dx² + c·dy²) + b·dx·dy at the pixel centre, skipped when σ < 0;
α = min(0.999, o·exp(−σ)), skipped when α < 1/255; front to back, stopping *before* the splat that would
bring T to ≤ 1e-4.

Work unit: the image is cut into tile×tile squares; each tile holds the depth-sorted list of splats whose
pixel box (the pixels whose centre can have α ≥ 1/255, as the torch backend's `pixel_boxes`) overlaps it.
Inside a tile a splat is evaluated only on its box ∩ tile, so the number of (splat, pixel) evaluations is
that of the exact pixel boxes (no tile rounding); a finished pixel (T rule fired) is skipped, a row
segment whose pixels have all finished is skipped whole (a bit mask of live pixels per tile row, which
limits tiles to 62 pixels), and a tile whose pixels have all finished stops reading its list. The
compositing kernels take a range of tiles, so that the caller can run ranges on several threads (they
release the GIL); a tile writes only its own pixels, and the backward writes one gradient row per (tile,
splat) entry, summed per splat afterwards in a fixed order: no atomics, bit-for-bit reproducible whatever
the thread count.

exp(−σ) along a box row: σ is quadratic in the column, so exp(−σ(u + 1)) = exp(−σ(u))·rᵤ with
rᵤ₊₁ = rᵤ·exp(−a): three exp calls per row instead of one per pixel (exp was ~40 % of the forward). The
recurrence is used only when σ ≤ 300 at both ends of the row segment (then everywhere on it: σ is convex),
so nothing under- or overflows; its relative error is ≤ tile²·2⁻⁵³ (3e-14 for 16). Other rows call exp
per pixel (with 16-pixel tiles they cannot hold a visible pixel, the 0.3 px² blur keeps σ from falling
from 300 to ln(255) within 16 pixels, but larger tiles can).
Forward and backward share `_row_start` and the same loop order, so they see bit-identical α.

Backward (as gsplat's CUDA backward): each pixel walks its list back to front from its final transmittance
T_N, recovering Tᵢ = Tᵢ₊₁ / (1 − αᵢ) and carrying the suffix sᵢ = Σ_{j>i} wⱼ(g_C·cⱼ + g_D·zⱼ) +
T_N·(g_C·bg − g_A), so that ∂L/∂αᵢ = Tᵢ·(g_C·cᵢ + g_D·zᵢ) − sᵢ / (1 − αᵢ). α is recomputed, never stored:
nothing of size splats × pixels exists. All arithmetic is float64 (the division above loses up to
log10(1/(1−0.999)) = 3 digits, harmless in float64).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
MAX_EXTEND = 3.33
BOX_MARGIN = 1e-3  # pixels: float rounding at the ellipse's edge stays on the inclusive side
NUM_PARAMS = 10

_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_OPTIONS)
def pixel_box(mx, my, opacity, cov_xx, cov_yy, width, height):
    """First/last pixel column and row whose centre can have α ≥ 1/255 (as the torch backend's
    `pixel_boxes`; clipped to the image, last < first when empty): extend = min(3.33, √(2 ln(255·o)))
    standard deviations per axis, widened by a relative 1e-5 and 1e-3 px against rounding."""
    extend = min(math.sqrt(2.0 * math.log(max(opacity / ALPHA_MIN, 1.0))), MAX_EXTEND)
    rx = extend * math.sqrt(max(cov_xx, 0.0)) * (1 + 1e-5) + BOX_MARGIN
    ry = extend * math.sqrt(max(cov_yy, 0.0)) * (1 + 1e-5) + BOX_MARGIN
    return (
        int(min(max(math.ceil(mx - rx - 0.5), 0.0), width)),
        int(min(max(math.floor(mx + rx - 0.5), -1.0), width - 1)),
        int(min(max(math.ceil(my - ry - 0.5), 0.0), height)),
        int(min(max(math.floor(my + ry - 0.5), -1.0), height - 1)),
    )


@njit(**_OPTIONS)
def bin_tiles(boxes, width, height, tile):
    """Depth-sorted splat lists per tile (CSR: tile t holds ids[offsets[t]:offsets[t + 1]], in splat order,
    which is depth order)."""
    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    counts = np.zeros(tiles_x * tiles_y + 1, dtype=np.int64)
    m = boxes.shape[0]
    for i in range(m):
        if boxes[i, 1] < boxes[i, 0] or boxes[i, 3] < boxes[i, 2]:
            continue
        for ty in range(boxes[i, 2] // tile, boxes[i, 3] // tile + 1):
            for tx in range(boxes[i, 0] // tile, boxes[i, 1] // tile + 1):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    cursor = offsets[:-1].copy()
    ids = np.empty(offsets[-1], dtype=np.int32)
    for i in range(m):
        if boxes[i, 1] < boxes[i, 0] or boxes[i, 3] < boxes[i, 2]:
            continue
        for ty in range(boxes[i, 2] // tile, boxes[i, 3] // tile + 1):
            for tx in range(boxes[i, 0] // tile, boxes[i, 1] // tile + 1):
                t = ty * tiles_x + tx
                ids[cursor[t]] = i
                cursor[t] += 1
    return offsets, ids


_RECURRENCE_MAX_SIGMA = 300.0


@njit(**_OPTIONS)
def _sigma(ca, cb, cc, dx, dy):
    return 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy


@njit(**_OPTIONS)
def _row_start(ca, cb, cc, dx_first, dx_last, dy):
    """exp(−σ) at the row's first column, its first ratio r, and whether the recurrence is safe."""
    s_first = _sigma(ca, cb, cc, dx_first, dy)
    safe = s_first <= _RECURRENCE_MAX_SIGMA and _sigma(ca, cb, cc, dx_last, dy) <= _RECURRENCE_MAX_SIGMA
    if not safe:
        return 0.0, 0.0, False
    return math.exp(-s_first), math.exp(-(ca * dx_first + 0.5 * ca + cb * dy)), True


@njit(**_OPTIONS)
def composite_forward(
    first, last, params, background, boxes, offsets, ids, width, height, tile, out, t_final, stop, counts
):
    """Front-to-back compositing of tiles [first, last). Writes per pixel (row-major): `out` (P, 5) =
    colour (3, background included), expected depth, alpha; `t_final` (P,) the final transmittance; `stop`
    (P,) the position in its tile's list at which the pixel stopped (list length when it never did); and
    per tile `counts` (tiles, 2): the (splat, live pixel) evaluations and the composited pairs."""
    tiles_x = (width + tile - 1) // tile
    for t in range(first, last):
        x0, y0 = (t % tiles_x) * tile, (t // tiles_x) * tile
        tw, th = min(tile, width - x0), min(tile, height - y0)
        start, end = offsets[t], offsets[t + 1]
        length = end - start
        trans = np.ones(tile * tile)
        acc = np.zeros((4, tile * tile))  # Σ w·(r, g, b, z)
        stop_at = np.full(tile * tile, length, dtype=np.int32)
        live = tw * th
        row_live = np.zeros(tile, dtype=np.int64)  # per tile row, a bit per live pixel (tile ≤ 62)
        for ly in range(th):
            row_live[ly] = (np.int64(1) << tw) - 1
        evaluated = composited = 0
        for k in range(start, end):
            if live == 0:
                break
            i = ids[k]
            mx, my, ca, cb, cc, opacity = (
                params[i, 0],
                params[i, 1],
                params[i, 2],
                params[i, 3],
                params[i, 4],
                params[i, 5],
            )
            red, green, blue, depth = params[i, 6], params[i, 7], params[i, 8], params[i, 9]
            u_first, u_last = max(boxes[i, 0], x0), min(boxes[i, 1], x0 + tw - 1)
            q = math.exp(-ca)
            dx_first, dx_last = u_first + 0.5 - mx, u_last + 0.5 - mx
            position = np.int32(k - start)
            segment = ((np.int64(1) << (u_last - u_first + 1)) - 1) << (u_first - x0)
            for v in range(max(boxes[i, 2], y0), min(boxes[i, 3], y0 + th - 1) + 1):
                if row_live[v - y0] & segment == 0:  # every pixel of this row segment has stopped
                    continue
                dy = v + 0.5 - my
                row = (v - y0) * tile - x0
                vis_next, r, recurrence = _row_start(ca, cb, cc, dx_first, dx_last, dy)
                for u in range(u_first, u_last + 1):
                    p = row + u
                    vis = vis_next
                    vis_next *= r
                    r *= q
                    if stop_at[p] != length:
                        continue
                    evaluated += 1
                    dx = u + 0.5 - mx
                    sigma = _sigma(ca, cb, cc, dx, dy)
                    if not recurrence:
                        vis = math.exp(-sigma)
                    alpha = opacity * vis
                    if sigma < 0.0 or alpha < ALPHA_MIN:
                        continue
                    alpha = min(alpha, ALPHA_MAX)
                    t_before = trans[p]
                    t_after = t_before * (1.0 - alpha)
                    if t_after <= T_MIN:
                        stop_at[p] = position
                        live -= 1
                        row_live[v - y0] &= ~(np.int64(1) << (u - x0))
                        continue
                    weight = alpha * t_before
                    acc[0, p] += weight * red
                    acc[1, p] += weight * green
                    acc[2, p] += weight * blue
                    acc[3, p] += weight * depth
                    trans[p] = t_after
                    composited += 1
        counts[t, 0] = evaluated
        counts[t, 1] = composited
        for ly in range(th):
            for lx in range(tw):
                p = ly * tile + lx
                pixel = (y0 + ly) * width + x0 + lx
                for f in range(3):
                    out[pixel, f] = acc[f, p] + trans[p] * background[f]
                out[pixel, 3] = acc[3, p]
                out[pixel, 4] = 1.0 - trans[p]
                t_final[pixel] = trans[p]
                stop[pixel] = stop_at[p]


@njit(**_OPTIONS)
def composite_backward(
    first,
    last,
    params,
    background,
    boxes,
    offsets,
    ids,
    width,
    height,
    tile,
    t_final,
    stop,
    grad_out,
    entry_grads,
):
    """Gradients w.r.t. the splats' params from tiles [first, last), one row per (tile, splat) list entry
    into `entry_grads` (E, 10) = (mean_x, mean_y, conic_a, conic_b, conic_c, opacity, red, green, blue,
    depth); rows of entries no pixel reached are left alone (zero them first). `grad_out` (P, 5) holds
    ∂L/∂(colour, depth, alpha) per pixel; the background's gradient (Σ g_C·T_N) is left to the caller."""
    tiles_x = (width + tile - 1) // tile
    for t in range(first, last):
        x0, y0 = (t % tiles_x) * tile, (t // tiles_x) * tile
        tw, th = min(tile, width - x0), min(tile, height - y0)
        start = offsets[t]
        trans = np.empty(tile * tile)
        suffix = np.empty(tile * tile)
        grad = np.zeros((4, tile * tile))  # ∂L/∂(r, g, b, depth) of the pixel
        stop_at = np.zeros(tile * tile, dtype=np.int32)
        reached = 0
        row_reached = np.zeros(tile, dtype=np.int32)  # per tile row, the furthest list position reached
        for ly in range(th):
            for lx in range(tw):
                p = ly * tile + lx
                pixel = (y0 + ly) * width + x0 + lx
                trans[p] = t_final[pixel]
                stop_at[p] = stop[pixel]
                reached = max(reached, stop[pixel])
                row_reached[ly] = max(row_reached[ly], stop[pixel])
                for f in range(4):
                    grad[f, p] = grad_out[pixel, f]
                g_background = (
                    grad_out[pixel, 0] * background[0]
                    + grad_out[pixel, 1] * background[1]
                    + grad_out[pixel, 2] * background[2]
                )
                suffix[p] = t_final[pixel] * (g_background - grad_out[pixel, 4])
        for k in range(start + reached - 1, start - 1, -1):  # entries behind every pixel's stop: skipped
            i = ids[k]
            mx, my, ca, cb, cc, opacity = (
                params[i, 0],
                params[i, 1],
                params[i, 2],
                params[i, 3],
                params[i, 4],
                params[i, 5],
            )
            red, green, blue, depth = params[i, 6], params[i, 7], params[i, 8], params[i, 9]
            u_first, u_last = max(boxes[i, 0], x0), min(boxes[i, 1], x0 + tw - 1)
            q = math.exp(-ca)
            dx_first, dx_last = u_first + 0.5 - mx, u_last + 0.5 - mx
            position = k - start
            g_mx = g_my = g_a = g_b = g_c = g_o = g_red = g_green = g_blue = g_depth = 0.0
            for v in range(max(boxes[i, 2], y0), min(boxes[i, 3], y0 + th - 1) + 1):
                if position >= row_reached[v - y0]:  # every pixel of this row stopped before it
                    continue
                dy = v + 0.5 - my
                row = (v - y0) * tile - x0
                vis_next, r, recurrence = _row_start(ca, cb, cc, dx_first, dx_last, dy)
                for u in range(u_first, u_last + 1):
                    p = row + u
                    vis = vis_next
                    vis_next *= r
                    r *= q
                    if position >= stop_at[p]:
                        continue
                    dx = u + 0.5 - mx
                    sigma = _sigma(ca, cb, cc, dx, dy)
                    if not recurrence:
                        vis = math.exp(-sigma)
                    raw = opacity * vis
                    if sigma < 0.0 or raw < ALPHA_MIN:
                        continue
                    alpha = min(raw, ALPHA_MAX)
                    one_minus = 1.0 - alpha
                    t_before = trans[p] / one_minus
                    weight = alpha * t_before
                    gr, gg, gb, gz = grad[0, p], grad[1, p], grad[2, p], grad[3, p]
                    direct = gr * red + gg * green + gb * blue + gz * depth
                    g_alpha = t_before * direct - suffix[p] / one_minus
                    suffix[p] += weight * direct
                    trans[p] = t_before
                    g_red += weight * gr
                    g_green += weight * gg
                    g_blue += weight * gb
                    g_depth += weight * gz
                    if raw <= ALPHA_MAX:  # no gradient through the 0.999 cap (as gsplat)
                        g_o += g_alpha * vis
                        g_sigma = -g_alpha * raw
                        g_mx -= g_sigma * (ca * dx + cb * dy)
                        g_my -= g_sigma * (cb * dx + cc * dy)
                        g_a += 0.5 * g_sigma * dx * dx
                        g_b += g_sigma * dx * dy
                        g_c += 0.5 * g_sigma * dy * dy
            row_grads = entry_grads[k]
            row_grads[0], row_grads[1], row_grads[2], row_grads[3], row_grads[4] = g_mx, g_my, g_a, g_b, g_c
            row_grads[5], row_grads[6], row_grads[7] = g_o, g_red, g_green
            row_grads[8], row_grads[9] = g_blue, g_depth


@njit(**_OPTIONS)
def sum_entries(entry_grads, ids, index, grads):
    """Adds the per-entry gradient rows into `grads` (N, 10), row index[splat] per entry (Gaussian order,
    so that the projection's backward reads it sequentially); entry order, so deterministic."""
    for k in range(ids.shape[0]):
        row = index[ids[k]]
        for f in range(NUM_PARAMS):
            grads[row, f] += entry_grads[k, f]
