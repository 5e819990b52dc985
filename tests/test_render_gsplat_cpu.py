"""gs3's gsplat path checked without a GPU. The exact keyword arguments `gsplat_backend.rasterize_gsplat`
passes to `gsplat.rasterization` (`gsplat_arguments`: viewmats from cam_to_world, Ks, wxyz quaternions,
eps2d, near plane, SH layout and degree, tile size) go into gsplat 1.5.3's pure-PyTorch reference functions
(`gsplat.cuda._torch_impl`), which run on the CPU, and the results are held to gs3's own projection (torch
and numba), SH colours and compositing support. Skipped when gsplat is not installed."""

from __future__ import annotations

import math

import pytest
import torch

from gs3.cameras import Cameras
from gs3.gaussians import Gaussians
from gs3.render.gsplat_backend import gsplat_arguments, gsplat_available
from gs3.render.numba_backend import numba_available
from gs3.render.projection import ALPHA_THRESHOLD, project_gaussians
from gs3.render.sh import sh_to_color

if not gsplat_available():
    pytest.skip("gsplat is not installed (pip install 'gs3[dev]')", allow_module_level=True)

from gsplat.cuda import _torch_impl as gsplat_ref

WIDTH, HEIGHT = 160, 120


def scene(seed: int, degree: int) -> tuple[Gaussians, Cameras, torch.Tensor]:
    """test_render's awkward random scene (behind the camera, at the near plane, off screen, thin, huge,
    equal depths, opacities near 1/255) in float64, seen by three 160×120 cameras."""
    from test_render import make_cameras, random_scene

    g = random_scene(seed, n=200, degree=degree, dtype=torch.float64)
    cameras = make_cameras(3, torch.float64, WIDTH, HEIGHT)
    cameras.K = cameras.K * torch.tensor([[4.0, 1, 1], [1, 4.0, 1], [1, 1, 1]], dtype=torch.float64)
    background = torch.tensor([[0.1, 0.2, 0.3]] * 3, dtype=torch.float64)
    return g, cameras, background


def gsplat_projection(args: dict) -> tuple[torch.Tensor, ...]:
    """gsplat's projection from the arguments gs3 passes (covariances from its own quat/scale code)."""
    covars, _ = gsplat_ref._quat_scale_to_covar_preci(args["quats"], args["scales"], compute_preci=False)
    radii, means2d, depths, conics, _ = gsplat_ref._fully_fused_projection(
        args["means"],
        covars,
        args["viewmats"],
        args["Ks"],
        args["width"],
        args["height"],
        eps2d=args["eps2d"],
        near_plane=args["near_plane"],
        far_plane=args["far_plane"],
        camera_model=args["camera_model"],
    )
    return radii, means2d, depths, conics


