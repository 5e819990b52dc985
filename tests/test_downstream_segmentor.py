"""The segmentor: shapes, seeded initialisation, linear probing, and pre-trained weights from a gs3
pre-training checkpoint and from every `gs3 export` format (made by the export code itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gs3.config import load_config
from gs3.downstream.pretrained import load_pretrained_encoder, read_pretrained
from gs3.downstream.segmentor import Segmentor
from gs3.errors import GS3Error
from gs3.train.checkpoint import atomic_torch_save

SPUNET = {
    "type": "SpUNet-v1m1",
    "base_channels": 8,
    "channels": [8, 16, 16, 8],
    "layers": [1, 1, 1, 1],
    "voxel_size": 0.1,
    "out_channels": 16,
}
POINTNET2 = {
    "type": "PointNet2SASSG",
    "out_channels": 16,
    "num_points": [32],
    "radius": [0.4],
    "num_samples": [8],
    "sa_channels": [[16, 16]],
    "fp_channels": [],
    "point_fp_channels": [[16]],
}
RESNET50 = {"type": "ResNet50", "out_channels": 16, "full_resolution_channels": 8}
PAPER_CONFIG = {
    "SpUNet-v1m1": "gs3_rgbd_spunet",
    "PointNet2SASSG": "gs3_rgbd_pointnet2",
    "ResNet50": "gs3_rgb_resnet50",
}


def point_batch(seed: int = 0, sizes: tuple[int, ...] = (300, 200)) -> dict:
    generator = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    return {
        "coord": torch.rand(n, 3, generator=generator) * 2.0,
        "color": torch.rand(n, 3, generator=generator),
        "segment": torch.randint(-1, 5, (n,), generator=generator),
        "offset": torch.cumsum(torch.tensor(sizes), 0),
    }


def image_batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(2, 32, 48, 3, generator=generator),
        "segment": torch.randint(-1, 5, (2, 32, 48), generator=generator),
    }


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("encoder", [SPUNET, POINTNET2], ids=["spunet", "pointnet2"])
def test_point_segmentor_gives_logits_per_input_point(encoder):
    segmentor = Segmentor(encoder, num_classes=5, seed=0)
    logits = segmentor(point_batch())
    assert logits.shape == (500, 5) and torch.isfinite(logits).all()
    # encoder parameter names are the pre-training ones (GS3.encoder), under `encoder.`
    from gs3.encoders import build_encoder

    assert {f"encoder.{k}" for k in build_encoder(encoder).state_dict()} <= set(segmentor.state_dict())


def test_image_segmentor_gives_logits_per_pixel():
    segmentor = Segmentor(RESNET50, num_classes=5, head={"type": "mlp", "hidden_channels": 8}, seed=0)
    logits = segmentor(image_batch())
    assert logits.shape == (2, 32, 48, 5) and torch.isfinite(logits).all()


def test_same_seed_same_initial_weights_and_the_head_does_not_depend_on_the_encoder():
    a, b = Segmentor(SPUNET, 5, seed=3), Segmentor(SPUNET, 5, seed=3)
    assert_bit_identical(state(a), state(b))
    c = Segmentor(SPUNET, 5, seed=4)
    assert not torch.equal(a.head.classifier.weight, c.head.classifier.weight)
    assert not torch.equal(a.encoder.final.weight, c.encoder.final.weight)
    # another encoder (consuming another amount of randomness) leaves the head's start unchanged
    other = Segmentor({**SPUNET, "channels": [8, 16, 16, 16]}, 5, seed=3)
    assert_bit_identical(state(a.head), state(other.head))
    # and the global random state is left as it was
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Segmentor(SPUNET, 5, seed=3)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("encoder", [SPUNET, POINTNET2], ids=["spunet", "pointnet2"])
def test_linear_probing_leaves_the_encoder_bit_identical(encoder):
    segmentor = Segmentor(encoder, num_classes=5, linear_probe=True, seed=0)
    before = state(segmentor.encoder)  # buffers included: BatchNorm running statistics, batch counters
    head_before = state(segmentor.head)
    optimizer = torch.optim.SGD(segmentor.trainable_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    segmentor.train()
    assert not segmentor.encoder.training and segmentor.head.training
    for step in range(3):
        batch = point_batch(seed=step)
        loss = torch.nn.functional.cross_entropy(segmentor(batch), batch["segment"], ignore_index=-1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_bit_identical(before, state(segmentor.encoder))
    assert not torch.equal(head_before["classifier.weight"], segmentor.head.classifier.weight)
    assert all(not p.requires_grad for p in segmentor.encoder.parameters())
    assert {id(p) for p in segmentor.trainable_parameters()} == {id(p) for p in segmentor.head.parameters()}


def test_full_fine_tuning_moves_the_encoder_and_its_batchnorm_statistics():
    segmentor = Segmentor(SPUNET, num_classes=5, seed=0)
    before = state(segmentor.encoder)
    optimizer = torch.optim.SGD(segmentor.trainable_parameters(), lr=0.1)
    segmentor.train()
    batch = point_batch()
    loss = torch.nn.functional.cross_entropy(segmentor(batch), batch["segment"], ignore_index=-1)
    loss.backward()
    optimizer.step()
    after = state(segmentor.encoder)
    assert not torch.equal(before["final.weight"], after["final.weight"])
    assert not torch.equal(before["conv_input.1.running_mean"], after["conv_input.1.running_mean"])


# --- pre-trained weights ---------------------------------------------------------------------------------
def pretraining_checkpoint(encoder: dict, path: Path, noise: float = 1.0) -> dict:
    """A checkpoint as GS3Module writes it, with weights moved away from their initialisation (BatchNorm
    variances stay positive, so the encoder still runs)."""
    from gs3.train.module import GS3Module

    config = load_config(PAPER_CONFIG[encoder["type"]], ["loss.lpips_weight=0", f"model.encoder={encoder}"])
    module = GS3Module(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(noise * torch.randn(tensor.shape, generator=generator))
                if key.endswith("running_var"):
                    tensor.abs_()
    checkpoint = {"state_dict": module.state_dict(), "global_step": 7}
    module.on_save_checkpoint(checkpoint)
    atomic_torch_save(checkpoint, path)
    return checkpoint


def check_loaded(segmentor: Segmentor, scratch: Segmentor, checkpoint: dict, report, loaded_keys: set[str]):
    """Loaded keys hold the checkpoint's encoder weights; everything else is the scratch initialisation."""
    assert set(report.loaded) == loaded_keys
    assert set(report.missing) == set(segmentor.encoder.state_dict()) - loaded_keys
    for key, value in segmentor.encoder.state_dict().items():
        expected = (
            checkpoint["state_dict"][f"model.encoder.{key}"]
            if key in loaded_keys
            else scratch.encoder.state_dict()[key]
        )
        assert torch.equal(value, expected), key
    assert_bit_identical(state(segmentor.head), state(scratch.head))


