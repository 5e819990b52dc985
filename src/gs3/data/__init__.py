"""RGB-D data for GS³: scenes (ScanNet exported layout, .sens), view sampling, resizing, back-projection,
augmentation, masking, datasets and collation. See each module's docstring for the rules it implements."""

from gs3.data.collate import batch_sample_slices, collate
from gs3.data.dataset import GS3Dataset, PairDataset, SampleConfig, build_sample, sample_rng
from gs3.data.exported import ExportedScene
from gs3.data.masking import Mask, MaskGenerator
from gs3.data.scene import Frame, Scene
from gs3.data.sens import SensScene, export_sens
from gs3.data.splits import list_scenes, missing_scenes, open_scene, split_scene_names
from gs3.data.transforms import (
    RESOLUTIONS,
    apply_world_transform,
    backproject,
    parse_resolution,
    random_rotation,
    resize_depth,
    rotation_matrix,
)
from gs3.data.validation import InvalidFrameError, pose_problem
from gs3.data.views import (
    RandomViewSampler,
    SequentialViewSampler,
    ViewSample,
    compute_pair_list,
    read_pair_list,
    sample_overlap,
    view_overlap,
    write_pair_list,
)

__all__ = [
    "RESOLUTIONS",
    "ExportedScene",
    "Frame",
    "GS3Dataset",
    "InvalidFrameError",
    "Mask",
    "MaskGenerator",
    "PairDataset",
    "RandomViewSampler",
    "SampleConfig",
    "Scene",
    "SensScene",
    "SequentialViewSampler",
    "ViewSample",
    "apply_world_transform",
    "backproject",
    "batch_sample_slices",
    "build_sample",
    "collate",
    "compute_pair_list",
    "export_sens",
    "list_scenes",
    "missing_scenes",
    "open_scene",
    "parse_resolution",
    "pose_problem",
    "random_rotation",
    "read_pair_list",
    "resize_depth",
    "rotation_matrix",
    "sample_overlap",
    "sample_rng",
    "split_scene_names",
    "view_overlap",
    "write_pair_list",
]
