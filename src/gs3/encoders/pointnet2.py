"""PointNet++ encoder: mmdetection3d's `PointNet2SASSG` (VoteNet's backbone) + propagation to every point.

Backbone. Four single-scale set-abstraction (SA) levels (2048/1024/512/256 points, radii 0.2/0.4/0.8/1.2 m,
64/32/16/16 neighbours) and two feature-propagation (FP) levels, with mmdet3d's module tree so
`backbone_state_dict()` has exactly its keys (`SA_modules.{i}.mlps.0.layer{j}.{conv,bn}.*`,
`FP_modules.{i}.mlps.layer{j}.{conv,bn}.*`; mmcv's ConvModule: 1×1 Conv2d without bias, BN2d, ReLU).
mmdet3d counts xyz in its `in_channels`; here `in_channels` is the number of per-point feature channels
(3 = RGB), so mmdet3d's value is `in_channels + 3` (VoteNet on ScanNet: xyz + height = in_channels=1 here).
`normalize_xyz` defaults to True, the value of mmdet3d's VoteNet config (its `PointSAModule` default is
False), so pre-trained first-layer weights see neighbour offsets on the scale VoteNet fine-tuning uses.

Per-point features. The backbone ends at the 1024-point level. Extra FP levels under `point_fp` (outside the
mmdet3d key set) carry features to the 2048-point level and then to every input point, where they are
concatenated with the point's own features; `head` projects to `out_channels` (128).

Point cap and batching. Each sample keeps at most `max_points` points (default 40 000: VoteNet feeds 20 000
points per single RGB-D frame on SUN RGB-D and 40 000 per ScanNet scene, so a 2-view sample gets the same
point density per view). The kept points are a random permutation (fresh in training, seeded in eval so
eval is reproducible); the shuffle also makes the ball query's "first k in index order" a random subset
of the ball, instead of the top rows of the image when points arrive in pixel order. Samples are padded
to the largest kept count for the first SA level only (padding is masked out of sampling and grouping);
from then on every sample has the same fixed number of points. The last FP level interpolates from the
2048 sampled points to *all* input points of the sample, kept or not, so nothing is dropped.

Farthest point sampling starts from the point farthest from the bounding-box centre, so in eval mode the
output is equivariant to permutations of the input points whenever no ball at the first level holds more
than its 64 neighbours (beyond that, which 64 are used depends on the random order).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from gs3.encoders.point_ops import (
    ball_query,
    farthest_point_sample,
    gather_points,
    group_points,
    interpolate_features,
)
from gs3.encoders.registry import ENCODERS
from gs3.encoders.resnet import BackboneLoadReport, load_backbone_subset
from gs3.errors import ConfigError

EVAL_SHUFFLE_SEED = 0


class ConvBNReLU(nn.Module):
    """mmcv ConvModule with a 1×1 Conv2d and BN2d: attribute names `conv` and `bn` as in mmdet3d."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        # mmcv's ConvModule initialisation: Kaiming-normal, fan-out, ReLU gain; BN γ=1, β=0.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def shared_mlp(channels: Sequence[int]) -> nn.Sequential:
    """Per-point MLP of ConvBNReLU layers named layer0, layer1, … (mmdet3d's naming)."""
    mlp = nn.Sequential()
    for index, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
        mlp.add_module(f"layer{index}", ConvBNReLU(c_in, c_out))
    return mlp


def apply_pointwise(mlp: nn.Sequential, features: Float[Tensor, "*batch n c"]) -> Float[Tensor, "*batch n d"]:
    """Run a 1×1-conv MLP on channels-last point features (as the (B, C, N, 1) maps mmdet3d uses)."""
    flat = features.reshape(-1, features.shape[-2], features.shape[-1])
    out = mlp(flat.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)
    return out.reshape(*features.shape[:-1], out.shape[-1])


class SetAbstraction(nn.Module):
    """mmdet3d PointSAModule (single-scale grouping, max pooling, use_xyz=True)."""

    def __init__(
        self, num_points: int, radius: float, num_neighbors: int, channels: Sequence[int], normalize_xyz: bool
    ) -> None:
        super().__init__()
        self.num_points = num_points
        self.radius = radius
        self.num_neighbors = num_neighbors
        self.normalize_xyz = normalize_xyz
        # Relative xyz is concatenated in front of the features (mmcv QueryAndGroup, use_xyz=True).
        self.mlps = nn.ModuleList([shared_mlp([channels[0] + 3, *channels[1:]])])

    def forward(
        self,
        xyz: Float[Tensor, "b n 3"],
        features: Float[Tensor, "b n c"] | None,
        lengths: Int[Tensor, " b"] | None = None,
    ) -> tuple[Float[Tensor, "b s 3"], Float[Tensor, "b s d"]]:
        centers = gather_points(xyz, farthest_point_sample(xyz, self.num_points, lengths))
        neighbors = ball_query(xyz, centers, self.radius, self.num_neighbors, lengths)
        grouped = group_points(xyz, centers, features, neighbors, self.radius if self.normalize_xyz else None)
        encoded = self.mlps[0](grouped.permute(0, 3, 1, 2))  # (b, d, s, k)
        return centers, encoded.amax(dim=-1).transpose(1, 2)