def test_pretrained_from_a_gs3_pretraining_checkpoint(tmp_path):
    checkpoint = pretraining_checkpoint(SPUNET, tmp_path / "run.ckpt")
    scratch, segmentor = Segmentor(SPUNET, 5, seed=1), Segmentor(SPUNET, 5, seed=1)
    report = load_pretrained_encoder(segmentor.encoder, tmp_path / "run.ckpt", SPUNET)
    assert report.kind == "gs3 pre-training checkpoint" and report.unexpected == [] and report.missing == []
    check_loaded(segmentor, scratch, checkpoint, report, set(segmentor.encoder.state_dict()))
    lines = report.lines()
    assert "0 tensors" not in lines[0] and "missing (kept as initialised): 0" in lines[1]


EXPORTS = [
    pytest.param("pointcept", SPUNET, id="pointcept-spunet"),
    pytest.param("mmdet3d", POINTNET2, id="mmdet3d-pointnet2"),
    pytest.param("torchvision", RESNET50, id="torchvision-resnet50"),
    pytest.param("mmdet3d", RESNET50, id="mmdet3d-resnet50"),
]


@pytest.mark.parametrize(("format", "encoder"), EXPORTS)
def test_pretrained_from_every_export_format(tmp_path, format, encoder):
    from gs3.train.export import export_checkpoint

    checkpoint = pretraining_checkpoint(encoder, tmp_path / "run.ckpt")
    export_checkpoint(tmp_path / "run.ckpt", format, tmp_path / "encoder.pth")
    scratch, segmentor = Segmentor(encoder, 5, seed=2), Segmentor(encoder, 5, seed=2)
    report = load_pretrained_encoder(segmentor.encoder, tmp_path / "encoder.pth", encoder)
    backbone = set(segmentor.encoder.backbone_state_dict())
    check_loaded(segmentor, scratch, checkpoint, report, backbone)
    assert report.unexpected == []
    # the exported backbone lacks gs3's own layers on top; they are reported missing
    if encoder["type"] != "SpUNet-v1m1":
        assert report.missing and all(
            not key.startswith(("SA_modules.", "FP_modules.", "layer")) for key in report.missing
        )


