"""ScanNet v2 scans: the labelled reconstruction of a scene, one point per mesh vertex.

    ROOT/<scene>/<scene>_vh_clean_2.ply          mesh: vertex x, y, z (float, metres) and red, green, blue
                                                 (uchar), faces (vertex_indices)
    ROOT/<scene>/<scene>_vh_clean_2.labels.ply   the same vertices with `label`: NYU40 id (0 = unlabelled)

This is what Pointcept's and mmdetection3d's ScanNet preprocessing read. Points are the vertices; colour is
red, green, blue / 255; labels map to the class set (ScanNet's 20 benchmark classes, every other id → -1);
normals are area-weighted vertex normals of the faces (as Pointcept's preprocessing computes them).
A missing labels file, a vertex count (or position) that differs between the two files, or a label outside
NYU40's 0..40 raises DataError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plyfile

from gs3.data.labels import NYU40_MAX
from gs3.downstream.data.classes import SCANNET20, ClassSet
from gs3.downstream.data.samples import LabelledPoints
from gs3.errors import DataError

MESH_SUFFIX = "_vh_clean_2.ply"
LABELS_SUFFIX = "_vh_clean_2.labels.ply"
POSITION_TOLERANCE = 1e-4  # metres; both files store the same float32 vertices


def mesh_paths(scene_dir: str | Path) -> tuple[Path, Path]:
    scene_dir = Path(scene_dir)
    return scene_dir / f"{scene_dir.name}{MESH_SUFFIX}", scene_dir / f"{scene_dir.name}{LABELS_SUFFIX}"


def read_ply(path: Path) -> plyfile.PlyData:
    """A .ply file; triangle faces are read with plyfile's fixed-length fast path when they are triangles."""
    if not path.is_file():
        kind = "labels file" if path.name.endswith(LABELS_SUFFIX) else "mesh file"
        raise DataError(f"{path}: {kind} is missing")
    try:
        try:
            return plyfile.PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3}})
        except (plyfile.PlyParseError, ValueError, KeyError):
            return plyfile.PlyData.read(str(path))  # not all faces are triangles (or no faces at all)
    except (OSError, plyfile.PlyParseError, ValueError, KeyError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable .ply ({error})") from None


def vertex_fields(ply: plyfile.PlyData, path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    if "vertex" not in ply:
        raise DataError(f"{path}: no 'vertex' element")
    vertices = ply["vertex"]
    available = [prop.name for prop in vertices.properties]
    missing = [name for name in names if name not in available]
    if missing:
        raise DataError(f"{path}: vertex properties {missing} missing (has {available})")
    return {name: np.asarray(vertices[name]) for name in names}


def vertex_normals(coord: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (float32) of a triangle mesh; zero for vertices without faces."""
    corners = coord.astype(np.float64)[faces]
    face_normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # |n| = 2·area
    normal = np.stack(
        [np.bincount(faces.reshape(-1), np.repeat(face_normal[:, k], 3), len(coord)) for k in range(3)], 1
    )
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    return (normal / np.maximum(length, 1e-12)).astype(np.float32)


def triangle_faces(mesh: plyfile.PlyData) -> np.ndarray | None:
    """(F, 3) int64 vertex indices when the mesh has faces and all are triangles, else None."""
    if "face" not in mesh or not len(mesh["face"]):
        return None
    indices = mesh["face"].data["vertex_indices"]
    if indices.dtype != object:  # plyfile's fixed-length fast path: already (F, 3)
        return indices.astype(np.int64).reshape(len(indices), -1) if indices.shape[-1:] == (3,) else None
    if any(len(face) != 3 for face in indices):
        return None
    return np.stack(indices).astype(np.int64)


def read_scannet_mesh(scene_dir: str | Path, classes: ClassSet = SCANNET20) -> LabelledPoints:
    """The labelled vertices of ``ROOT/<scene>`` (see the module docstring)."""
    mesh_path, labels_path = mesh_paths(scene_dir)
    if not labels_path.is_file() and mesh_path.is_file():
        raise DataError(f"{labels_path}: labels file is missing (needed beside {mesh_path.name})")
    mesh = read_ply(mesh_path)
    fields = vertex_fields(mesh, mesh_path, ("x", "y", "z", "red", "green", "blue"))
    coord = np.stack([fields["x"], fields["y"], fields["z"]], 1).astype(np.float32)
    color = np.stack([fields["red"], fields["green"], fields["blue"]], 1).astype(np.float32)
    if color.size and (color.min() < 0 or color.max() > 255):
        raise DataError(f"{mesh_path}: vertex colours outside 0..255")
    labelled = read_ply(labels_path)
    label_fields = vertex_fields(labelled, labels_path, ("x", "y", "z", "label"))
    label = label_fields["label"].astype(np.int64)
    if len(label) != len(coord):
        raise DataError(
            f"{labels_path}: {len(label)} vertices, but {mesh_path.name} has {len(coord)} (not the same mesh)"
        )
    label_coord = np.stack([label_fields["x"], label_fields["y"], label_fields["z"]], 1)
    if len(coord) and np.abs(label_coord - coord).max() > POSITION_TOLERANCE:
        raise DataError(f"{labels_path}: vertex positions differ from {mesh_path.name} (not the same mesh)")
    if label.size and (label.min() < 0 or label.max() > NYU40_MAX):
        bad = int(label.max()) if label.max() > NYU40_MAX else int(label.min())
        raise DataError(f"{labels_path}: label {bad} out of range (NYU40 ids are 0..{NYU40_MAX})")
    faces = triangle_faces(mesh)
    normal = None
    if faces is not None and faces.min() >= 0 and faces.max() < len(coord):
        normal = vertex_normals(coord, faces)
    return LabelledPoints.from_numpy(
        Path(scene_dir).name, coord, color / 255.0, classes.from_nyu40(label), normal=normal
    )