class FeaturePropagation(nn.Module):
    """mmdet3d PointFPModule: three-NN interpolation, concatenation with the target's features, MLP."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.mlps = shared_mlp(channels)

    def forward(
        self,
        target_xyz: Float[Tensor, "b n 3"],
        source_xyz: Float[Tensor, "b m 3"],
        target_features: Float[Tensor, "b n c1"] | None,
        source_features: Float[Tensor, "b m c2"],
    ) -> Float[Tensor, "b n d"]:
        merged = interpolate_features(target_xyz, source_xyz, source_features)
        if target_features is not None:
            merged = torch.cat([merged, target_features], dim=-1)
        return apply_pointwise(self.mlps, merged)


def split_offsets(offset: Int[Tensor, " b"], num_points: int) -> list[tuple[int, int]]:
    """(start, end) of every sample from Pointcept's cumulative end offsets."""
    ends = offset.tolist()
    if not ends or ends[-1] != num_points or any(b <= a for a, b in zip([0, *ends[:-1]], ends)):
        raise ValueError(
            f"PointNet2SASSG: offset {ends} must be strictly increasing cumulative counts ending at "
            f"N={num_points}"
        )
    return list(zip([0, *ends[:-1]], ends))


@ENCODERS.register("PointNet2SASSG")
class PointNet2SASSG(nn.Module):
    """VoteNet's PointNet++ backbone with per-point 128-d output; forward(coord, feat, offset) -> (N, 128)."""

    modality = "points"
    backbone_prefixes = ("SA_modules.", "FP_modules.")

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 128,
        num_points: Sequence[int] = (2048, 1024, 512, 256),
        radius: Sequence[float] = (0.2, 0.4, 0.8, 1.2),
        num_samples: Sequence[int] = (64, 32, 16, 16),
        sa_channels: Sequence[Sequence[int]] = (
            (64, 64, 128),
            (128, 128, 256),
            (128, 128, 256),
            (128, 128, 256),
        ),
        fp_channels: Sequence[Sequence[int]] = ((256, 256), (256, 256)),
        point_fp_channels: Sequence[Sequence[int]] = ((256, 128), (128, 128)),
        normalize_xyz: bool = True,
        max_points: int = 40000,
    ) -> None:
        super().__init__()
        num_sa, num_fp = len(sa_channels), len(fp_channels)
        if not len(num_points) == len(radius) == len(num_samples) == num_sa:
            raise ConfigError(
                "PointNet2SASSG: num_points, radius, num_samples and sa_channels differ in length"
            )
        if max_points < 1 or min(radius) <= 0:
            raise ConfigError(
                f"PointNet2SASSG: max_points ({max_points}) and radius {radius} must be positive"
            )
        if num_fp >= num_sa or len(point_fp_channels) != num_sa - num_fp:
            raise ConfigError(
                f"PointNet2SASSG: point_fp_channels needs {num_sa - num_fp} levels (SA minus FP levels; "
                "fp_channels must have fewer levels than sa_channels)"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.max_points = max_points
        self.SA_modules = nn.ModuleList()
        level_channels = [in_channels]  # feature channels per level, level 0 = the input points
        for i in range(num_sa):
            self.SA_modules.append(
                SetAbstraction(
                    num_points[i],
                    radius[i],
                    num_samples[i],
                    [level_channels[-1], *sa_channels[i]],
                    normalize_xyz,
                )
            )
            level_channels.append(sa_channels[i][-1])
        # mmdet3d's FP chain: from the last SA level up to level num_sa - num_fp.
        self.FP_modules = nn.ModuleList()
        source_channels = level_channels[num_sa]
        for i in range(num_fp):
            target_channels = level_channels[num_sa - 1 - i]
            self.FP_modules.append(FeaturePropagation([source_channels + target_channels, *fp_channels[i]]))
            source_channels = fp_channels[i][-1]
        # Our extension: the remaining levels down to the input points.
        self.point_fp = nn.ModuleList()
        for i, channels in enumerate(point_fp_channels):
            target_channels = level_channels[num_sa - num_fp - 1 - i]
            self.point_fp.append(FeaturePropagation([source_channels + target_channels, *channels]))
            source_channels = channels[-1]
        self.head = nn.Linear(source_channels, out_channels)

    @property
    def mmdet3d_in_channels(self) -> int:
        """The `in_channels` to give mmdet3d's PointNet2SASSG for these weights (it counts xyz)."""
        return self.in_channels + 3

    def _kept_indices(self, count: int, device: torch.device) -> Tensor:
        """Which points of a sample enter the SA levels, in a random order (seeded in eval)."""
        generator = None if self.training else torch.Generator().manual_seed(EVAL_SHUFFLE_SEED)
        order = torch.randperm(count, generator=generator)[: self.max_points]
        return order.to(device)

    def _pad_batch(
        self, coord: Tensor, feat: Tensor, ranges: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, M, ·) padded batch of kept points and their counts; padding repeats the sample's first kept
        point (finite values; masked out anyway)."""
        kept = [start + self._kept_indices(end - start, coord.device) for start, end in ranges]
        lengths = torch.tensor([len(k) for k in kept], device=coord.device)
        width = int(lengths.max())
        index = torch.stack([torch.cat([k, k[:1].expand(width - len(k))]) for k in kept])
        return coord[index], feat[index], lengths

    def forward(
        self, coord: Float[Tensor, "n 3"], feat: Float[Tensor, "n c"], offset: Int[Tensor, " b"]
    ) -> Float[Tensor, "n d"]:
        if coord.shape[-1] != 3 or feat.shape != (coord.shape[0], self.in_channels):
            raise ValueError(
                f"PointNet2SASSG: expected coord (N, 3) and feat (N, {self.in_channels}), "
                f"got {tuple(coord.shape)} and {tuple(feat.shape)}"
            )
        ranges = split_offsets(offset, coord.shape[0])
        xyz, features, lengths = self._pad_batch(coord, feat, ranges)
        level_xyz, level_features = self._abstract(xyz, features if self.in_channels > 0 else None, lengths)
        source_xyz, source_features = self._propagate_to_sampled_levels(level_xyz, level_features)
        point_features = self._propagate_to_all_points(coord, feat, ranges, source_xyz, source_features)
        return self.head(point_features)

    def _abstract(
        self, xyz: Float[Tensor, "b m 3"], features: Float[Tensor, "b m c"] | None, lengths: Int[Tensor, " b"]
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Positions and features of every level: the (padded) input points, then each SA level."""
        level_xyz, level_features = [xyz], [features]
        for i, module in enumerate(self.SA_modules):
            new_xyz, new_features = module(level_xyz[-1], level_features[-1], lengths if i == 0 else None)
            level_xyz.append(new_xyz)
            level_features.append(new_features)
        return level_xyz, level_features

    def _propagate_to_sampled_levels(
        self, level_xyz: list[Tensor], level_features: list[Tensor | None]
    ) -> tuple[Float[Tensor, "b s 3"], Float[Tensor, "b s d"]]:
        """mmdet3d's FP chain, then our FP levels down to the first SA level (2048 points)."""
        modules = [*self.FP_modules, *self.point_fp[:-1]]
        target = len(self.SA_modules)
        source_xyz, source_features = level_xyz[target], level_features[target]
        for module in modules:
            target -= 1
            source_features = module(level_xyz[target], source_xyz, level_features[target], source_features)
            source_xyz = level_xyz[target]
        return source_xyz, source_features

    def _propagate_to_all_points(
        self,
        coord: Float[Tensor, "n 3"],
        feat: Float[Tensor, "n c"],
        ranges: list[tuple[int, int]],
        source_xyz: Float[Tensor, "b m 3"],
        source_features: Float[Tensor, "b m d"],
    ) -> Float[Tensor, "n e"]:
        """The last FP level, on every input point (kept or not); its BN sees real points only."""
        interpolated = torch.cat(
            [
                interpolate_features(
                    coord[None, start:end], source_xyz[b : b + 1], source_features[b : b + 1]
                )[0]
                for b, (start, end) in enumerate(ranges)
            ]
        )
        if self.in_channels > 0:
            interpolated = torch.cat([interpolated, feat], dim=-1)
        return apply_pointwise(self.point_fp[-1].mlps, interpolated)

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """Exactly mmdet3d PointNet2SASSG's state dict (SA_modules.*, FP_modules.*)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.backbone_prefixes)}

    def load_backbone_state_dict(
        self, state_dict: Mapping[str, Tensor], strict: bool = True
    ) -> BackboneLoadReport:
        """Load mmdet3d PointNet2SASSG weights. A whole detector state dict works too: its `backbone.*`
        entries are used (prefix stripped) and the rest is listed in the report's `ignored`."""
        detector_rest: list[str] = []
        if any(key.startswith("backbone.") for key in state_dict):
            detector_rest = sorted(key for key in state_dict if not key.startswith("backbone."))
            state_dict = {
                key.removeprefix("backbone."): value
                for key, value in state_dict.items()
                if key.startswith("backbone.")
            }
        report = load_backbone_subset(
            self,
            list(self.backbone_state_dict()),
            state_dict,
            strict,
            source="PointNet2SASSG.load_backbone_state_dict",
        )
        report.ignored.extend(detector_rest)
        return report
