"""Labelled-data readers, class sets, protocols, config, datasets and batches of gs3.downstream.data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from plyfile import PlyData, PlyElement
from torch.utils.data import DataLoader

from gs3.data.synthetic import scannet20_index, write_dataset
from gs3.downstream.data import (
    IGNORE_INDEX,
    S3DIS13,
    SCANNET20,
    DownstreamDataConfig,
    build_downstream_dataset,
    class_set,
    collate_points,
    labelled_subset,
    limit_scenes,
    list_pointcept_scenes,
    read_pointcept_scene,
    read_scannet_mesh,
    read_synthetic_cloud,
    validate_data_config,
)
from gs3.downstream.data.mesh import vertex_normals
from gs3.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MESH_ROOT = DATA / "scannet_mesh"
FRAMES_ROOT = DATA / "scannet_labelled"
needs_mesh = pytest.mark.skipif(
    not (MESH_ROOT / "scene0470_00").is_dir(), reason=f"real mesh absent ({DATA})"
)
needs_frames = pytest.mark.skipif(
    not (FRAMES_ROOT / "scene0014_00").is_dir(), reason=f"real frames absent ({DATA})"
)

# Vertices per NYU40 id of scene0470_00, from the data README.
MESH_COUNTS = {
    1: 24_353,
    2: 14_939,
    5: 15_712,
    7: 2_572,
    8: 2_777,
    9: 1_924,
    30: 3_172,
    37: 251,
    39: 998,
    0: 767,
}


# -- class sets ----------------------------------------------------------------------------------------------
def test_class_sets():
    assert IGNORE_INDEX == -1 and class_set("scannet20") is SCANNET20 and class_set("s3dis13") is S3DIS13
    assert SCANNET20.num_classes == 20 and S3DIS13.num_classes == 13
    nyu40 = np.arange(41)
    expected = np.full(41, -1)
    for index, nyu in enumerate((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)):
        expected[nyu] = index
    np.testing.assert_array_equal(SCANNET20.from_nyu40(nyu40), expected)
    np.testing.assert_array_equal(SCANNET20.from_nyu40(nyu40), scannet20_index(nyu40))  # the generator's
    assert SCANNET20.names[14] == "refrigerator" and S3DIS13.names[-1] == "clutter"
    with pytest.raises(ConfigError, match=r"data\.classes"):
        class_set("scannet200")


# -- ScanNet meshes ------------------------------------------------------------------------------------------
def write_mesh(scene_dir: Path, coord, color, faces, labels=None, label_coord=None) -> None:
    scene_dir.mkdir(parents=True, exist_ok=True)
    name = scene_dir.name

    def vertices(points, extra=()):
        dtype = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
        array = np.empty(len(points), dtype=[*dtype, ("alpha", "u1"), *extra])
        array["x"], array["y"], array["z"] = points.T
        array["red"], array["green"], array["blue"] = color[: len(points)].T
        array["alpha"] = 255
        return array

    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    elements = [PlyElement.describe(vertices(coord), "vertex"), PlyElement.describe(face, "face")]
    PlyData(elements, byte_order="<").write(str(scene_dir / f"{name}_vh_clean_2.ply"))
    if labels is not None:
        labelled = vertices(coord if label_coord is None else label_coord, [("label", "u2")])
        labelled["label"] = labels
        elements = [PlyElement.describe(labelled, "vertex"), PlyElement.describe(face, "face")]
        PlyData(elements, byte_order="<").write(str(scene_dir / f"{name}_vh_clean_2.labels.ply"))


def small_mesh(seed: int = 0):
    rng = np.random.default_rng(seed)
    coord = rng.uniform(0, 2, size=(30, 3)).astype(np.float32)
    color = rng.integers(0, 256, size=(30, 3)).astype(np.uint8)
    faces = np.stack([rng.choice(30, 3, replace=False) for _ in range(40)])
    labels = rng.integers(0, 41, size=30)
    return coord, color, faces, labels


def test_mesh_reader_on_a_generated_scan(tmp_path):
    coord, color, faces, labels = small_mesh()
    write_mesh(tmp_path / "scene0001_00", coord, color, faces, labels)
    points = read_scannet_mesh(tmp_path / "scene0001_00")
    assert points.name == "scene0001_00" and len(points) == 30
    np.testing.assert_array_equal(points.coord.numpy(), coord)
    np.testing.assert_allclose(points.color.numpy(), color / 255.0, atol=1e-7)
    np.testing.assert_array_equal(points.segment.numpy(), scannet20_index(labels))
    # normals against a brute-force loop over faces (area-weighted sum of face normals, normalised)
    expected = np.zeros((30, 3))
    for a, b, c in faces:
        n = np.cross(coord[b].astype(float) - coord[a], coord[c].astype(float) - coord[a])
        for v in (a, b, c):
            expected[v] += n
    used = np.linalg.norm(expected, axis=1) > 0
    expected[used] /= np.linalg.norm(expected[used], axis=1, keepdims=True)
    np.testing.assert_allclose(points.normal.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(vertex_normals(coord, faces), expected, atol=1e-5)


def test_mesh_reader_bad_input_one_line_each(tmp_path):
    coord, color, faces, labels = small_mesh()
    cases = {}
    write_mesh(tmp_path / "nolabels", coord, color, faces)
    cases["nolabels"] = r"nolabels_vh_clean_2\.labels\.ply: labels file is missing"
    write_mesh(tmp_path / "count", coord, color, faces[:0], labels[:29], label_coord=coord[:29])
    cases["count"] = r"count_vh_clean_2\.labels\.ply: 29 vertices, but count_vh_clean_2\.ply has 30"
    bad = labels.copy()
    bad[3] = 41
    write_mesh(tmp_path / "range", coord, color, faces, bad)
    cases["range"] = r"range_vh_clean_2\.labels\.ply: label 41 out of range"
    write_mesh(tmp_path / "moved", coord, color, faces, labels, label_coord=coord + 0.01)
    cases["moved"] = r"moved_vh_clean_2\.labels\.ply: vertex positions differ"
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "garbage_vh_clean_2.ply").write_bytes(b"not a ply file")
    (tmp_path / "garbage" / "garbage_vh_clean_2.labels.ply").write_bytes(b"ply\nnonsense")
    cases["garbage"] = r"garbage_vh_clean_2\.ply: unreadable \.ply"
    for name, message in cases.items():
        with pytest.raises(DataError, match=message) as error:
            read_scannet_mesh(tmp_path / name)
        assert "\n" not in str(error.value)


@needs_mesh
def test_real_mesh_vertex_counts_match_the_readme():
    points = read_scannet_mesh(MESH_ROOT / "scene0470_00")
    assert len(points) == 67_465 == sum(MESH_COUNTS.values())
    counts = dict(zip(*np.unique(points.segment.numpy(), return_counts=True)))
    # ScanNet-20 indices of the README's NYU40 ids; 0, whiteboard (30) and bag (37) are not benchmark classes
    expected = {0: 24_353, 1: 14_939, 4: 15_712, 6: 2_572, 7: 2_777, 8: 1_924, 19: 998, -1: 767 + 3_172 + 251}
    assert {int(k): int(v) for k, v in counts.items()} == expected
    assert 0 <= float(points.color.min()) and float(points.color.max()) <= 1
    norms = points.normal.norm(dim=1)
    assert float((norms - 1).abs().max()) < 1e-5


# -- Pointcept folders ---------------------------------------------------------------------------------------
def write_pointcept_scene(folder: Path, count: int, seed: int, s3dis: bool = False) -> dict[str, np.ndarray]:
    """Arrays as Pointcept's preprocessing writes them (dtypes and shapes of preprocess_scannet/s3dis.py)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = {
        "coord": rng.uniform(0, 3, size=(count, 3)).astype(np.float32),
        "color": rng.integers(0, 256, size=(count, 3)).astype(np.uint8),
    }
    if s3dis:
        arrays["segment"] = rng.integers(0, 13, size=(count, 1)).astype(np.int16)
        arrays["instance"] = rng.integers(0, 9, size=(count, 1)).astype(np.int16)
    else:
        arrays["normal"] = rng.normal(size=(count, 3)).astype(np.float32)
        arrays["segment20"] = rng.integers(-1, 20, size=count).astype(np.int64)
        arrays["segment200"] = rng.integers(-1, 200, size=count).astype(np.int64)
        arrays["instance"] = rng.integers(-1, 9, size=count).astype(np.int64)
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value)
    return arrays


