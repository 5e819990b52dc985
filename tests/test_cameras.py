import math

import pytest
import torch

from gs3.cameras import Cameras, invert_rigid, pixel_centers, project, scale_intrinsics, unproject


def random_pose(generator: torch.Generator) -> torch.Tensor:
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    q = q / q.norm()
    w, x, y, z = q
    rotation = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = rotation
    pose[:3, 3] = torch.randn(3, generator=generator, dtype=torch.float64)
    return pose


@pytest.fixture
def cameras() -> Cameras:
    generator = torch.Generator().manual_seed(0)
    K = torch.tensor([[585.0, 0, 320], [0, 585.0, 240], [0, 0, 1]], dtype=torch.float64).expand(3, 3, 3)
    poses = torch.stack([random_pose(generator) for _ in range(3)])
    return Cameras(K.clone(), poses, width=640, height=480)


def test_invert_rigid_matches_general_inverse(cameras):
    assert torch.allclose(
        invert_rigid(cameras.cam_to_world), torch.linalg.inv(cameras.cam_to_world), atol=1e-12
    )


def test_hand_computed_projection():
    K = torch.tensor([[100.0, 0, 50], [0, 200.0, 40], [0, 0, 1]])
    uv, z = project(K, torch.tensor([[1.0, -0.5, 2.0]]))
    assert uv.tolist() == [[100.0, -10.0]] and z.tolist() == [2.0]


def test_project_unproject_round_trip(cameras):
    pixels = torch.rand(3, 100, 2, dtype=torch.float64) * torch.tensor([640.0, 480.0], dtype=torch.float64)
    depth = torch.rand(3, 100, dtype=torch.float64) * 5 + 0.1
    uv, z = cameras.world_to_pixels(cameras.pixels_to_world(pixels, depth))
    assert torch.allclose(uv, pixels, atol=1e-9) and torch.allclose(z, depth, atol=1e-12)


def test_backprojected_depth_lands_on_pixel_centres(cameras):
    depth = torch.rand(3, 480, 640, dtype=torch.float64) + 0.5
    points = cameras.backproject_depth(depth).reshape(3, -1, 3)
    uv, z = cameras.world_to_pixels(points)
    centres = pixel_centers(480, 640, dtype=torch.float64).reshape(-1, 2)
    assert torch.allclose(uv, centres.expand_as(uv), atol=1e-8)
    assert torch.allclose(z, depth.reshape(3, -1), atol=1e-12)


def test_resize_keeps_continuous_pixel_coordinates(cameras):
    point = torch.tensor([[[0.3, -0.2, 2.0]]], dtype=torch.float64).expand(3, 1, 3)
    small = cameras.resized(320, 240)
    uv_big, _ = cameras.world_to_pixels(point)
    uv_small, _ = small.world_to_pixels(point)
    assert torch.allclose(uv_small, uv_big / 2, atol=1e-12)
    # the centre of big pixel (0, 0) is a quarter of a small pixel from the small pixel's corner
    K = scale_intrinsics(torch.eye(3, dtype=torch.float64), 0.5, 0.5)
    assert torch.allclose(
        unproject(K, torch.tensor([[0.25, 0.25]], dtype=torch.float64), torch.ones(1, dtype=torch.float64)),
        unproject(
            torch.eye(3, dtype=torch.float64),
            torch.tensor([[0.5, 0.5]], dtype=torch.float64),
            torch.ones(1, dtype=torch.float64),
        ),
    )


def test_rotating_world_and_cameras_together_keeps_pixels(cameras):
    angle = 0.7
    rotation = torch.eye(4, dtype=torch.float64)
    rotation[:2, :2] = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(3, 50, 2, generator=generator, dtype=torch.float64) * 400
    depth = torch.rand(3, 50, generator=generator, dtype=torch.float64) * 4 + 0.5
    points = cameras.pixels_to_world(pixels, depth)  # in front of their cameras
    rotated_points = points @ rotation[:3, :3].T
    uv, z = cameras.world_to_pixels(points)
    uv_r, z_r = cameras.transformed(rotation).world_to_pixels(rotated_points)
    assert torch.allclose(uv, uv_r, atol=1e-9) and torch.allclose(z, z_r, atol=1e-12)


def test_ray_directions_have_unit_camera_depth(cameras):
    directions = cameras.ray_directions().reshape(3, -1, 3)
    directions_cam = directions @ cameras.cam_to_world[:, :3, :3]
    assert torch.allclose(directions_cam[..., 2], torch.ones_like(directions_cam[..., 2]))


def test_bad_shapes_raise_one_line():
    with pytest.raises(ValueError, match=r"Cameras.K: expected shape"):
        Cameras(torch.eye(4)[None], torch.eye(4)[None], 10, 10)
    with pytest.raises(ValueError, match=r"batch"):
        Cameras(torch.eye(3).expand(2, 3, 3), torch.eye(4)[None], 10, 10)
