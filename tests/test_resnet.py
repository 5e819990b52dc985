"""ResNet50 image encoder: torchvision key names/shapes, torchvision checkpoints, trunk semantics, outputs."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gs3.encoders.registry import build_encoder
from gs3.encoders.resnet import ResNet50
from gs3.errors import DataError

KEYS_FILE = Path(__file__).parent / "data" / "torchvision_resnet50_keys.txt"


def torchvision_keys() -> dict[str, tuple[int, ...]]:
    entries = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            entries[key] = tuple(ast.literal_eval(shape))
    return entries


@pytest.fixture(scope="module")
def model() -> ResNet50:
    torch.manual_seed(0)
    return build_encoder({"type": "ResNet50"})


def test_backbone_keys_equal_torchvision_without_fc(model):
    reference = {k: v for k, v in torchvision_keys().items() if not k.startswith("fc.")}
    assert len(torchvision_keys()) == 320 and len(reference) == 318
    backbone = model.backbone_state_dict()
    assert list(backbone) == list(reference)
    assert {k: tuple(v.shape) for k, v in backbone.items()} == reference
    assert "pixel_mean" not in model.state_dict()  # normalisation constants are not checkpoint state


def test_torchvision_checkpoint_file_loads(tmp_path, model):
    generator = torch.Generator().manual_seed(1)
    checkpoint = {}
    for key, shape in torchvision_keys().items():
        if key.endswith("num_batches_tracked"):
            checkpoint[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            checkpoint[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            # Random per output channel, broadcast over the rest: torch.save keeps the small storage, so
            # the file stays small while every key still gets distinct values.
            rows = torch.randn(shape[0], generator=generator)
            checkpoint[key] = rows.view(-1, *[1] * (len(shape) - 1)).expand(shape)
    path = tmp_path / "resnet50-torchvision-layout.pth"
    torch.save(checkpoint, path)
    target = ResNet50()
    report = target.load_backbone_state_dict(torch.load(path, weights_only=True))
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == ["fc.bias", "fc.weight"]
    loaded = target.backbone_state_dict()
    assert all(torch.equal(value, checkpoint[key]) for key, value in loaded.items())
    with pytest.raises(DataError, match="1 missing"):
        target.load_backbone_state_dict({k: v for k, v in checkpoint.items() if k != "layer3.5.bn2.bias"})
    checkpoint["layer1.0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(DataError, match="shape"):
        target.load_backbone_state_dict(checkpoint)


def reference_trunk(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet-50 forward (eval) written out functionally from its definition."""

    def bn(prefix, y):
        return F.batch_norm(y, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                            sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], False, 0.0, 1e-5)  # fmt: skip

    y = F.relu(bn("bn1", F.conv2d(x, sd["conv1.weight"], stride=2, padding=3)))
    y = F.max_pool2d(y, 3, 2, 1)
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            p = f"layer{layer}.{block}"
            stride = 2 if layer > 1 and block == 0 else 1  # v1.5: stride on the 3x3 conv
            out = F.relu(bn(f"{p}.bn1", F.conv2d(y, sd[f"{p}.conv1.weight"])))
            out = F.relu(bn(f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)))
            out = bn(f"{p}.bn3", F.conv2d(out, sd[f"{p}.conv3.weight"]))
            if block == 0:
                y = bn(f"{p}.downsample.1", F.conv2d(y, sd[f"{p}.downsample.0.weight"], stride=stride))
            y = F.relu(out + y)
    return y


def test_trunk_computes_torchvision_resnet50(model):
    model.eval()
    with torch.no_grad():
        for key, value in model.backbone_state_dict().items():  # non-trivial BN statistics
            if key.endswith(("running_mean", "bias")):
                value.copy_(torch.randn_like(value) * 0.1)
            elif key.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight")):
                value.copy_(torch.rand_like(value) + 0.5)
        x = torch.randn(1, 3, 64, 48)
        stages = model.stage_features(x)
        expected = reference_trunk(model.backbone_state_dict(), x)
    assert [s.shape[1:] for s in stages] == [(256, 16, 12), (512, 8, 6), (1024, 4, 3), (2048, 2, 2)]
    torch.testing.assert_close(stages[-1], expected, rtol=1e-4, atol=1e-4)


def test_torchvision_initialisation():
    torch.manual_seed(0)
    fresh = ResNet50()
    weight = fresh.layer4[1].conv2.weight  # Kaiming normal, fan-out: std = sqrt(2 / (512 * 3 * 3))
    assert weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.03)
    assert fresh.layer2[0].bn3.weight.eq(1).all() and fresh.layer2[0].bn3.bias.eq(0).all()


def test_pixel_features_shape_and_every_parameter_gets_a_gradient(model):
    assert model.out_channels == 128 and model.modality == "image"
    model.train()
    model.zero_grad()
    image = torch.rand(2, 48, 64, 3, generator=torch.Generator().manual_seed(2))
    features = model(image)
    assert features.shape == (2, 128, 48, 64)
    (features * torch.randn_like(features)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_odd_sizes_and_channels_last_input(model):
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 37, 53, 3)).shape == (1, 128, 37, 53)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        model(torch.rand(1, 3, 32, 32))


def test_forward_normalises_with_imagenet_mean_std(model, monkeypatch):
    seen = []
    original = model.stage_features
    monkeypatch.setattr(model, "stage_features", lambda x: seen.append(x) or original(x))
    image = torch.rand(1, 32, 40, 3)
    model.eval()
    with torch.no_grad():
        model(image)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen[0], ((image - mean) / std).permute(0, 3, 1, 2))
