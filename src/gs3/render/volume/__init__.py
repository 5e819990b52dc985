"""Volume rendering for the NeRF pre-training baseline (Ponder / PonderV2): geometry only, no learning.

    origins, directions, z_per_t = pixel_rays(K, cam_to_world, pixels)         # unit directions
    t_enter, t_exit, hit = ray_box_intersection(origins, directions, lo, hi)
    edges = hierarchical_edges(near, far, 96, 36, 1, section_weights, stratified=True)
    t, deltas = section_midpoints(edges)
    alphas = neus_alphas(sdf, slope, deltas, inv_s)   # or density_alphas(sigma, deltas)
    weights, final_T = compositing_weights(alphas)
    color = composite(weights, colors, final_T, background)

The learned parts (feature volume, 3D network, field) are in `gs3.ponder`; they call these functions.
"""

from gs3.render.volume.compositing import (
    composite,
    compositing_weights,
    density_alphas,
    neus_alphas,
    neus_edge_alphas,
)
from gs3.render.volume.interpolation import trilinear_corners, trilinear_lookup
from gs3.render.volume.rays import pixel_rays, ray_box_intersection
from gs3.render.volume.sampling import (
    hierarchical_edges,
    importance_positions,
    merge_edges,
    section_midpoints,
    uniform_edges,
)

__all__ = [
    "composite",
    "compositing_weights",
    "density_alphas",
    "hierarchical_edges",
    "importance_positions",
    "merge_edges",
    "neus_alphas",
    "neus_edge_alphas",
    "pixel_rays",
    "ray_box_intersection",
    "section_midpoints",
    "trilinear_corners",
    "trilinear_lookup",
    "uniform_edges",
]
