"""Label-efficient fine-tuning: label fractions, the text-initialised classifier, checkpoints and evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clip2scene_core import cli
from clip2scene_core.clip.embedding_file import save_text_embeddings
from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.inputs import frame_features, sparse_input
from clip2scene_core.model import build_model
from clip2scene_core.train.batching import LabelledCollator
from clip2scene_core.checkpoint import load_checkpoint
from clip2scene_core.train.config import build_config
from clip2scene_core.train.evaluation import evaluate_checkpoint, predict_frame
from clip2scene_core.train.finetune import (
    DEFAULT_FINETUNE_CONFIG, CosineClassifierNetwork, finetune, finetuning_loss, label_fraction_stride,
)
from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, optimizer_step, pretrain
from clip2scene_core.train.schedule import build_optimizer, build_scheduler
from clip2scene_core.train.splits import open_split

ROOT = Path(__file__).resolve().parents[1]
TINY_PRETRAIN = ROOT / "config" / "pretrain_tiny.yaml"
TINY = ROOT / "config" / "finetune_tiny.yaml"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    embeddings = torch.nn.functional.normalize(torch.randn(10, 384, generator=torch.Generator().manual_seed(0)), dim=1)
    return save_text_embeddings(tmp_path_factory.mktemp("text") / "text.pt", embeddings, list(SYNTHETIC_CLASSES),
                                {"kind": "test", "name": "random-384", "weights": "none"}, ["{}"])


@pytest.fixture(scope="module")
def pretrained(text_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    return pretrain(build_config(DEFAULT_PRETRAIN_CONFIG, [TINY_PRETRAIN],
                                 [f"text.embeddings_file={text_file}", f"out_dir={out}", "epochs=1"]))


def finetune_config(text_file: Path, out: Path, *extra: str) -> dict:
    return build_config(DEFAULT_FINETUNE_CONFIG, [TINY],
                        [f"text.embeddings_file={text_file}", f"out_dir={out}", *extra])


def test_label_fraction_keeps_every_nth_frame():
    assert label_fraction_stride(1.0) == 1
    assert label_fraction_stride(0.01) == 100  # 1 % = every 100th frame
    assert label_fraction_stride(0.1) == 10
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="label_fraction"):
            label_fraction_stride(bad)


def test_text_initialised_classifier_starts_at_the_annotation_free_prediction(pretrained):
    checkpoint = load_checkpoint(pretrained)
    network = build_model(checkpoint["model_config"])
    network.load_state_dict(checkpoint["state_dict"])
    text = checkpoint["extra"]["class_embeddings"]
    model = CosineClassifierNetwork(network, text, temperature=0.07).eval()
    frame = open_split(checkpoint["extra"]["config"]["data"], "val").frames[0]
    sparse, inverse = sparse_input(torch.from_numpy(frame.points),
                                   torch.from_numpy(frame_features(frame, checkpoint["input_features"])), 0.3)
    with torch.no_grad():
        classifier_labels = model(sparse)[inverse].argmax(dim=1) + 1
    zero_shot = predict_frame(network, frame, text, checkpoint["input_features"], checkpoint["voxel_size"])
    assert torch.equal(classifier_labels, zero_shot)


def test_fine_tuning_steps_reduce_the_loss_on_labelled_frames(pretrained):
    checkpoint = load_checkpoint(pretrained)
    network = build_model(checkpoint["model_config"])
    network.load_state_dict(checkpoint["state_dict"])
    model = CosineClassifierNetwork(network, checkpoint["extra"]["class_embeddings"], 0.07)
    frames = list(open_split(checkpoint["extra"]["config"]["data"], "train").frames)
    batch = LabelledCollator(("intensity",))(frames, [0, 1], torch.Generator())
    optimizer = build_optimizer(model.parameters(), {"lr": 0.02})
    scheduler = build_scheduler(optimizer, 100)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    losses = []
    for _ in range(6):
        loss = finetuning_loss(model, batch, 0.3, amp=False)
        optimizer_step(loss, optimizer, scheduler, scaler)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_fine_tuned_checkpoint_carries_its_classifier_and_is_evaluated_with_it(pretrained, text_file, tmp_path):
    path = finetune(finetune_config(text_file, tmp_path / "ft", f"checkpoint={pretrained}", "label_fraction=0.5",
                                    "eval.enabled=true"))
    checkpoint = load_checkpoint(path)
    assert checkpoint["extra"]["stage"] == "finetune" and checkpoint["extra"]["classifier"].shape == (10, 384)
    assert checkpoint["metrics"]["labelled_frames"] == 1 and checkpoint["metrics"]["label_fraction"] == 0.5
    assert checkpoint["model_config"] == load_checkpoint(pretrained)["model_config"]
    report = evaluate_checkpoint({"checkpoint": str(path), "out_dir": str(tmp_path / "eval"), "device": "cpu"})
    assert report["mode"] == "finetuned"
    assert report["metrics"]["miou"] == pytest.approx(checkpoint["metrics"]["miou"])
    annotation_free = evaluate_checkpoint({"checkpoint": str(path), "mode": "annotation-free",
                                           "out_dir": str(tmp_path / "eval_af"), "device": "cpu"})
    assert annotation_free["mode"] == "annotation-free"
    with pytest.raises(ValueError, match="no fine-tuned classifier"):
        evaluate_checkpoint({"checkpoint": str(pretrained), "mode": "finetuned", "out_dir": str(tmp_path / "x")})


def test_cli_fine_tunes_from_scratch_with_a_label_fraction(text_file, tmp_path, capsys):
    out = tmp_path / "scratch"
    code = cli.main(["finetune", "--config", str(TINY), "--set", f"text.embeddings_file={text_file}",
                     "--label-fraction", "1.0", "--epochs", "1", "--out", str(out)])
    assert code == 0 and str(out / "model.pt") in capsys.readouterr().out
    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint["metrics"]["labelled_frames"] == 2
    assert [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()] == [1, 2]


def test_fine_tuning_config_files_merge_over_the_defaults():
    for path in sorted((ROOT / "config").glob("finetune*.yaml")):
        build_config(DEFAULT_FINETUNE_CONFIG, [path])
