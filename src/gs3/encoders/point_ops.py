"""Pure-torch point-cloud operators of PointNet++: farthest point sampling, ball query, grouping and
three-nearest-neighbour inverse-distance interpolation.

They follow the semantics of the CUDA kernels in mmcv / pointnet2 (so VoteNet behaves the same), with two
documented differences:

- farthest point sampling starts from the point farthest from the centre of the bounding box instead of
  from index 0, which makes the sampled *set and order* independent of the order of the input points (the
  bounding box is an order-free quantity, unlike a float sum such as the centroid);
- padded batches are supported through per-sample `lengths`: points at index >= length are never sampled,
  grouped or used as neighbours.

Everything is vectorised over the points; only farthest point sampling loops, once per sampled point.
Distances are formed as explicit coordinate differences (not |a|² + |b|² − 2ab), as the kernels do, so the
radius test has no cancellation error. Large distance matrices are processed in chunks to bound memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor

# Upper bound on the elements of one temporary (batch × queries × points) distance block.
_CHUNK_ELEMENTS = 1 << 24


def _valid_mask(lengths: Int[Tensor, " b"] | None, batch: int, n: int, device: torch.device) -> Tensor | None:
    if lengths is None:
        return None
    return torch.arange(n, device=device)[None, :] < lengths.to(device)[:, None].expand(batch, 1)


def _distances(queries: Float[Tensor, "b m 3"], points: Float[Tensor, "b n 3"]) -> Float[Tensor, "b m n"]:
    """Euclidean distances from coordinate differences (cdist's exact mode, no |a|² + |b|² − 2ab)."""
    return torch.cdist(queries, points, compute_mode="donot_use_mm_for_euclid_dist")


def _query_chunk(batch: int, n: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, batch * n))


