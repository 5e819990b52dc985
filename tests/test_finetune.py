"""Fine-tuning and evaluation runs: configs, schedules, the loss, `gs3 finetune` / `gs3 evaluate` end to end,
exact resumption, linear probing in a whole run, and overfitting one synthetic room with each encoder."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from gs3.cli import main as gs3_main
from gs3.config import config_to_yaml, load_config
from gs3.downstream.config import available_finetune_configs, load_finetune_config
from gs3.errors import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELLED_FRAMES = SHARED_DATA / "scannet_labelled"

POINTNET2_TINY = (
    "model.encoder={type: PointNet2SASSG, num_points: [256, 64], radius: [0.3, 0.8], num_samples: [16, 16],"
    " sa_channels: [[32, 32, 64], [64, 64, 128]], fp_channels: [[128, 128]], point_fp_channels: [[128, 64]],"
    " out_channels: 64}"
)
SPUNET_TINY = (
    "model.encoder={type: SpUNet-v1m1, base_channels: 8, channels: [8, 16, 16, 8], layers: [1, 1, 1, 1],"
    " voxel_size: 0.1, out_channels: 16}"
)


def one_room(cache: Path, extra: list[str] = ()) -> list[str]:
    """Train and score on the same small synthetic room (4 views at 80×60, ~3k points on a 5 cm grid),
    without augmentation: what overfitting needs."""
    return [
        "data.synthetic_scenes=2",
        "data.synthetic_val_scenes=1",
        "data.synthetic_frames=4",
        "data.image_size=[80, 60]",
        "data.synthetic_point_density=20",
        f"data.cache_dir={cache}",
        "data.train_split=[synthetic_0000]",
        "data.val_split=[synthetic_0000]",
        "data.point_augment.enabled=false",
        "data.image_augment.enabled=false",
        "data.sphere_crop=0",
        "data.mix_prob=0",
        "data.grid_size=0.05",
        "data.batch_size=1",
        "data.num_workers=0",
        "trainer.progress_bar=false",
        *extra,
    ]


def tiny_run(cache: Path, extra: list[str] = ()) -> list[str]:
    """A few steps of a tiny PointNet++ with the recipe's augmentations on: what plumbing tests need."""
    return one_room(
        cache,
        [
            POINTNET2_TINY,
            "data.point_augment.enabled=true",
            "data.train_split=train",
            "data.val_split=val",
            "optim.max_steps=6",
            "evaluation.every=3",
            "evaluation.precise_bn_batches=2",
            "trainer.checkpoint_every=3",
            "trainer.log_every=1",
            "trainer.image_every=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rooms")


# --- configs ---------------------------------------------------------------------------------------------
def test_packaged_configs_load():
    names = set(available_finetune_configs())
    assert {
        "semseg_spunet_scannet",
        "semseg_spunet_s3dis",
        "semseg_pointnet2_scannet",
        "semseg_resnet50_frames",
        "demo_semseg_spunet_synthetic",
        "demo_semseg_pointnet2_synthetic",
        "demo_semseg_resnet50_frames",
        "demo_semseg_spunet_frames",
    } <= names
    for name in names:
        assert load_finetune_config(name).name == name


def test_spunet_scannet_is_pointcepts_recipe_with_the_pretrained_encoder():
    config = load_finetune_config("semseg_spunet_scannet")
    o, d = config.optim, config.data
    assert (o.optimizer, o.lr, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 0.05, 0.9, True, 1e-4)
    assert (o.scheduler, o.pct_start, o.anneal_strategy, o.div_factor, o.final_div_factor) == (
        "onecycle",
        0.05,
        "cos",
        10.0,
        1e4,
    )
    assert (o.cycle_momentum, o.base_momentum, o.max_momentum, o.epochs, o.grad_clip) == (
        True,
        0.85,
        0.95,
        800,
        0,
    )
    assert (d.grid_size, d.sphere_crop, d.mix_prob, d.batch_size, d.classes) == (
        0.02,
        100000,
        0.8,
        12,
        "scannet20",
    )
    a = d.point_augment
    assert (a.rotate_z, a.rotate_xy, a.scale, a.flip_p, a.jitter_sigma, a.jitter_clip) == (
        1.0,
        1 / 64,
        [0.9, 1.1],
        0.5,
        0.005,
        0.02,
    )
    assert a.elastic == [[0.2, 0.4], [0.8, 1.6]]
    # the encoder is the one gs3_rgbd_spunet pre-trains, so its weights load without a mismatch
    from gs3.encoders import build_encoder

    pretrained = build_encoder(dict(load_config("gs3_rgbd_spunet").model.encoder)).state_dict()
    finetuned = build_encoder(dict(config.model.encoder)).state_dict()
    assert {k: v.shape for k, v in pretrained.items()} == {k: v.shape for k, v in finetuned.items()}
    s3dis = load_finetune_config("semseg_spunet_s3dis")
    assert (s3dis.optim.lr, s3dis.optim.scheduler, s3dis.optim.epochs, s3dis.data.grid_size) == (
        0.1,
        "poly",
        3000,
        0.05,
    )
    assert (s3dis.data.classes, s3dis.data.val_split) == ("s3dis13", "Area_5")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optim.lr=-1"], "optim.lr"),
        (["model.mode=frozen"], "model.mode"),
        (["optim.optimizer=lamb"], "optim.optimizer"),
        (["optim.scheduler=step"], "optim.scheduler"),
        (["model.encoder={type: ResNet50}"], "data.modality"),
        (["model.encoder={type: NoSuchNet}"], "model.encoder.type"),
        (["data.modality=images"], "data.modality"),
        (["optim.no_such_key=1"], "optim.no_such_key"),
        (["data.grid_size=0"], "data.grid_size"),
        (["trainer.precision=16-mixed"], "trainer.precision"),
    ],
)
def test_bad_settings_raise_one_line_naming_the_key(overrides, needle):
    with pytest.raises(ConfigError) as error:
        load_finetune_config("demo_semseg_spunet_synthetic", overrides)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_a_dict_override_replaces_the_encoder_and_a_dotted_one_edits_it():
    config = load_finetune_config("demo_semseg_spunet_synthetic", ["model.encoder={type: PointNet2SASSG}"])
    assert config.model.encoder == {"type": "PointNet2SASSG"}
    config = load_finetune_config("demo_semseg_spunet_synthetic", ["model.encoder.voxel_size=0.1"])
    assert config.model.encoder["voxel_size"] == 0.1 and config.model.encoder["base_channels"] == 16


