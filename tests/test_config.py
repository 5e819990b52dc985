"""Pre-training configs: packaged YAML, paper settings, overrides and one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gs3.config import PretrainConfig, available_configs, config_from_dict, config_to_dict, load_config
from gs3.errors import ConfigError

PAPER = ["gs3_rgbd_spunet", "gs3_rgbd_pointnet2", "gs3_rgb_resnet50"]


def test_packaged_configs_are_found():
    assert set(available_configs()) >= {*PAPER, "demo"}


@pytest.mark.parametrize("name", PAPER)
def test_paper_settings(name):
    config = load_config(name)
    d, o = config.data, config.optim
    assert (d.width, d.height, d.frame_interval, d.num_views, d.mask_ratio, d.batch_size) == (
        320,
        240,
        5,
        2,
        0.5,
        4,
    )
    assert d.rotation_augment and d.source == "scannet"
    assert d.train_split == "scannetv2_train" and d.val_split == "scannetv2_val"
    assert (o.lr, o.weight_decay, o.min_lr, o.epochs) == (1e-4, 0.05, 1e-6, 100)
    assert config.loss.lpips_weight == 0.05
    assert config.loss.cross_view_weight == 0  # the paper's loss; the cross-view term is opt-in
    expected = {
        "gs3_rgbd_spunet": ("SpUNet-v1m1", "point_offset"),
        "gs3_rgbd_pointnet2": ("PointNet2SASSG", "point_offset"),
        "gs3_rgb_resnet50": ("ResNet50", "depth_bin"),
    }[name]
    assert (config.model.encoder["type"], config.model.head) == expected


def test_demo_runs_offline_settings():
    config = load_config("demo")
    assert config.data.source == "synthetic"
    assert config.loss.lpips_weight == 0
    assert config.data.width * config.data.height <= 160 * 120
    assert config.trainer.accelerator == "cpu"


def test_overrides_are_typed_and_nested():
    config = load_config(
        "gs3_rgbd_spunet",
        [
            "data.num_views=3",
            "data.mask_ratio=0.9",
            "optim.lr=3e-4",
            "data.width=512",
            "data.height=384",
            "model.encoder.voxel_size=0.05",
        ],
    )
    assert config.data.num_views == 3 and math.isclose(config.data.mask_ratio, 0.9)
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert (config.data.width, config.data.height) == (512, 384)
    assert config.model.encoder == {"type": "SpUNet-v1m1", "voxel_size": 0.05}


def test_config_from_a_path(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndata: {mask_ratio: 0.25}\n")
    config = load_config(str(path))
    assert config.name == "mine" and config.data.mask_ratio == 0.25
    assert config.optim.lr == PretrainConfig().optim.lr  # unspecified settings keep the defaults


def test_round_trip_through_a_dict():
    config = load_config("demo", ["optim.max_steps=7"])
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.nope=1"], "data.nope"),
        (["optim.lr=fast"], "optim.lr"),
        (["data.mask_ratio=0.95"], "data.mask_ratio"),
        (["data.num_views=1"], "data.num_views"),
        (["model.head=cube"], "model.head"),
        (["model.encoder={type: ResNet50}", "model.head=point_offset"], "model.head"),
        (["loss.cross_view_weight=-1"], "loss.cross_view_weight"),
        (["lr"], "key=value"),
        (["data.root=[a"], "data.root"),  # not YAML: a ConfigError, not a parser traceback
        (["data.root=..."], "data.root"),
    ],
)
def test_bad_overrides_raise_one_line_naming_the_key(overrides, needle):
    with pytest.raises(ConfigError) as error:
        load_config("gs3_rgbd_spunet", overrides)
    message = str(error.value)
    assert needle in message and "\n" not in message


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer: {sede: 3}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*trainer\.sede"):
        load_config(str(path))


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="demo"):
        load_config("no_such_config")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")
