"""``resume`` continues an interrupted run exactly: same parameters as an uninterrupted run with the same seed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clip2scene_core.clip.embedding_file import save_text_embeddings
from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.train.batching import epoch_batches
from clip2scene_core.checkpoint import load_checkpoint
from clip2scene_core.train.config import build_config
from clip2scene_core.train.finetune import DEFAULT_FINETUNE_CONFIG, finetune
from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, pretrain

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "config" / "pretrain_tiny.yaml"
TINY_FINETUNE = ROOT / "config" / "finetune_tiny.yaml"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    embeddings = torch.nn.functional.normalize(torch.randn(10, 384, generator=torch.Generator().manual_seed(0)), dim=1)
    return save_text_embeddings(tmp_path_factory.mktemp("text") / "text.pt", embeddings, list(SYNTHETIC_CLASSES),
                                {"kind": "test", "name": "random-384", "weights": "none"}, ["{}"])


def assert_same_parameters(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def history(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "history.jsonl").read_text().splitlines()]


def test_pretraining_stopped_mid_epoch_and_resumed_equals_an_uninterrupted_run(text_file, tmp_path):
    # 2 epochs x 2 steps; S3 from epoch 1, augmentation and teacher noise on: every random stream is used.
    def config(out: str, *extra: str) -> dict:
        return build_config(DEFAULT_PRETRAIN_CONFIG, [TINY], [f"text.embeddings_file={text_file}",
                                                              f"out_dir={tmp_path / out}", *extra])

    uninterrupted = pretrain(config("a"))
    stopped = pretrain(config("b", "max_steps=3", "checkpoint_every=1"))
    assert stopped.name == "last.pt" and load_checkpoint(stopped)["training_state"]["step"] == 3
    resumed = pretrain(config("b", "resume=auto"))
    assert_same_parameters(uninterrupted, resumed)
    assert history(tmp_path / "a") == history(tmp_path / "b")  # same losses at every step, S3 coin included
    assert load_checkpoint(resumed)["metrics"]["step"] == 4


def test_finetuning_resumes_exactly(text_file, tmp_path):
    def config(out: str, *extra: str) -> dict:
        return build_config(DEFAULT_FINETUNE_CONFIG, [TINY_FINETUNE], [f"text.embeddings_file={text_file}",
                                                                       f"out_dir={tmp_path / out}", *extra])

    uninterrupted = finetune(config("a"))
    finetune(config("b", "max_steps=1"))
    resumed = finetune(config("b", "resume=auto"))
    assert_same_parameters(uninterrupted, resumed)
    torch.testing.assert_close(load_checkpoint(uninterrupted)["extra"]["classifier"],
                               load_checkpoint(resumed)["extra"]["classifier"], rtol=0, atol=0)


def test_batch_order_depends_only_on_seed_and_epoch():
    assert epoch_batches(10, 2, seed=1, epoch=3) == epoch_batches(10, 2, seed=1, epoch=3)
    assert epoch_batches(10, 2, seed=1, epoch=3) != epoch_batches(10, 2, seed=1, epoch=4)
    ranks = [epoch_batches(10, 2, seed=1, epoch=0, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # 5 frames per rank -> 2 full batches each
    seen = [i for batches in ranks for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) == 8


def test_resuming_needs_a_training_state(text_file, tmp_path):
    config = build_config(DEFAULT_PRETRAIN_CONFIG, [TINY], [f"text.embeddings_file={text_file}",
                                                            f"out_dir={tmp_path}", "epochs=1"])
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        pretrain({**config, "resume": str(tmp_path / "nowhere.pt")})
    model = pretrain(config)
    with pytest.raises(ValueError, match="without training state"):
        pretrain({**config, "resume": str(model)})
