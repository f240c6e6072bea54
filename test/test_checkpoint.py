"""Checkpoints load with weights_only, fail clearly, write atomically, and resume a run exactly."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from clip2scene_core import checkpoint as checkpoint_module
from clip2scene_core.checkpoint import (
    FORMAT,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from clip2scene_core.train.schedule import build_optimizer, build_scheduler

TEXT_ENCODER = {"kind": "sentence-transformers", "name": "all-MiniLM-L6-v2", "weights": "/pkg/minilm"}


def tiny_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def describe(model: torch.nn.Module) -> dict:
    return dict(
        model_config={"widths": [8], "backend": "pure"},
        state_dict=model.state_dict(),
        text_encoder=TEXT_ENCODER,
        voxel_size=0.1,
        input_features=["intensity"],
        train_classes=["road", "car"],
        metrics={"miou": np.float64(0.25), "per_class": np.array([0.5, 0.0]), "epoch": 3},
    )


def test_checkpoint_round_trips_through_weights_only_load(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "out" / "model.pt", **describe(model), extra={"note": "x"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    loaded = load_checkpoint(path)
    assert loaded["text_encoder"] == TEXT_ENCODER
    assert loaded["voxel_size"] == 0.1 and loaded["train_classes"] == ["road", "car"]
    assert loaded["metrics"]["miou"] == 0.25 and isinstance(loaded["metrics"]["miou"], float)
    assert torch.equal(loaded["metrics"]["per_class"], torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert loaded["extra"] == {"note": "x"}
    fresh = tiny_model()
    fresh.load_state_dict(loaded["state_dict"])
    for a, b in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary left behind


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")


def test_wrong_format_says_what_it_found(tmp_path):
    torch.save({"format": "other/2"}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="found 'other/2'"):
        load_checkpoint(tmp_path / "a.pt")
    torch.save({"model": 1}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="no 'format' key"):
        load_checkpoint(tmp_path / "b.pt")
    torch.save([1, 2], tmp_path / "c.pt")
    with pytest.raises(ValueError, match="holds a list"):
        load_checkpoint(tmp_path / "c.pt")
    (tmp_path / "d.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="d.pt"):
        load_checkpoint(tmp_path / "d.pt")
    torch.save({"format": FORMAT, "state_dict": {}}, tmp_path / "e.pt")
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path / "e.pt")


def test_unsafe_payloads_are_rejected_before_writing(tmp_path):
    fields = describe(tiny_model())
    with pytest.raises(TypeError, match=r"metrics\['bad'\]"):
        save_checkpoint(tmp_path / "m.pt", **{**fields, "metrics": {"bad": object()}})
    with pytest.raises(ValueError, match="weights"):
        save_checkpoint(tmp_path / "m.pt", **{**fields, "text_encoder": {"kind": "x", "name": "y"}})
    assert not any(tmp_path.iterdir())


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "model.pt", **describe(tiny_model()))
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, **describe(tiny_model()))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def train_steps(model, optimizer, scheduler, generator, steps):
    """A step that draws from every RNG a real loop uses: torch, numpy, python and a named generator."""
    for _ in range(steps):
        inputs = torch.randn(16, 4)
        noise = torch.from_numpy(np.random.standard_normal((16, 3)).astype(np.float32))
        scale = random.random()
        order = torch.randperm(16, generator=generator)
        loss = ((model(inputs[order]) - noise[order]) ** 2).mean() * scale
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def fresh_run(seed):
    seed_everything(seed)
    model = tiny_model()
    optimizer = build_optimizer(model.parameters())
    scheduler = build_scheduler(optimizer, 10, {"warmup_steps": 2})
    return model, optimizer, scheduler, torch.Generator().manual_seed(seed)


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    model, optimizer, scheduler, generator = fresh_run(0)
    train_steps(model, optimizer, scheduler, generator, 10)
    reference = [p.detach().clone() for p in model.parameters()]

    model, optimizer, scheduler, generator = fresh_run(0)
    train_steps(model, optimizer, scheduler, generator, 4)
    path = save_training_state(
        tmp_path / "state.pt", **describe(model), optimizer=optimizer, scheduler=scheduler,
        epoch=1, step=4, generators={"shuffle": generator},
    )
    torch.load(path, weights_only=True)  # everything in it is weights_only-safe

    model, optimizer, scheduler, generator = fresh_run(123)  # other init and RNG states
    state = load_training_state(
        path, optimizer=optimizer, scheduler=scheduler, generators={"shuffle": generator}
    )
    model.load_state_dict(state["state_dict"])
    assert state["training_state"]["epoch"] == 1 and state["training_state"]["step"] == 4
    train_steps(model, optimizer, scheduler, generator, 6)
    for resumed, uninterrupted in zip(model.parameters(), reference):
        assert torch.equal(resumed, uninterrupted)


def test_training_state_is_also_a_model_checkpoint_and_needs_its_generators(tmp_path):
    model, optimizer, scheduler, generator = fresh_run(0)
    path = save_training_state(
        tmp_path / "state.pt", **describe(model), optimizer=optimizer, scheduler=scheduler,
        epoch=0, step=0,
    )
    assert load_checkpoint(path)["train_classes"] == ["road", "car"]
    with pytest.raises(ValueError, match="generator 'shuffle'"):
        load_training_state(path, optimizer=optimizer, generators={"shuffle": generator})


def test_plain_checkpoint_cannot_be_resumed(tmp_path):
    model, optimizer, _, _ = fresh_run(0)
    path = save_checkpoint(tmp_path / "model.pt", **describe(model))
    with pytest.raises(ValueError, match="without training state"):
        load_training_state(path, optimizer=optimizer)
