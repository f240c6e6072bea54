"""Annotation-free pretraining: the loop, its losses, its checkpoint, the CLI and the evaluation path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2scene_core import cli
from clip2scene_core.clip.embedding_file import save_text_embeddings
from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.model import build_model
from clip2scene_core.segmenter import ClassSpace, Segmenter
from clip2scene_core.train.batching import PretrainCollator
from clip2scene_core.checkpoint import FORMAT, load_checkpoint
from clip2scene_core.train.config import build_config, read_yaml_config
from clip2scene_core.train.evaluation import predict_frame
from clip2scene_core.train.losses import (
    LossConfig, aligned_point_labels, cosine_logits, kl_distillation_loss, pretraining_loss, pseudo_labels,
)
from clip2scene_core.train.pairs import PairingOptions, SimulatedTeacher
from clip2scene_core.train.pretrain import (
    DEFAULT_PRETRAIN_CONFIG, model_config_for, optimizer_step, pretrain, pretraining_losses,
)
from clip2scene_core.train.schedule import build_optimizer, build_scheduler
from clip2scene_core.train.splits import open_split

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "config" / "pretrain_tiny.yaml"
TEXT_SPEC = {"kind": "test", "name": "random-384", "weights": "none"}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """Random unit class embeddings (384-d) standing in for a text encoder."""
    embeddings = torch.nn.functional.normalize(torch.randn(10, 384, generator=torch.Generator().manual_seed(0)), dim=1)
    path = tmp_path_factory.mktemp("text") / "synthetic_text.pt"
    return save_text_embeddings(path, embeddings, list(SYNTHETIC_CLASSES), TEXT_SPEC, ["{}"])


def tiny_config(text_file: Path, out_dir: Path, **overrides) -> dict:
    return build_config(DEFAULT_PRETRAIN_CONFIG, [TINY], [f"text.embeddings_file={text_file}", f"out_dir={out_dir}"]
                        + [f"{key}={json.dumps(value)}" for key, value in overrides.items()])


@pytest.fixture(scope="module")
def pretrained(text_file, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("pretrain")
    return pretrain(tiny_config(text_file, out_dir, **{"eval.enabled": True, "eval.every_epochs": 1}))


@pytest.fixture(scope="module")
def tiny_frames(text_file, tmp_path_factory):
    config = tiny_config(text_file, tmp_path_factory.mktemp("unused"))
    return list(open_split(config["data"], "train").frames), config


def test_pretraining_writes_a_self_describing_checkpoint_with_val_metrics(pretrained, text_file):
    checkpoint = load_checkpoint(pretrained)
    assert checkpoint["format"] == FORMAT and checkpoint["text_encoder"] == TEXT_SPEC
    assert checkpoint["model_config"]["text_dim"] == 384 and checkpoint["model_config"]["in_channels"] == 1
    assert checkpoint["train_classes"] == list(SYNTHETIC_CLASSES) and checkpoint["voxel_size"] == 0.3
    metrics = checkpoint["metrics"]
    assert metrics["step"] == 4 and 0.0 <= metrics["miou"] <= 1.0
    assert set(metrics["per_class_iou"]) == set(SYNTHETIC_CLASSES)
    torch.testing.assert_close(checkpoint["extra"]["class_embeddings"],
                               torch.load(text_file, weights_only=True)["embeddings"])
    build_model(checkpoint["model_config"]).load_state_dict(checkpoint["state_dict"])
    history = [json.loads(line) for line in (pretrained.parent / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    for record in history:
        assert record["total"] == pytest.approx(record["semantic"] + record["spatial_temporal"], rel=1e-5)
        assert record["pairs"] > 0


class FakeTextEncoder:
    """The test text space for the Segmenter; its class space is then replaced by the stored embeddings."""

    spec, name, dim = TEXT_SPEC, "random-384", 384

    def encode(self, prompts):
        return torch.nn.functional.normalize(torch.ones(len(prompts), self.dim), dim=1)


def test_pretraining_writes_its_val_learning_curve(pretrained):
    curve = [json.loads(line) for line in (pretrained.parent / "val_curve.jsonl").read_text().splitlines()]
    assert [(point["epoch"], point["step"]) for point in curve] == [(1, 2), (2, 4)]  # 2 frames, batch 1
    metrics = load_checkpoint(pretrained)["metrics"]
    assert curve[-1]["miou"] == metrics["miou"] and curve[-1]["camera_points_miou"] == metrics["camera_points_miou"]
    assert all(0 <= point["miou"] <= 1 for point in curve)


def test_evaluation_predicts_exactly_what_the_segmenter_does(pretrained, tiny_frames):
    checkpoint = load_checkpoint(pretrained)
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    text = checkpoint["extra"]["class_embeddings"]
    frame = tiny_frames[0][0]
    expected = predict_frame(model.eval(), frame, text, checkpoint["input_features"], checkpoint["voxel_size"])
    segmenter = Segmenter(checkpoint, device="cpu", text_encoder=FakeTextEncoder())
    segmenter.set_class_space(ClassSpace(tuple(SYNTHETIC_CLASSES), text, version=2))
    labels = segmenter.segment_frame(frame).labels.astype(np.int64)
    assert torch.equal(torch.from_numpy(labels) + 1, expected)


def one_batch(tiny_frames, sigma: float = 0.2):
    frames, config = tiny_frames
    text = torch.load(config["text"]["embeddings_file"], weights_only=True)["embeddings"]
    collate = PretrainCollator(SimulatedTeacher(text, sigma), PairingOptions(num_sweeps=2), ("intensity",), 0.1)
    return collate(frames, [0, 1], torch.Generator().manual_seed(0)), text, config


def test_training_steps_reduce_the_loss_on_a_fixed_batch(tiny_frames):
    batch, text, config = one_batch(tiny_frames)
    torch.manual_seed(0)
    model = build_model(model_config_for(config, 384))
    optimizer = build_optimizer(model.parameters(), {"lr": 0.2})
    scheduler = build_scheduler(optimizer, 100)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    losses = []
    for _ in range(8):
        loss = pretraining_losses(model, batch, text, config, 0, 10, torch.Generator())["total"]
        optimizer_step(loss, optimizer, scheduler, scaler)
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def heads_at_pairs(model, batch, config):
    from clip2scene_core.inputs import sparse_input

    sparse, inverse = sparse_input(batch.points, batch.features, config["voxel_size"], batch.sample)
    heads = model(sparse)
    rows = inverse[batch.pair_point]
    return heads["semantic"][rows], heads["consistency"][rows]


def test_s3_trains_eq1_on_the_points_own_predictions_once_active(tiny_frames):
    batch, text, config = one_batch(tiny_frames)
    torch.manual_seed(0)
    model = build_model(model_config_for(config, 384)).eval()  # eval: BatchNorm gives repeatable outputs
    always_points = {**config, "s3": {**config["s3"], "enabled": True, "start_epoch": 1, "probability": 1.0,
                                      "point_labels": "argmax"}}
    semantic, consistency = heads_at_pairs(model, batch, config)
    on_points = pretraining_loss(batch.pixel_features, semantic, consistency, text, batch.cell_ids,
                                 pseudo_labels(semantic, text), LossConfig())
    on_pixels = pretraining_loss(batch.pixel_features, semantic, consistency, text, batch.cell_ids, None, LossConfig())
    before = pretraining_losses(model, batch, text, always_points, 0, 1, torch.Generator())
    after = pretraining_losses(model, batch, text, always_points, 1, 1, torch.Generator())
    torch.testing.assert_close(before["semantic"], on_pixels["semantic"])
    torch.testing.assert_close(after["semantic"], on_points["semantic"])
    assert not torch.allclose(on_points["semantic"], on_pixels["semantic"])


def test_aligned_s3_trains_eq1_on_the_points_labels_aligned_with_the_teacher(tiny_frames):
    batch, text, config = one_batch(tiny_frames)
    torch.manual_seed(0)
    model = build_model(model_config_for(config, 384)).eval()
    aligned = {**config, "s3": {**config["s3"], "enabled": True, "start_epoch": 0, "probability": 1.0,
                                "point_labels": "aligned"}}
    semantic, consistency = heads_at_pairs(model, batch, config)
    targets = aligned_point_labels(semantic, text, pseudo_labels(batch.pixel_features, text), 0.5)
    expected = pretraining_loss(batch.pixel_features, semantic, consistency, text, batch.cell_ids, targets,
                                LossConfig())
    losses = pretraining_losses(model, batch, text, aligned, 0, 0, torch.Generator())
    torch.testing.assert_close(losses["semantic"], expected["semantic"])
    with pytest.raises(ValueError, match="s3.point_labels must be one of"):
        pretraining_losses(model, batch, text, {**aligned, "s3": {**aligned["s3"], "point_labels": "soft"}}, 0, 0,
                           torch.Generator())
    # pretrain() checks it before anything runs (S3 would only reach it halfway through training)
    with pytest.raises(ValueError, match="s3.point_labels must be one of"):
        pretrain({"s3": {"point_labels": "soft"}, "data": {"root": "/nonexistent"}})


def test_checkpoints_from_before_s3_point_labels_read_as_the_argmax():
    from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, recorded_pretrain_config

    old = {**DEFAULT_PRETRAIN_CONFIG, "s3": {k: v for k, v in DEFAULT_PRETRAIN_CONFIG["s3"].items()
                                             if k != "point_labels"}}
    argmax = {**DEFAULT_PRETRAIN_CONFIG, "s3": {**DEFAULT_PRETRAIN_CONFIG["s3"], "point_labels": "argmax"}}
    assert recorded_pretrain_config({"extra": {"config": old}}) == argmax


def test_kl_row_replaces_eq1_by_logit_distillation(tiny_frames):
    batch, text, config = one_batch(tiny_frames)
    torch.manual_seed(0)
    model = build_model(model_config_for(config, 384)).eval()
    semantic, _ = heads_at_pairs(model, batch, config)
    kl = {**config, "loss": {**config["loss"], "semantic_loss": "kl"}}
    losses = pretraining_losses(model, batch, text, kl, 0, 10, torch.Generator())
    expected = kl_distillation_loss(cosine_logits(semantic, text, 0.5), cosine_logits(batch.pixel_features, text, 0.5))
    torch.testing.assert_close(losses["semantic"], expected)
    torch.testing.assert_close(losses["total"], losses["semantic"] + losses["spatial_temporal"])


def test_checkpoints_recording_the_retired_kl_flag_read_as_semantic_loss_kl():
    from clip2scene_core.train.config import merge_config
    from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, recorded_pretrain_config

    old = {key: value for key, value in DEFAULT_PRETRAIN_CONFIG.items()}
    assert recorded_pretrain_config({"extra": {"config": {**old, "kl_distillation": False}}}) == old
    upgraded = recorded_pretrain_config({"extra": {"config": {**old, "kl_distillation": True}}})
    assert upgraded["loss"]["semantic_loss"] == "kl" and "kl_distillation" not in upgraded
    with pytest.raises(ValueError, match="'kl_distillation' was replaced by 'loss.semantic_loss: kl'"):
        merge_config(DEFAULT_PRETRAIN_CONFIG, {"kl_distillation": True})


def test_cli_pretrain_then_evaluate_writes_the_reports(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["pretrain", "--config", str(TINY), "--set", f"text.embeddings_file={text_file}",
                     "--out", str(out), "--epochs", "1", "--set", "pairs.num_sweeps=1"])
    assert code == 0 and (out / "model.pt").is_file()
    assert load_checkpoint(out / "model.pt")["extra"]["config"]["pairs"]["num_sweeps"] == 1
    report = tmp_path / "report"
    assert cli.main(["evaluate", "--checkpoint", str(out / "model.pt"), "--out", str(report),
                     "--teacher-baseline", "--backend", "pure"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "annotation-free" in printed and "teacher projected pseudo-labels" in printed
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["mode"] == "annotation-free" and set(summary["per_class"]) == set(SYNTHETIC_CLASSES)
    assert 0.0 <= summary["teacher_miou"] <= 1.0
    assert "mIoU" in (report / "iou.txt").read_text()
    assert (report / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_config_files_merge_over_the_defaults():
    for path in sorted((ROOT / "config").glob("pretrain*.yaml")):
        build_config(DEFAULT_PRETRAIN_CONFIG, [path])
    # config/pretrain.yaml spells out every default (the synthetic splits aside).
    full = read_yaml_config(ROOT / "config" / "pretrain.yaml")
    assert {k: v for k, v in full.items() if k != "data"} == {
        k: v for k, v in DEFAULT_PRETRAIN_CONFIG.items() if k != "data"}


def test_unknown_config_keys_and_bad_values_fail_clearly(text_file, tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        pretrain({"epoch": 3})
    with pytest.raises(ValueError, match="model_preset"):
        pretrain(tiny_config(text_file, tmp_path, model_preset="huge"))
    assert cli.main(["pretrain", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_pretraining_on_real_nuscenes_with_a_maskclip_teacher(real_data, tmp_path):
    """The real-data path: nuScenes loader, MaskCLIP patch features precomputed into the cache, training."""
    import open_clip

    from clip2scene_core.clip.text_encoders import open_clip_spec
    from clip2scene_core.data.labels import NUSCENES_CLASSES

    architecture = tmp_path / "Tiny-ViT-Train.json"  # a random tiny ViT: nothing to download
    architecture.write_text(json.dumps({
        "embed_dim": 24,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(architecture)
    spec = open_clip_spec("Tiny-ViT-Train", "none")
    embeddings = torch.nn.functional.normalize(torch.randn(16, 24, generator=torch.Generator().manual_seed(1)), dim=1)
    text = save_text_embeddings(tmp_path / "nuscenes_text.pt", embeddings, list(NUSCENES_CLASSES), spec, ["{}"])
    config = build_config(DEFAULT_PRETRAIN_CONFIG, [TINY], [
        "data.kind=nuscenes", f"data.root={real_data / 'nuscenes-mini'}", "data.options={}",
        f"text.embeddings_file={text}", "teacher.kind=maskclip", "teacher.model_name=Tiny-ViT-Train",
        "teacher.pretrained=none", "teacher.input_size=[32, 64]", f"teacher.feature_cache={tmp_path / 'cache'}",
        "pairs.num_sweeps=1", "epochs=1", "eval.enabled=true", f"out_dir={tmp_path / 'run'}"])
    checkpoint = load_checkpoint(pretrain(config))
    assert checkpoint["text_encoder"] == spec and checkpoint["model_config"]["text_dim"] == 24
    assert checkpoint["metrics"]["step"] == 1 and checkpoint["metrics"]["miou"] is not None
    assert len(list((tmp_path / "cache").glob("*/*.pt"))) == 6  # one patch grid per camera image