def cuda_radii(args: dict, means2d: torch.Tensor, conics: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The radii gsplat's CUDA projection (ProjectionEWA3DGSFused.cu, with opacities passed, as
    `rasterization` does) computes where the reference uses a fixed 3.33: extend = min(3.33,
    √(2 ln(o / (1/255)))) standard deviations, 0 when o < 1/255 or the box misses the image."""
    a, b, c = conics.unbind(-1)
    det = a * c - b * b
    var_x, var_y = c / det, a / det  # the diagonal of the 2D covariance (blur included)
    opacity = args["opacities"][None].expand_as(a)
    extend = torch.clamp_max(torch.sqrt(2 * torch.log((opacity / ALPHA_THRESHOLD).clamp_min(1))), 3.33)
    radius = torch.stack([torch.ceil(extend * var_x.sqrt()), torch.ceil(extend * var_y.sqrt())], -1)
    mx, my = means2d.unbind(-1)
    inside = (mx + radius[..., 0] > 0) & (mx - radius[..., 0] < args["width"])
    inside &= (my + radius[..., 1] > 0) & (my - radius[..., 1] < args["height"])
    keep = valid & (opacity >= ALPHA_THRESHOLD) & inside
    return torch.where(keep[..., None], radius, torch.zeros_like(radius)).int()


def gs3_projections(g: Gaussians, cameras: Cameras) -> dict[str, tuple[torch.Tensor, ...]]:
    """(visible, means2d, conics, depths) from the torch backend's projection and, when numba imports,
    the numba backend's compiled one."""
    proj = project_gaussians(
        g.means, g.scales, g.quats, g.opacities, cameras.K, cameras.world_to_cam, WIDTH, HEIGHT
    )
    out = {"torch": (proj.visible, proj.means2d, proj.conics, proj.depths)}
    if numba_available():
        import numpy as np

        from gs3.render import numba_backend, numba_project

        fields = tuple(numba_backend._numpy64(t) for t in (g.means, g.scales, g.quats, g.opacities, g.sh))
        background = torch.zeros(len(cameras), 3)
        parts = []
        for cam in numba_backend._cameras(cameras.K, cameras.world_to_cam, cameras.centers, background):
            n = len(g)
            params, boxes, visible = np.zeros((n, 10)), np.zeros((n, 4), np.int32), np.zeros(n, np.bool_)
            numba_project.project_forward(
                0, n, *fields, cam.world_to_cam, cam.intrinsics, cam.center, WIDTH, HEIGHT, params, boxes,
                visible,
            )  # fmt: skip
            parts.append((torch.from_numpy(visible), torch.from_numpy(params)))
        visible = torch.stack([p[0] for p in parts])
        params = torch.stack([p[1] for p in parts])
        out["numba"] = (visible, params[..., 0:2], params[..., 2:5], params[..., 9])
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_projection_matches_gsplat_reference(seed: int) -> None:
    g, cameras, background = scene(seed, degree=1)
    args = gsplat_arguments(g, cameras, background, dtype=torch.float64)
    radii, means2d, depths, conics = gsplat_projection(args)
    valid = (radii > 0).all(-1)
    for backend, (visible, our_means2d, our_conics, our_depths) in gs3_projections(g, cameras).items():
        # gs3 culls like gsplat's CUDA kernel (opacity-aware box), the reference with a fixed 3.33σ box
        assert torch.equal(visible, (cuda_radii(args, means2d, conics, valid) > 0).all(-1)), backend
        assert (visible <= valid).all() and visible.sum() > 200, backend
        torch.testing.assert_close(our_means2d[visible], means2d[visible], rtol=1e-10, atol=1e-9, msg=backend)
        torch.testing.assert_close(our_conics[visible], conics[visible], rtol=1e-9, atol=1e-12, msg=backend)
        torch.testing.assert_close(our_depths[visible], depths[visible], rtol=1e-12, atol=1e-12, msg=backend)
    # the scene has Gaussians behind the camera and straddling the near plane: culled by both
    assert (~valid & (depths < 0.01)).any()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colours_match_gsplat_reference(degree: int) -> None:
    """gsplat evaluates the SH from `colors` (N, (d+1)², 3) and `sh_degree` with dirs = mean − camera
    centre (the centre from inverse(viewmats), as gsplat.rendering does) and adds 0.5, clamped at 0."""
    g, cameras, background = scene(5 + degree, degree=degree)
    g.sh = 3 * g.sh  # colours beyond [0, 1]: the clamp at 0 matters
    args = gsplat_arguments(g, cameras, background, dtype=torch.float64)
    assert args["sh_degree"] == degree and args["colors"].shape == (len(g), (degree + 1) ** 2, 3)
    campos = torch.inverse(args["viewmats"])[..., :3, 3]  # (C, 3)
    dirs = args["means"][None] - campos[:, None]
    coeffs = args["colors"][None].expand(len(cameras), *args["colors"].shape)
    theirs = torch.clamp_min(gsplat_ref._spherical_harmonics(args["sh_degree"], dirs, coeffs) + 0.5, 0.0)
    ours = sh_to_color(g.sh[None].expand_as(coeffs), g.means[None] - cameras.centers[:, None])
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert (theirs == 0).any() and (theirs > 0.5).any()  # the clamp and real colours both occur
    if numba_available():  # the numba backend's compiled SH, on the Gaussians it keeps
        visible, _, _, _ = gs3_projections(g, cameras)["numba"]
        import numpy as np

        from gs3.render import numba_backend, numba_project

        fields = tuple(numba_backend._numpy64(t) for t in (g.means, g.scales, g.quats, g.opacities, g.sh))
        for c, cam in enumerate(
            numba_backend._cameras(cameras.K, cameras.world_to_cam, cameras.centers, background)
        ):
            n = len(g)
            params, boxes, vis = np.zeros((n, 10)), np.zeros((n, 4), np.int32), np.zeros(n, np.bool_)
            numba_project.project_forward(
                0, n, *fields, cam.world_to_cam, cam.intrinsics, cam.center, WIDTH, HEIGHT, params, boxes, vis
            )
            colours = torch.from_numpy(params[:, 6:9])[visible[c]]
            torch.testing.assert_close(colours, theirs[c][visible[c]], rtol=1e-12, atol=1e-12)


