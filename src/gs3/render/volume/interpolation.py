"""Trilinear lookup in dense feature volumes, differentiable to any order in both the values and the points.

A NeuS field needs the SDF's gradient with respect to the sample positions inside the loss (the eikonal
term and the slope d·∇f of every section), so the lookup must support double backward. `F.grid_sample`
does not (its backward has no derivative); the obvious pure-torch version (gather the 8 corners, weight,
sum) does, but keeps an (N, 8, C) copy of the corners for backward. Here two autograd Functions keep only
the volume itself (shared), the (N, 8) corner indices and weights and, in backward, the incoming gradient:

    CornerSum(V, idx, w)[n]    = Σ_k w[n,k] · V[idx[n,k]]            (the lookup)
    CornerDot(V, idx, g)[n, k] = V[idx[n,k]] · g[n]                  (its derivative w.r.t. w)

Each one's backward is written with the other (∂CornerSum/∂w = CornerDot, ∂CornerDot/∂g = CornerSum) and
scatter-adds, all ordinary differentiable operations, so autograd differentiates backward again when
`create_graph=True`. Corners are processed one at a time: the transient is one (N, C) gather, not eight.
A backward skips the gradients the running backward pass will not use: `autograd.grad(sdf, points,
create_graph=True)` needs ∂/∂w only, and building ∂/∂V there would also record it in the graph (eight
(N, C) products kept until the step ends). PonderV2 does the same job with a custom CUDA sampler.

Coordinates are continuous cell indices: cell i's value sits at coordinate i; coordinates are clamped to
[0, size − 1] per axis (so outside the outermost cell centres the value is the border's, with zero gradient
with respect to the point): `F.grid_sample(align_corners=True, padding_mode="border")` in index units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from torch.autograd import Function

CORNERS = 8


def _rows(values: Tensor, index: Tensor) -> Tensor:
    # F.embedding is torch's fastest row gather on the CPU (several times index_select's speed for short rows)
    return F.embedding(index, values)


def _corner_sum(values: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    out = values.new_zeros(index.shape[0], values.shape[1])
    for k in range(CORNERS):
        out = out + weights[:, k, None] * _rows(values, index[:, k])
    return out


def _corner_dot(values: Tensor, index: Tensor, vectors: Tensor) -> Tensor:
    columns = [(_rows(values, index[:, k]) * vectors).sum(dim=-1) for k in range(CORNERS)]
    return torch.stack(columns, dim=-1)


def _scatter_corners(vectors: Tensor, index: Tensor, weights: Tensor, num_values: int) -> Tensor:
    """Σ_k scatter-add of weights[:, k] · vectors into rows index[:, k] of a (num_values, C) zero tensor."""
    out = vectors.new_zeros(num_values, vectors.shape[1])
    for k in range(CORNERS):
        out.index_add_(0, index[:, k], weights[:, k, None] * vectors)
    return out


def _wanted(tensor: Tensor, needs_grad: bool) -> bool:
    """Whether the running backward pass will use a gradient for `tensor` (ctx.needs_input_grad only says
    that it requires grad). The engine cannot tell for a leaf inside autograd.grad: then assume it will."""
    if not needs_grad:
        return False
    try:
        return torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(tensor).node)
    except (AttributeError, RuntimeError):
        return True


class CornerSum(Function):
    @staticmethod
    def forward(ctx, values: Tensor, index: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(values, index, weights)
        return _corner_sum(values, index, weights)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        values, index, weights = ctx.saved_tensors
        grad_values = grad_weights = None
        if _wanted(values, ctx.needs_input_grad[0]):
            grad_values = _scatter_corners(grad, index, weights, values.shape[0])
        if _wanted(weights, ctx.needs_input_grad[2]):
            grad_weights = CornerDot.apply(values, index, grad)
        return grad_values, None, grad_weights


class CornerDot(Function):
    @staticmethod
    def forward(ctx, values: Tensor, index: Tensor, vectors: Tensor) -> Tensor:
        ctx.save_for_backward(values, index, vectors)
        return _corner_dot(values, index, vectors)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        values, index, vectors = ctx.saved_tensors
        grad_values = grad_vectors = None
        if _wanted(values, ctx.needs_input_grad[0]):
            grad_values = _scatter_corners(vectors, index, grad, values.shape[0])
        if _wanted(vectors, ctx.needs_input_grad[2]):
            grad_vectors = CornerSum.apply(values, index, grad)
        return grad_values, None, grad_vectors


def trilinear_corners(
    coords: Float[Tensor, "n 3"], shape: tuple[int, int, int], base: Int[Tensor, " n"] | None = None
) -> tuple[Int[Tensor, "n 8"], Float[Tensor, "n 8"]]:
    """Row indices into a flattened (…, X, Y, Z) volume (row = base + (x·Y + y)·Z + z) and trilinear
    weights of the 8 cells around each point; differentiable with respect to `coords`. Every size >= 2."""
    if min(shape) < 2:
        raise ValueError(f"trilinear_corners: every grid size must be >= 2, got {shape}")
    sizes = torch.tensor(shape, device=coords.device)
    clamped = torch.minimum(coords.clamp_min(0.0), (sizes - 1).to(coords.dtype))
    low = torch.minimum(clamped.detach().floor().long(), sizes - 2)
    fraction = clamped - low.to(coords.dtype)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], device=coords.device)
    origin = (low * strides).sum(dim=-1) + (0 if base is None else base)
    indices, weights = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                indices.append(origin + dx * strides[0] + dy * strides[1] + dz)
                wx = fraction[:, 0] if dx else 1 - fraction[:, 0]
                wy = fraction[:, 1] if dy else 1 - fraction[:, 1]
                wz = fraction[:, 2] if dz else 1 - fraction[:, 2]
                weights.append(wx * wy * wz)
    return torch.stack(indices, dim=-1), torch.stack(weights, dim=-1)


def trilinear_lookup(
    values: Float[Tensor, "m c"],
    coords: Float[Tensor, "n 3"],
    shape: tuple[int, int, int],
    base: Int[Tensor, " n"] | None = None,
) -> Float[Tensor, "n c"]:
    """Trilinear interpolation of channels-last volumes flattened to rows (`values`, (B·X·Y·Z, C)) at
    continuous cell coordinates; `base` is each point's first row (b·X·Y·Z for volume b)."""
    index, weights = trilinear_corners(coords, shape, base)
    return CornerSum.apply(values, index, weights.to(values.dtype))