# --- schedules and loss ----------------------------------------------------------------------------------
def schedule(config, total: int) -> tuple[list[float], list[float]]:
    from gs3.train.finetune_module import build_optimizer

    parameter = torch.nn.Parameter(torch.zeros(1))
    segmentor = type("S", (), {"trainable_parameters": lambda self: [parameter]})()
    built = build_optimizer(config, segmentor, total)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    lrs, momenta = [], []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return lrs, momenta


def test_onecycle_follows_its_closed_form():
    config = load_finetune_config("semseg_spunet_scannet")
    total, peak = 200, 0.05
    lrs, momenta = schedule(config, total)
    warm_end = 0.05 * total - 1  # torch's OneCycleLR: the peak is at step pct_start·total − 1
    initial, final = peak / 10, peak / 10 / 1e4

    def cos(start: float, end: float, fraction: float) -> float:
        return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))

    for step in (0, 3, 9, 50, 120, 199):
        if step <= warm_end:
            lr, momentum = cos(initial, peak, step / warm_end), cos(0.95, 0.85, step / warm_end)
        else:
            fraction = (step - warm_end) / (total - 1 - warm_end)
            lr, momentum = cos(peak, final, fraction), cos(0.85, 0.95, fraction)
        assert lrs[step] == pytest.approx(lr, rel=1e-6), step
        assert momenta[step] == pytest.approx(momentum, rel=1e-6), step


def test_poly_is_pointcepts_polylr():
    config = load_finetune_config("semseg_spunet_s3dis")
    lrs, _ = schedule(config, 50)
    for step in (0, 10, 49):
        assert lrs[step] == pytest.approx(0.1 * (1 - step / 51) ** 0.9, rel=1e-6)


def test_loss_averages_over_labelled_points_and_is_zero_without_any():
    from gs3.train.finetune_module import segmentation_loss

    logits = torch.randn(6, 4, requires_grad=True)
    target = torch.tensor([0, 1, -1, 3, -1, 2])
    keep = target >= 0
    expected = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    assert torch.allclose(segmentation_loss(logits, target), expected)
    none = segmentation_loss(logits, torch.full((6,), -1))
    assert float(none) == 0.0
    none.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- whole runs ------------------------------------------------------------------------------------------
