"""Procedural indoor RGB-D scenes with exact depth and per-pixel labels, in the ScanNet exported layout.

A room is a set of boxes, each rotated only about the vertical axis (yaw). The floor, ceiling and four
walls are slabs around the interior [0, sx] × [0, sy] × [0, sz] (world z up, floor at z = 0, like
axis-aligned ScanNet scenes); furniture is built from boxes (a table is a top slab and four legs, a bookshelf
is panels, boards and books, ...). Every box carries a semantic class (NYU40 ids, the ids ScanNet's labels
map to), an instance id and a material.

Views are rendered by exact ray casting: the ray of pixel (u, v) is scaled so that its camera-space z is 1,
so the slab-test parameter of the nearest hit *is* the depth z (not the ray length). Colour is a procedural
texture that is a function of the surface point in the box's own frame (view-consistent) times Lambertian
shading from fixed lights (view-independent), so all views of a point agree up to JPEG compression.

Cameras move along a smooth closed curve (an ellipse around the room centre at 1.3–1.6 m height) looking
inward (at the middle of the room) or outward (at the walls and what stands along them; chosen per scene) with
slow yaw, pitch and height wobble, 1.3–3.5 cm and ~1° per frame like a 30 Hz handheld scan. The room does
not depend on the number of frames or the image size, only on (seed, scene index).

Files of one scene (frame i = 0 .. F-1, not zero-padded; the layout of ScanNet's SensReader export):

    color/<i>.jpg                 RGB JPEG, quality 95
    depth/<i>.png                 uint16 millimetres, 0 = invalid
    pose/<i>.txt                  4×4 camera-to-world (OpenCV camera: x right, y down, z forward)
    intrinsic/intrinsic_color.txt, intrinsic_depth.txt   4×4 with K upper-left (colour and depth share K)
    intrinsic/extrinsic_color.txt, extrinsic_depth.txt   identity
    label/<i>.png                 uint16 semantic class per pixel (NYU40 id, 0 = unlabelled)
    instance/<i>.png              uint16 instance id per pixel (0 = none; ids match points.npz)
    points.npz                    labelled point cloud sampled uniformly on visible surfaces: coord (P,3)
                                  float32 m, color (P,3) uint8, normal (P,3) float32, semantic (P,) int32
                                  (NYU40), segment20 (P,) int32 (ScanNet-20 index, -1 = ignore),
                                  instance (P,) int32
    meta.json                     generator version, seeds, size, class table, instances

Modules, one concern each; each imports only modules before it in this list:
    labels      NYU40 classes, ScanNet-20 index
    room        boxes, materials, yaw rotations
    textures    hashed noise, procedural textures, shading
    raycast     rendering a view
    points      the labelled point cloud
    cameras     intrinsics, camera paths
    furniture   object templates and their palettes
    layout      building a room
    scene       the scene of (seed, index)
    files       writing the exported layout
Every public name is importable from `gs3.data.synthetic` itself. The modules import each other relatively
and nothing from `gs3.data`, so the generator loads without torch.
"""

from __future__ import annotations

from .cameras import CameraPath, kinect_intrinsics, look_rotation
from .files import (
    GENERATOR_VERSION,
    write_dataset,
    write_dataset_once,
    write_frame,
    write_point_cloud,
    write_scene,
)
from .furniture import Part
from .labels import CLASS_IDS, CLASS_NAMES, SCANNET20_NYU40_IDS, scannet20_index
from .layout import generate_room
from .points import DEFAULT_POINT_DENSITY, PointCloud, inside_any_box, sample_point_cloud
from .raycast import RenderedView, camera_rays, render_view
from .room import Materials, Room, room_from_boxes
from .scene import DEFAULT_FRAMES, DEFAULT_HEIGHT, DEFAULT_WIDTH, SyntheticScene, generate_scene, scene_name
from .textures import lambert_shading, surface_albedo, surface_color

__all__ = [
    "CLASS_IDS",
    "CLASS_NAMES",
    "DEFAULT_FRAMES",
    "DEFAULT_HEIGHT",
    "DEFAULT_POINT_DENSITY",
    "DEFAULT_WIDTH",
    "GENERATOR_VERSION",
    "SCANNET20_NYU40_IDS",
    "CameraPath",
    "Materials",
    "Part",
    "PointCloud",
    "RenderedView",
    "Room",
    "SyntheticScene",
    "camera_rays",
    "generate_room",
    "generate_scene",
    "inside_any_box",
    "kinect_intrinsics",
    "lambert_shading",
    "look_rotation",
    "render_view",
    "room_from_boxes",
    "sample_point_cloud",
    "scannet20_index",
    "scene_name",
    "surface_albedo",
    "surface_color",
    "write_dataset",
    "write_dataset_once",
    "write_frame",
    "write_point_cloud",
    "write_scene",
]
