"""Labelled data for fine-tuning and evaluation: readers (ScanNet scans, Pointcept folders, labelled RGB-D
frames, gs3's synthetic rooms), class sets, Pointcept's augmentation / grid-sampling / sphere-crop pipeline,
the data-efficient protocols, datasets and collation. See each module's docstring for its rules.

Entry point: ``build_downstream_dataset(config.data, "train" | "val", seed)`` → a Dataset whose
``collate_fn`` yields the batches of the issue-14 contract (gs3.downstream.data.collate).
"""

from gs3.downstream.data.classes import (
    CLASS_SETS,
    IGNORE_INDEX,
    NYU40_NAMES,
    S3DIS13,
    SCANNET20,
    ClassSet,
    class_set,
)
from gs3.downstream.data.collate import PointCollate, collate_images, collate_points
from gs3.downstream.data.config import (
    DownstreamDataConfig,
    ImageAugmentConfig,
    PointAugmentConfig,
    validate_data_config,
)
from gs3.downstream.data.datasets import (
    DownstreamDataset,
    SampleSource,
    build_downstream_dataset,
    prepare_downstream_data,
)
from gs3.downstream.data.frames import labelled_frame_points, labelled_image
from gs3.downstream.data.image_transforms import ImageTransform
from gs3.downstream.data.mesh import read_scannet_mesh
from gs3.downstream.data.point_transforms import PointTransform, grid_sample, sphere_crop
from gs3.downstream.data.pointcept import list_pointcept_scenes, read_pointcept_scene
from gs3.downstream.data.protocols import labelled_subset, limit_scenes, read_labelled_points_file
from gs3.downstream.data.samples import LabelledImage, LabelledPoints
from gs3.downstream.data.synthetic import prepare_synthetic, read_synthetic_cloud

__all__ = [
    "CLASS_SETS",
    "IGNORE_INDEX",
    "NYU40_NAMES",
    "S3DIS13",
    "SCANNET20",
    "ClassSet",
    "DownstreamDataConfig",
    "DownstreamDataset",
    "ImageAugmentConfig",
    "ImageTransform",
    "LabelledImage",
    "LabelledPoints",
    "PointAugmentConfig",
    "PointCollate",
    "PointTransform",
    "SampleSource",
    "build_downstream_dataset",
    "class_set",
    "collate_images",
    "collate_points",
    "grid_sample",
    "labelled_frame_points",
    "labelled_image",
    "labelled_subset",
    "limit_scenes",
    "list_pointcept_scenes",
    "prepare_downstream_data",
    "prepare_synthetic",
    "read_labelled_points_file",
    "read_pointcept_scene",
    "read_scannet_mesh",
    "read_synthetic_cloud",
    "sphere_crop",
    "validate_data_config",
]