def test_cli_finetune_then_evaluate_writes_the_same_metrics(tmp_path, cache, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_finetune_config("demo_semseg_spunet_synthetic", tiny_run(cache))
    path = tmp_path / "tiny.yaml"
    path.write_text(config_to_yaml(config))
    assert gs3_main(["finetune", "--config", str(path), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "gs3 finetune: 6 steps" in out and "from scratch" in out
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"miou", "macc", "allacc", "iou_per_class", "confusion_matrix"} <= metrics.keys()
    assert set(metrics["iou_per_class"]) == set(metrics["classes"]) and len(metrics["classes"]) == 20
    assert (
        metrics["run"]["steps"] == 6
        and (run / "metrics.txt").is_file()
        and (run / "confusion_matrix.csv").is_file()
    )
    confusion = torch.tensor(metrics["confusion_matrix"])
    assert int(confusion.sum()) == metrics["num_scored"] > 0
    # the metrics are those of the confusion matrix
    assert metrics["allacc"] == pytest.approx(float(confusion.diag().sum() / confusion.sum()))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step-00000003.ckpt",
        "step-00000006.ckpt",
    ]

    assert gs3_main(["evaluate", "--checkpoint", str(run / "checkpoints" / "last.ckpt")]) == 0
    again = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert again["confusion_matrix"] == metrics["confusion_matrix"] and again["miou"] == metrics["miou"]

    scalars: dict[str, list[int]] = {}
    images: set[str] = set()
    for events in (run / "tensorboard").glob("events.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.step for e in accumulator.Scalars(tag))
        images |= set(accumulator.Tags()["images"])
    assert {
        "train/loss",
        "train/lr",
        "train/batch_miou",
        "val/miou",
        "val/macc",
        "val/allacc",
    } <= scalars.keys()
    assert sorted(scalars["val/miou"]) == [3, 6, 6]  # every 3 steps, and the final evaluation
    assert {"train/input|labels|prediction", "val/0/input|labels|prediction"} <= images


def test_scratch_and_pretrained_modules_differ_only_in_the_loaded_encoder_weights(tmp_path, cache):
    from gs3.downstream.data import SCANNET20
    from gs3.train.export import export_checkpoint
    from gs3.train.finetune_module import FinetuneModule
    from test_downstream_segmentor import POINTNET2, pretraining_checkpoint

    checkpoint = pretraining_checkpoint(POINTNET2, tmp_path / "pre.ckpt")
    export_checkpoint(tmp_path / "pre.ckpt", "mmdet3d", tmp_path / "pointnet2.pth")
    encoder = "model.encoder={" + ", ".join(f"{k}: {v}" for k, v in POINTNET2.items()) + "}"
    config = load_finetune_config("demo_semseg_pointnet2_synthetic", [encoder])
    scratch = FinetuneModule(config, SCANNET20.names).state_dict()
    pretrained = FinetuneModule(
        config, SCANNET20.names, pretrained=str(tmp_path / "pointnet2.pth")
    ).state_dict()
    assert scratch.keys() == pretrained.keys()
    changed = {key for key in scratch if not torch.equal(scratch[key], pretrained[key])}
    prefix = "model.encoder."
    expected = {  # the exported backbone's (perturbed, floating-point) tensors; nothing else moved
        "segmentor.encoder." + key[len(prefix) :]
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix + "SA_modules.") or key.startswith(prefix + "FP_modules.")
        if value.is_floating_point()
    }
    assert changed == expected and expected


def test_evaluate_refuses_a_pretraining_checkpoint_and_bad_overrides(tmp_path, capsys):
    from test_downstream_segmentor import SPUNET, pretraining_checkpoint

    pretraining_checkpoint(SPUNET, tmp_path / "pre.ckpt")
    assert gs3_main(["evaluate", "--checkpoint", str(tmp_path / "pre.ckpt")]) == 2
    error = capsys.readouterr().err.strip()
    assert "gs3 finetune checkpoint" in error and len(error.splitlines()) == 1
    assert gs3_main(["evaluate", "--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_missing_pretrained_file_stops_before_training(tmp_path, cache, capsys):
    config = load_finetune_config("demo_semseg_spunet_synthetic", tiny_run(cache))
    path = tmp_path / "tiny.yaml"
    path.write_text(config_to_yaml(config))
    code = gs3_main(
        [
            "finetune",
            "--config",
            str(path),
            "--pretrained",
            str(tmp_path / "no.pth"),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "no.pth: pre-trained weights file not found" in error and len(error.splitlines()) == 1


def test_resumed_run_ends_with_the_same_weights(tmp_path, cache):
    from gs3.train.finetune import finetune

    config = load_finetune_config(
        "demo_semseg_spunet_synthetic", tiny_run(cache, ["data.batch_size=2", "data.mix_prob=0.8"])
    )
    finetune(config, out_dir=tmp_path / "full")
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copy(tmp_path / "full/checkpoints/step-00000003.ckpt", resumed_dir / "step-00000003.ckpt")
    finetune(config, out_dir=tmp_path / "resumed", resume="auto")
    full = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=False)
    assert full["global_step"] == resumed["global_step"] == 6
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_linear_probing_run_keeps_the_pretrained_encoder_bit_identical(tmp_path, cache):
    from gs3.train.export import export_checkpoint
    from gs3.train.finetune import finetune
    from test_downstream_segmentor import SPUNET, pretraining_checkpoint

    checkpoint = pretraining_checkpoint(SPUNET, tmp_path / "pre.ckpt", noise=0.05)
    export_checkpoint(tmp_path / "pre.ckpt", "pointcept", tmp_path / "spunet.pth")
    encoder = "model.encoder={" + ", ".join(f"{k}: {v}" for k, v in SPUNET.items()) + "}"
    config = load_finetune_config(
        "demo_semseg_spunet_synthetic",
        tiny_run(cache, [encoder, "model.mode=linear_probe", "evaluation.every=0"]),
    )
    metrics = finetune(config, pretrained=tmp_path / "spunet.pth", out_dir=tmp_path / "probe")
    assert metrics["run"]["steps"] == 6 and metrics["run"]["nonfinite_skipped"] == 0
    assert (
        metrics["run"]["pretrained"]["kind"] == "pointcept export"
        and metrics["run"]["pretrained"]["missing"] == []
    )
    assert json.loads((tmp_path / "probe" / "pretrained.json").read_text())["loaded"] == len(
        [k for k in checkpoint["state_dict"] if k.startswith("model.encoder.")]
    )
    final = torch.load(tmp_path / "probe/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    for key, value in checkpoint["state_dict"].items():
        if key.startswith("model.encoder."):
            assert torch.equal(final["segmentor.encoder." + key[len("model.encoder.") :]], value), key
    scratch = torch.load(tmp_path / "probe/checkpoints/step-00000003.ckpt", weights_only=False)["state_dict"]
    assert not torch.equal(
        final["segmentor.head.classifier.weight"], scratch["segmentor.head.classifier.weight"]
    )


# --- overfitting one synthetic room ------------------------------------------------------------------------
def overfit(cache: Path, tmp_path: Path, base: str, extra: list[str]) -> dict:
    """Train on one synthetic room and score on the same room (its original points / pixels)."""
    from gs3.train.finetune import finetune

    config = load_finetune_config(
        base,
        one_room(
            cache, ["optim.optimizer=adamw", "optim.weight_decay=0", "optim.scheduler=constant", *extra]
        ),
    )
    return finetune(config, out_dir=tmp_path / "run")


def test_pointnet2_overfits_one_room_fast(tmp_path, cache):
    # the demo's slim PointNet++ (VoteNet's layout at a quarter of the points and widths)
    metrics = overfit(
        cache, tmp_path, "demo_semseg_pointnet2_synthetic", ["optim.lr=0.01", "optim.max_steps=60"]
    )
    assert metrics["miou"] >= 0.9, metrics["iou_per_class"]


@pytest.mark.slow
def test_pointnet2_full_size_overfits_one_room(tmp_path, cache):
    metrics = overfit(
        cache,
        tmp_path,
        "semseg_pointnet2_scannet",
        [
            "data.source=synthetic",
            "data.root=''",
            "optim.lr=0.003",
            "optim.max_steps=150",
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
        ],
    )
    assert metrics["miou"] >= 0.9, metrics["iou_per_class"]


@pytest.mark.slow
def test_spunet_overfits_one_room(tmp_path, cache):
    # the demo's slim SR-UNet at the data's 5 cm grid. Its BatchNorm momentum is Pointcept's 0.01: after
    # 300 steps the running statistics still score 44 % where the batch statistics score 99 %, so the
    # statistics are recomputed before evaluating (precise BN)
    metrics = overfit(
        cache,
        tmp_path,
        "demo_semseg_spunet_synthetic",
        ["optim.lr=0.01", "optim.max_steps=150", "evaluation.precise_bn_batches=1"],
    )
    assert metrics["miou"] >= 0.9, metrics["iou_per_class"]


@pytest.mark.slow
def test_resnet50_overfits_one_rooms_frames(tmp_path, cache):
    # ResNet-50 on the room's four 80×60 frames (2D), scored on the same frames
    metrics = overfit(
        cache,
        tmp_path,
        "demo_semseg_resnet50_frames",
        [
            "data.source=synthetic",
            "data.root=''",
            "data.train_frames=''",
            "data.val_frames=''",
            "data.batch_size=4",
            "data.val_batch_size=4",
            "optim.lr=1e-3",
            "optim.max_steps=100",
        ],
    )
    assert metrics["miou"] >= 0.9, metrics["iou_per_class"]


@pytest.mark.skipif(not LABELLED_FRAMES.is_dir(), reason=f"{LABELLED_FRAMES} absent (real labelled frames)")
def test_real_frame_demos_split_the_labelled_frames():
    from gs3.downstream.data import build_downstream_dataset

    for name in ("demo_semseg_resnet50_frames", "demo_semseg_spunet_frames"):
        config = load_finetune_config(name, [f"data.root={LABELLED_FRAMES}"])
        train = build_downstream_dataset(config.data, "train", 0)
        val = build_downstream_dataset(config.data, "val", 0)
        assert (len(train), len(val)) == (14, 13)


def test_precise_batchnorm_is_the_plain_average_and_leaves_a_frozen_encoder_alone():
    from gs3.downstream.segmentor import Segmentor
    from gs3.train.evaluation import recompute_batchnorm
    from test_downstream_segmentor import SPUNET, point_batch

    segmentor = Segmentor(SPUNET, 5, head={"type": "mlp", "hidden_channels": 8}, linear_probe=True, seed=0)
    encoder_before = {k: v.clone() for k, v in segmentor.encoder.state_dict().items()}
    batches = [point_batch(seed) for seed in range(3)]
    with torch.no_grad():  # reference: the hidden layer's per-batch mean and unbiased variance, averaged
        hidden = [segmentor.head.hidden(segmentor.features(b)) for b in batches]
    expected_mean = torch.stack([h.mean(0) for h in hidden]).mean(0)
    expected_var = torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0)
    segmentor.eval()
    assert recompute_batchnorm(segmentor, batches, max_batches=5) == 3
    torch.testing.assert_close(segmentor.head.norm.running_mean, expected_mean)
    torch.testing.assert_close(segmentor.head.norm.running_var, expected_var)
    assert segmentor.head.norm.momentum == 0.1 and not segmentor.training
    for key, value in segmentor.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key


class FixedPrediction(torch.nn.Module):
    """Returns given logits whatever the batch (to check how evaluation scores them)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, batch: dict) -> torch.Tensor:
        return self.logits


def test_evaluation_scores_the_original_points_through_the_inverse_map_and_counts_bad_samples():
    from collections import Counter

    from gs3.train.evaluation import evaluate_segmentor

    # 3 sampled points predicted 0, 1, 2; 5 original points map to them through `inverse`
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), 3).float()
    batch = {
        "coord": torch.zeros(3, 3),
        "segment": torch.tensor([0, 1, 2]),
        "inverse": torch.tensor([0, 0, 1, 2, 2]),
        "origin_segment": torch.tensor([0, 1, 1, 2, -1]),
        "skipped": {"unreadable sample": 1},
    }
    skipped: Counter = Counter()
    scores = evaluate_segmentor(FixedPrediction(logits), [batch, batch], ("a", "b", "c"), skipped=skipped)
    # per batch: (truth, prediction) = (0,0) (1,0) (1,1) (2,2); the ignored fifth point is not scored
    assert torch.equal(scores.confusion, 2 * torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]]))
    assert scores.allacc == pytest.approx(3 / 4) and scores.iou_per_class == pytest.approx(
        [1 / 2, 1 / 2, 1.0]
    )
    assert skipped == {"unreadable sample": 2}
    # without an inverse (images), predictions are scored as they are
    image = {"image": torch.zeros(1, 1, 3, 3), "segment": torch.tensor([[[0, 2, -1]]])}
    image_scores = evaluate_segmentor(FixedPrediction(logits[None, None]), [image], ("a", "b", "c"))
    assert torch.equal(image_scores.confusion, torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0]]))