def test_pretrained_from_a_full_torchvision_state_dict_reports_fc_as_unexpected(tmp_path):
    scratch = Segmentor(RESNET50, 5, seed=0)
    donor = Segmentor(RESNET50, 5, seed=9).encoder
    weights = donor.backbone_state_dict() | {
        "fc.weight": torch.zeros(1000, 2048),
        "fc.bias": torch.zeros(1000),
    }
    torch.save(weights, tmp_path / "resnet50.pth")
    report = load_pretrained_encoder(scratch.encoder, tmp_path / "resnet50.pth", RESNET50)
    assert report.unexpected == ["fc.bias", "fc.weight"] and len(report.loaded) == len(weights) - 2
    assert torch.equal(scratch.encoder.conv1.weight, donor.conv1.weight)


# --- bad input: one line each ----------------------------------------------------------------------------
def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_and_unreadable_files(tmp_path):
    encoder = Segmentor(SPUNET, 5).encoder
    with pytest.raises(GS3Error, match="not found") as error:
        load_pretrained_encoder(encoder, tmp_path / "nope.pth", SPUNET)
    assert "nope.pth" in one_line(error)
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(GS3Error, match="not a readable weights file") as error:
        load_pretrained_encoder(encoder, tmp_path / "text.pth", SPUNET)
    one_line(error)
    torch.save({"something": 1}, tmp_path / "empty.pth")
    with pytest.raises(GS3Error, match="holds no weights") as error:
        read_pretrained(tmp_path / "empty.pth")
    one_line(error)


def test_shape_mismatch_stops_with_one_line_naming_the_weight(tmp_path):
    pretraining_checkpoint(SPUNET, tmp_path / "run.ckpt")
    wider = {**SPUNET, "base_channels": 12}
    encoder = Segmentor(wider, 5).encoder
    with pytest.raises(GS3Error, match=r"weight 'conv_input.0.weight' has shape") as error:
        load_pretrained_encoder(encoder, tmp_path / "run.ckpt", wider)
    assert "run.ckpt" in one_line(error)


def test_wrong_encoder_type_and_weights_that_fit_nothing(tmp_path):
    pretraining_checkpoint(SPUNET, tmp_path / "run.ckpt")
    encoder = Segmentor(POINTNET2, 5).encoder
    with pytest.raises(
        GS3Error, match=r"holds a SpUNet-v1m1 encoder, but model\.encoder\.type is PointNet2SASSG"
    ) as error:
        load_pretrained_encoder(encoder, tmp_path / "run.ckpt", POINTNET2)
    one_line(error)
    torch.save({"state_dict": {"backbone.unrelated.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(GS3Error, match="none of its 1 weights") as error:
        load_pretrained_encoder(encoder, tmp_path / "other.pth", POINTNET2)
    one_line(error)