@contextmanager
def _single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run CPU kernels on one thread. Each sampling step is ~10 tiny kernels, for which handing work to
    intra-op threads costs more than it saves (measured: 40k points → 2048 samples takes 0.5 s on one
    thread, 5–20 s on two when the cores are shared with other processes)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def farthest_point_sample(
    xyz: Float[Tensor, "b n 3"], num_samples: int, lengths: Int[Tensor, " b"] | None = None
) -> Int[Tensor, "b s"]:
    """Indices of `num_samples` points chosen greedily, each the farthest from those already chosen.

    Starts at the point farthest from its sample's bounding-box centre (ties: lowest index). Distances are
    squared Euclidean in the input dtype. Points at index >= lengths[b] are never chosen. When a sample has
    fewer valid points than `num_samples`, the remaining picks repeat valid points (all remaining distances
    are 0 and the lowest index among them wins), as the CUDA kernel does.
    """
    batch, n, _ = xyz.shape
    valid = _valid_mask(lengths, batch, n, xyz.device)
    if valid is None:
        low, high = xyz.amin(dim=1), xyz.amax(dim=1)
    else:
        inf = torch.tensor(float("inf"), dtype=xyz.dtype, device=xyz.device)
        low = torch.where(valid[..., None], xyz, inf).amin(dim=1)
        high = torch.where(valid[..., None], xyz, -inf).amax(dim=1)
    centre = (low + high) / 2
    from_centre = (xyz - centre[:, None]).square().sum(-1)
    # -1 marks padding: below every true distance, so never the arg-max.
    min_distance = torch.full((batch, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    if valid is not None:
        from_centre = torch.where(valid, from_centre, -1.0)
        min_distance = torch.where(valid, min_distance, -1.0)
    chosen = torch.empty(batch, num_samples, dtype=torch.long, device=xyz.device)
    current = from_centre.argmax(dim=1)
    # Contiguous coordinate planes: each step then streams three dense (b, n) arrays.
    xs, ys, zs = (xyz[..., axis].contiguous() for axis in range(3))
    with _single_cpu_thread(xyz.device):
        for step in range(num_samples):
            chosen[:, step] = current
            pick = current[:, None]
            distance = (xs - xs.gather(1, pick)).square()
            distance += (ys - ys.gather(1, pick)).square()
            distance += (zs - zs.gather(1, pick)).square()
            torch.minimum(min_distance, distance, out=min_distance)
            current = min_distance.argmax(dim=1)
    return chosen


@torch.no_grad()
def ball_query(
    xyz: Float[Tensor, "b n 3"],
    centers: Float[Tensor, "b m 3"],
    radius: float,
    num_neighbors: int,
    lengths: Int[Tensor, " b"] | None = None,
) -> Int[Tensor, "b m k"]:
    """For each centre, the first `num_neighbors` point indices (in index order) with d < radius.

    Unfilled slots repeat the first index found (0 when none is found), as mmcv's `ball_query` does.
    Points at index >= lengths[b] are ignored.
    """
    if radius <= 0:
        raise ValueError(f"ball_query: radius must be positive, got {radius}")
    batch, n, _ = xyz.shape
    m = centers.shape[1]
    valid = _valid_mask(lengths, batch, n, xyz.device)
    k = min(num_neighbors, n)
    # Index order as a float key for topk: float32 is exact below 2^24 points.
    positions = torch.arange(n, device=xyz.device, dtype=torch.float32 if n < 1 << 24 else torch.float64)
    out = torch.empty(batch, m, num_neighbors, dtype=torch.long, device=xyz.device)
    step = _query_chunk(batch, n)
    for start in range(0, m, step):
        distance = _distances(centers[:, start : start + step], xyz)
        inside = distance < radius  # includes d = 0, which mmcv also accepts
        if valid is not None:
            inside &= valid[:, None, :]
        # Points outside the ball get +inf, so the k smallest keys are the first k inside, in order.
        key = torch.where(inside, positions, float("inf"))
        first_keys, first = key.topk(k, dim=-1, largest=False, sorted=True)
        found = first_keys.isfinite()
        first = torch.where(found, first, first[..., :1])
        first = torch.where(found[..., :1], first, 0)
        if k < num_neighbors:
            first = torch.cat([first, first[..., :1].expand(-1, -1, num_neighbors - k)], dim=-1)
        out[:, start : start + step] = first
    return out


def gather_points(values: Float[Tensor, "b n c"], index: Int[Tensor, "b *idx"]) -> Float[Tensor, "b *idx c"]:  # noqa: UP037, F821
    """values[b, index[b, ...]] for every batch element (differentiable w.r.t. values)."""
    batch, _, channels = values.shape
    flat = index.reshape(batch, -1)
    gathered = values.gather(1, flat[..., None].expand(-1, -1, channels))
    return gathered.reshape(*index.shape, channels)


def group_points(
    xyz: Float[Tensor, "b n 3"],
    centers: Float[Tensor, "b m 3"],
    features: Float[Tensor, "b n c"] | None,
    index: Int[Tensor, "b m k"],
    normalize_radius: float | None = None,
) -> Float[Tensor, "b m k c3"]:
    """Neighbour offsets (xyz − centre, divided by `normalize_radius` if given) followed by their features.

    The channel order [Δxyz, features] is mmcv's `QueryAndGroup(use_xyz=True)`.
    """
    offsets = gather_points(xyz, index) - centers[:, :, None, :]
    if normalize_radius is not None:
        offsets = offsets / normalize_radius
    if features is None:
        return offsets
    return torch.cat([offsets, gather_points(features, index)], dim=-1)


@torch.no_grad()
def three_nn(
    targets: Float[Tensor, "b n 3"], sources: Float[Tensor, "b m 3"]
) -> tuple[Float[Tensor, "b n 3"], Int[Tensor, "b n 3"]]:
    """Euclidean distances and indices of each target's 3 nearest sources, nearest first.

    With fewer than 3 sources the nearest ones repeat (their weights then add up, as they should).
    """
    batch, n, _ = targets.shape
    m = sources.shape[1]
    k = min(3, m)
    distances = torch.empty(batch, n, 3, dtype=targets.dtype, device=targets.device)
    indices = torch.empty(batch, n, 3, dtype=torch.long, device=targets.device)
    step = _query_chunk(batch, m)
    for start in range(0, n, step):
        distance = _distances(targets[:, start : start + step], sources)
        nearest_distance, nearest = distance.topk(k, dim=-1, largest=False, sorted=True)
        if k < 3:
            repeat = torch.arange(3, device=targets.device) % k
            nearest_distance, nearest = nearest_distance[..., repeat], nearest[..., repeat]
        distances[:, start : start + step] = nearest_distance
        indices[:, start : start + step] = nearest
    return distances, indices


def inverse_distance_weights(distances: Float[Tensor, "b n 3"]) -> Float[Tensor, "b n 3"]:
    """PointNet++ interpolation weights 1/(d + 1e-8), normalised to sum to 1 (mmdet3d's PointFPModule)."""
    reciprocal = 1.0 / (distances + 1e-8)
    return reciprocal / reciprocal.sum(dim=-1, keepdim=True)


def three_interpolate(
    source_features: Float[Tensor, "b m c"], index: Int[Tensor, "b n 3"], weights: Float[Tensor, "b n 3"]
) -> Float[Tensor, "b n c"]:
    """Weighted sum of the three indexed source features for every target."""
    return (gather_points(source_features, index) * weights[..., None]).sum(dim=-2)


def interpolate_features(
    targets: Float[Tensor, "b n 3"], sources: Float[Tensor, "b m 3"], source_features: Float[Tensor, "b m c"]
) -> Float[Tensor, "b n c"]:
    """Three-NN inverse-distance interpolation of source features at the target positions."""
    distances, index = three_nn(targets, sources)
    return three_interpolate(source_features, index, inverse_distance_weights(distances))
