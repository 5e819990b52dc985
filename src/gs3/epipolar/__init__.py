"""Epipolar sampling and the epipolar transformer (pixelSplat's design) that lets each pixel's feature see
the other views along its viewing ray."""

from gs3.epipolar.sampler import (
    EpipolarSamples,
    EpipolarSegments,
    epipolar_segments,
    other_views,
    sample_epipolar,
)
from gs3.epipolar.transformer import DepthEncoding, EpipolarTransformer, MaskedCrossAttention

__all__ = [
    "DepthEncoding",
    "EpipolarSamples",
    "EpipolarSegments",
    "EpipolarTransformer",
    "MaskedCrossAttention",
    "epipolar_segments",
    "other_views",
    "sample_epipolar",
]