def test_every_composited_pixel_lies_in_a_gsplat_tile() -> None:
    """Every (Gaussian, pixel) pair gs3 can composite (visible, σ ≥ 0, α ≥ 1/255: a superset of the pairs
    it does composite) lies in a tile that gsplat's tile intersection (`_isect_tiles`, tile size from the
    arguments) assigns that Gaussian: with the reference's 3.33σ radii and with the CUDA kernel's tighter
    opacity-aware ones."""
    g, cameras, background = scene(2, degree=0)
    g.opacities = torch.where(torch.arange(len(g)) % 3 == 0, 0.02, g.opacities)  # many small extents
    args = gsplat_arguments(g, cameras, background, dtype=torch.float64)
    radii, means2d, depths, conics = gsplat_projection(args)
    tile = args["tile_size"]
    tiles_x, tiles_y = math.ceil(WIDTH / tile), math.ceil(HEIGHT / tile)
    tile_bits = (tiles_x * tiles_y).bit_length()

    proj = project_gaussians(
        g.means, g.scales, g.quats, g.opacities, cameras.K, cameras.world_to_cam, WIDTH, HEIGHT
    )
    ys, xs = torch.meshgrid(
        torch.arange(HEIGHT, dtype=torch.float64), torch.arange(WIDTH, dtype=torch.float64), indexing="ij"
    )
    pixel_tile = ((ys // tile) * tiles_x + xs // tile).long().reshape(-1)  # (P,)
    dx = (xs.reshape(-1) + 0.5)[None, None] - proj.means2d[..., 0, None]  # (C, N, P)
    dy = (ys.reshape(-1) + 0.5)[None, None] - proj.means2d[..., 1, None]
    a, b, c = (proj.conics[..., k, None] for k in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = g.opacities[None, :, None] * torch.exp(-sigma)
    contributing = proj.visible[..., None] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)  # (C, N, P)
    assert contributing.sum() > 10_000
    needed = torch.zeros(len(cameras), len(g), tiles_x * tiles_y, dtype=torch.float64)
    needed = needed.scatter_add_(2, pixel_tile.expand_as(contributing), contributing.double()) > 0

    valid = (radii > 0).all(-1)
    for name, r in (
        ("reference 3.33σ", radii),
        ("CUDA opacity-aware", cuda_radii(args, means2d, conics, valid)),
    ):
        _, isect_ids, flatten_ids = gsplat_ref._isect_tiles(means2d, r, depths, tile, tiles_x, tiles_y)
        covered = torch.zeros_like(needed)
        camera = (isect_ids >> (32 + tile_bits)).long()
        tile_id = ((isect_ids >> 32) & ((1 << tile_bits) - 1)).long()
        covered[camera, flatten_ids.long() % len(g), tile_id] = True
        missing = needed & ~covered
        assert not missing.any(), (
            f"{name}: {int(missing.sum())} (camera, Gaussian, tile) needed but not binned"
        )
        assert (covered.sum() > needed.sum()) or name.startswith("CUDA")