def test_pointcept_scannet_and_s3dis_folders(tmp_path):
    arrays = write_pointcept_scene(tmp_path / "scannet" / "train" / "scene0000_00", 500, 0)
    points = read_pointcept_scene(tmp_path / "scannet" / "train" / "scene0000_00", SCANNET20)
    np.testing.assert_array_equal(points.coord.numpy(), arrays["coord"])
    np.testing.assert_allclose(points.color.numpy(), arrays["color"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(points.segment.numpy(), arrays["segment20"])
    np.testing.assert_array_equal(points.instance.numpy(), arrays["instance"])
    np.testing.assert_array_equal(points.normal.numpy(), arrays["normal"])
    s3dis = write_pointcept_scene(tmp_path / "s3dis" / "Area_1" / "office_1", 400, 1, s3dis=True)
    write_pointcept_scene(tmp_path / "s3dis" / "Area_5" / "office_2", 300, 2, s3dis=True)
    listed = list_pointcept_scenes(tmp_path / "s3dis", ["Area_1", "Area_5"], S3DIS13)
    assert [name for name, _ in listed] == ["Area_1-office_1", "Area_5-office_2"]  # Pointcept's S3DIS names
    room = read_pointcept_scene(listed[0][1], S3DIS13, listed[0][0])
    np.testing.assert_array_equal(room.segment.numpy(), s3dis["segment"].reshape(-1))
    assert room.normal is None and room.name == "Area_1-office_1"


def test_pointcept_bad_input(tmp_path):
    folder = tmp_path / "train" / "scene"
    write_pointcept_scene(folder, 100, 0)
    np.save(folder / "color.npy", np.zeros((99, 3), np.uint8))
    with pytest.raises(DataError, match=r"color\.npy: shape \(99, 3\), expected \(100, 3\)"):
        read_pointcept_scene(folder, SCANNET20)
    np.save(folder / "color.npy", np.full((100, 3), 300.0))
    with pytest.raises(DataError, match=r"color\.npy: values outside 0\.\.255"):
        read_pointcept_scene(folder, SCANNET20)
    np.save(folder / "color.npy", np.zeros((100, 3), np.uint8))
    np.save(folder / "segment20.npy", np.full(100, 20))
    with pytest.raises(DataError, match=r"segment20\.npy: labels 20\.\.20 outside -1\.\.19"):
        read_pointcept_scene(folder, SCANNET20)
    (folder / "segment20.npy").unlink()
    with pytest.raises(DataError, match=r"no segment20\.npy or segment\.npy"):
        read_pointcept_scene(folder, SCANNET20)
    (folder / "coord.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"coord\.npy: unreadable \.npy"):
        read_pointcept_scene(folder, SCANNET20)
    with pytest.raises(DataError, match="split folder is missing"):
        list_pointcept_scenes(tmp_path, "val", SCANNET20)


# -- synthetic rooms -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_config(tmp_path_factory) -> DownstreamDataConfig:
    cache = tmp_path_factory.mktemp("finetune_cache")
    return DownstreamDataConfig(
        cache_dir=str(cache),
        synthetic_scenes=3,
        synthetic_val_scenes=1,
        synthetic_frames=4,
        image_size=[64, 48],
        synthetic_point_density=300.0,
        grid_size=0.05,
        batch_size=2,
    )


def test_synthetic_cloud_reader(tmp_path):
    write_dataset(tmp_path, 1, num_frames=1, seed=4, width=32, height=24, point_density=200.0)
    points = read_synthetic_cloud(tmp_path / "synthetic_0000", SCANNET20)
    with np.load(tmp_path / "synthetic_0000" / "points.npz") as stored:
        np.testing.assert_array_equal(
            points.segment.numpy(), stored["segment20"]
        )  # the generator's own mapping
        np.testing.assert_allclose(points.color.numpy() * 255, stored["color"], atol=1e-4)
    assert (points.segment >= 0).any() and (points.segment == IGNORE_INDEX).any()


def check_point_batch(batch: dict, evaluation: bool) -> None:
    n = batch["coord"].shape[0]
    assert batch["coord"].dtype == torch.float32 and batch["coord"].shape == (n, 3)
    assert batch["color"].dtype == torch.float32 and batch["color"].shape == (n, 3)
    assert 0 <= float(batch["color"].min()) and float(batch["color"].max()) <= 1
    assert batch["segment"].dtype == torch.int64 and batch["segment"].shape == (n,)
    assert batch["offset"].dtype == torch.int64 and int(batch["offset"][-1]) == n
    assert len(batch["name"]) == len(batch["offset"])
    if evaluation:
        m = batch["origin_segment"].shape[0]
        assert batch["inverse"].dtype == torch.int64 and batch["inverse"].shape == (m,)
        assert int(batch["origin_offset"][-1]) == m
        # each original point is represented by a row of its own sample
        starts = torch.cat([torch.zeros(1, dtype=torch.long), batch["offset"][:-1]])
        origin_starts = torch.cat([torch.zeros(1, dtype=torch.long), batch["origin_offset"][:-1]])
        for b in range(len(batch["offset"])):
            rows = batch["inverse"][origin_starts[b] : batch["origin_offset"][b]]
            assert int(rows.min()) >= int(starts[b]) and int(rows.max()) < int(batch["offset"][b])


def test_synthetic_datasets_give_the_contract_batches(synthetic_config):
    train = build_downstream_dataset(synthetic_config, "train", seed=0)
    val = build_downstream_dataset(synthetic_config, "val", seed=0)
    assert train.names == ["synthetic_0000", "synthetic_0001"] and val.names == ["synthetic_0002"]
    batch = train.collate_fn([train[0], train[1]])
    check_point_batch(batch, evaluation=False)
    val_batch = val.collate_fn([val[0]])
    check_point_batch(val_batch, evaluation=True)
    original = read_synthetic_cloud(Path(val.sources[0].path), SCANNET20)
    assert torch.equal(val_batch["origin_segment"], original.segment)
    # a voxel's label is one of its points' labels; where a voxel is pure, it is theirs
    carried = val_batch["segment"][val_batch["inverse"]]
    assert (carried == original.segment).float().mean() > 0.95
    images = build_downstream_dataset(dataclasses.replace(synthetic_config, modality="images"), "train", 0)
    assert len(images) == 8 and images.names[0] == "synthetic_0000/0"
    image_batch = images.collate_fn([images[0], images[5]])
    assert image_batch["image"].shape == (2, 48, 64, 3) and image_batch["image"].dtype == torch.float32
    assert image_batch["segment"].shape == (2, 48, 64) and image_batch["segment"].dtype == torch.int64
    from_frames = dataclasses.replace(synthetic_config, points_from="frames", frames_per_sample=2)
    grouped = build_downstream_dataset(from_frames, "val", 0)
    assert grouped.names == ["synthetic_0002/0+1", "synthetic_0002/2+3"]
    check_point_batch(grouped.collate_fn([grouped[0], grouped[1]]), evaluation=True)


def test_samples_are_functions_of_seed_epoch_index(synthetic_config):
    config = dataclasses.replace(synthetic_config, mix_prob=0.0)
    a, b = build_downstream_dataset(config, "train", 3), build_downstream_dataset(config, "train", 3)
    a.set_epoch(2)
    b.set_epoch(2)
    first, second = a[1], b[1]
    assert torch.equal(first["coord"], second["coord"]) and torch.equal(first["segment"], second["segment"])
    b.set_epoch(3)
    assert not torch.equal(b[1]["coord"], first["coord"])
    loader = DataLoader(a, batch_size=2, num_workers=2, collate_fn=a.collate_fn)
    batch = next(iter(loader))
    assert torch.equal(batch["coord"], a.collate_fn([a[0], a[1]])["coord"])  # workers change nothing
    val = build_downstream_dataset(config, "val", 3)
    reference = val[0]["coord"]
    val.set_epoch(7)
    assert torch.equal(val[0]["coord"], reference)


def test_mix3d_collate_overlays_pairs():
    def sample(n, mix):
        zeros, labels = torch.zeros(n, 3), torch.zeros(n, dtype=torch.long)
        return {"coord": zeros, "color": zeros, "segment": labels, "name": f"s{n}", "mix": mix}

    samples = [sample(3, 0.1), sample(4, 0.9), sample(5, 0.9)]
    mixed = collate_points(samples, mix_prob=0.8)
    assert mixed["offset"].tolist() == [7, 12] and mixed["name"] == ["s3+s4", "s5"]
    plain = collate_points([sample(3, 0.9), *samples[1:]], mix_prob=0.8)
    assert plain["offset"].tolist() == [3, 7, 12] and plain["name"] == ["s3", "s4", "s5"]


# -- protocols -----------------------------------------------------------------------------------------------
def test_limited_scenes():
    names = [f"scene{i:04d}_00" for i in range(40)]
    kept = limit_scenes(names, 0.25, seed=1)
    assert len(kept) == 10 and kept == sorted(kept) and set(kept) <= set(names)
    assert kept == limit_scenes(names, 0.25, seed=1)
    assert set(limit_scenes(list(reversed(names)), 0.25, seed=1)) == set(kept)  # not the listing order
    assert set(limit_scenes(names, 0.25, seed=2)) != set(kept)
    assert len(limit_scenes(names, 0.001, seed=1)) == 1
    assert limit_scenes(names, ["scene0003_00", "scene0001_00"], 0) == ["scene0001_00", "scene0003_00"]
    with pytest.raises(DataError, match="1 names are not training scenes: scene9999_00"):
        limit_scenes(names, ["scene9999_00"], 0)


def test_limited_annotations_fixed_per_scene(synthetic_config):
    chosen = labelled_subset("scene0000_00", 1000, 20, seed=0)
    assert len(chosen) == 20 == len(np.unique(chosen)) and chosen.max() < 1000
    assert np.array_equal(chosen, labelled_subset("scene0000_00", 1000, 20, seed=0))
    assert not np.array_equal(chosen, labelled_subset("scene0001_00", 1000, 20, seed=0))
    assert len(labelled_subset("tiny", 5, 20, seed=0)) == 5
    config = dataclasses.replace(synthetic_config, labelled_points=30, sphere_crop=0, mix_prob=0.0)
    train = build_downstream_dataset(config, "train", seed=0)
    source = train.sources[0]
    full = train.load(source)
    expected = np.sort(full.segment.numpy()[labelled_subset(source.name, len(full), 30, 0)])
    expected = expected[expected != IGNORE_INDEX]
    for epoch in (0, 1):  # the same points keep their labels every epoch, through the whole pipeline
        train.set_epoch(epoch)
        got = train[0]["segment"].numpy()
        np.testing.assert_array_equal(np.sort(got[got != IGNORE_INDEX]), expected)


def test_labelled_points_file(tmp_path, synthetic_config):
    lists = {"synthetic_0000": np.array([0, 1, 2]), "synthetic_0001": torch.tensor([5, 6])}
    torch.save(lists, tmp_path / "points20")
    config = dataclasses.replace(
        synthetic_config, labelled_points_file=str(tmp_path / "points20"), sphere_crop=0
    )
    train = build_downstream_dataset(config, "train", 0)
    got = train[1]["segment"].numpy()
    full = train.load(train.sources[1]).segment.numpy()
    np.testing.assert_array_equal(np.sort(got[got != IGNORE_INDEX]), np.sort(full[[5, 6]][full[[5, 6]] >= 0]))
    torch.save({"synthetic_0000": np.array([0])}, tmp_path / "partial")
    with pytest.raises(DataError, match="no labelled points for 1 training scenes"):
        build_downstream_dataset(
            dataclasses.replace(config, labelled_points_file=str(tmp_path / "partial")), "train", 0
        )


# -- config --------------------------------------------------------------------------------------------------
def test_config_from_yaml_and_validation():
    yaml = """
    source: pointcept
    root: data/s3dis
    classes: s3dis13
    train_split: [Area_1, Area_2, Area_3, Area_4, Area_6]
    val_split: Area_5
    grid_size: 0.05
    limited_scenes: 0.1
    point_augment: {scale: [0.8, 1.2], elastic: [[0.2, 0.4]]}
    """
    merged = OmegaConf.merge(OmegaConf.structured(DownstreamDataConfig), OmegaConf.create(yaml))
    config = OmegaConf.to_object(merged)
    assert config.train_split[-1] == "Area_6" and config.point_augment.elastic == [[0.2, 0.4]]
    validate_data_config(config)
    bad = {
        "source": ("nowhere", "data.source"),
        "modality": ("voxels", "data.modality"),
        "limited_scenes": (1.5, "data.limited_scenes"),
        "labelled_points": (-1, "data.labelled_points"),
        "grid_size": (0.0, "data.grid_size"),
        "image_size": ([320], "data.image_size"),
    }
    for key, (value, name) in bad.items():
        with pytest.raises(ConfigError, match=f"bad setting '{name}'"):
            validate_data_config(dataclasses.replace(config, **{key: value}), "x.yaml")
    with pytest.raises(ConfigError, match="images need a frame source"):
        validate_data_config(dataclasses.replace(config, modality="images"))
    with pytest.raises(ConfigError, match="only read from Pointcept folders"):
        validate_data_config(dataclasses.replace(config, source="scannet_mesh"))
    with pytest.raises(ConfigError, match=r"point_augment\.scale"):
        validate_data_config(dataclasses.replace(config, point_augment=dataclasses.replace(
            config.point_augment, scale=[1.2, 0.8])))  # fmt: skip


# -- datasets on files the tests write and on the real samples -----------------------------------------------
def test_pointcept_dataset_skips_and_counts_a_bad_scene(tmp_path):
    for index in range(3):
        write_pointcept_scene(tmp_path / "train" / f"scene000{index}_00", 2000, index)
    write_pointcept_scene(tmp_path / "val" / "scene0100_00", 2000, 9)
    (tmp_path / "train" / "scene0001_00" / "color.npy").write_bytes(b"corrupt")
    config = DownstreamDataConfig(source="pointcept", root=str(tmp_path), grid_size=0.1, sphere_crop=500)
    train = build_downstream_dataset(config, "train", 0)
    assert train.names == ["scene0000_00", "scene0001_00", "scene0002_00"]
    sample = train[1]  # the corrupt scene is replaced by the next one, and counted
    assert sample["name"] == "scene0002_00" and sample["skipped"] == {"unreadable sample": 1}
    assert len(sample["coord"]) == 500 and train.skipped["unreadable sample"] == 1
    limited = build_downstream_dataset(
        dataclasses.replace(config, limited_scenes=["scene0002_00"]), "train", 0
    )
    assert limited.names == ["scene0002_00"]
    broken = build_downstream_dataset(
        dataclasses.replace(config, limited_scenes=["scene0001_00"]), "train", 0
    )
    with pytest.raises(DataError, match=r"nothing usable in 1 tries \(.*color\.npy: unreadable"):
        broken[0]


@needs_mesh
def test_real_mesh_dataset():
    config = DownstreamDataConfig(
        source="scannet_mesh", root=str(MESH_ROOT), train_split="all", val_split="all"
    )
    val = build_downstream_dataset(config, "val", 0)
    batch = val.collate_fn([val[0]])
    check_point_batch(batch, evaluation=True)
    assert batch["origin_segment"].shape == (67_465,) and batch["name"] == ["scene0470_00"]
    train = build_downstream_dataset(
        dataclasses.replace(config, labelled_points=200, sphere_crop=0), "train", 0
    )
    sample = train[0]
    assert 0 < int((sample["segment"] != IGNORE_INDEX).sum()) <= 200
    with pytest.raises(DataError, match=r"no scene of data\.val_split"):
        build_downstream_dataset(dataclasses.replace(config, val_split=["scene0000_00"]), "val", 0)


@needs_mesh
def test_scenes_of_a_split_missing_under_the_root_are_reported(capsys):
    config = DownstreamDataConfig(
        source="scannet_mesh", root=str(MESH_ROOT), val_split=["scene0470_00", "scene0000_00"]
    )
    assert len(build_downstream_dataset(config, "val", 0)) == 1
    out = capsys.readouterr().out
    assert "data.val_split: 1 of 2 scenes not under" in out and "scene0000_00" in out


@needs_frames
def test_real_frames_datasets_split_by_frames():
    config = DownstreamDataConfig(
        source="frames", root=str(FRAMES_ROOT), modality="images", train_split=["scene0014_00"],
        val_split=["scene0014_00"], train_frames="::2", val_frames="1::2",
    )  # fmt: skip
    train, val = build_downstream_dataset(config, "train", 0), build_downstream_dataset(config, "val", 0)
    assert len(train) == 14 and len(val) == 13 and not set(train.names) & set(val.names)
    batch = val.collate_fn([val[0], val[1]])
    assert batch["image"].shape == (2, 240, 320, 3) and batch["name"] == [
        "scene0014_00/70",
        "scene0014_00/175",
    ]
    assert set(batch["segment"].unique().tolist()) <= {-1, 0, 1, 2, 7, 8, 15, 16, 17, 19}
    points = dataclasses.replace(config, modality="points", frames_per_sample=2, val_frames=[70, 175])
    val_points = build_downstream_dataset(points, "val", 0)
    assert val_points.names == ["scene0014_00/70+175"]
    check_point_batch(val_points.collate_fn([val_points[0]]), evaluation=True)
