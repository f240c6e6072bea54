"""Prompt templates, class vocabularies, class-embedding ensembling and cache, encode-text CLI."""
from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from clip2scene_core import cli
from clip2scene_core.clip.embedding_file import load_text_embeddings, save_text_embeddings
from clip2scene_core.clip.prompts import (
    DATASET_KINDS,
    SCENE_TEMPLATES,
    TEMPLATES,
    ClassPrompt,
    builtin_vocabulary_dirs,
    class_prompts,
    encode_classes,
    load_class_vocabulary,
    validate_prompt_templates,
)
from clip2scene_core.clip.text_encoders import TextEncoder
from clip2scene_core.data.labels import CLASS_NAMES


class CountingEncoder(TextEncoder):
    """Deterministic fake text space: each prompt hashes to a fixed random unit vector."""

    def __init__(self, weights: str = "w1", dim: int = 8) -> None:
        self.name, self.dim, self.weights = "fake", dim, weights
        self.calls: list[list[str]] = []

    def encode(self, prompts):
        self.calls.append(list(prompts))
        rows = []
        for prompt in prompts:
            seed = int(hashlib.sha256(f"{self.weights}|{prompt}".encode()).hexdigest()[:8], 16)
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return F.normalize(torch.stack(rows), dim=-1)

    @property
    def spec(self):
        return {"kind": "fake", "name": self.name, "weights": self.weights}


def test_85_templates_are_clips_80_imagenet_templates_plus_5_scene_templates():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert len(TEMPLATES) == 85 and len(set(TEMPLATES)) == 85
    assert all(template.count("{}") == 1 for template in TEMPLATES)
    assert list(TEMPLATES[:80]) == [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    assert TEMPLATES[80:] == SCENE_TEMPLATES and "a photo of a {} in the scene." in SCENE_TEMPLATES


def test_class_embedding_is_the_normalised_mean_over_templates_and_synonyms():
    encoder = CountingEncoder()
    templates = ("a photo of a {}.", "there is a {} in the scene.", "{}")
    classes = [ClassPrompt("driveable_surface", synonyms=("road", "driveable surface")), "traffic_cone"]
    embeddings = encode_classes(encoder, classes, templates)
    assert embeddings.shape == (2, 8)
    expected = [
        F.normalize(encoder.encode(class_prompts(["road", "driveable surface"], templates)).mean(0), dim=0),
        F.normalize(encoder.encode(class_prompts(["traffic cone"], templates)).mean(0), dim=0),
    ]
    torch.testing.assert_close(embeddings, torch.stack(expected))
    assert len(encoder.calls[0]) == 2 * 3 + 3  # all classes' prompts in one encoder call


def test_second_call_reads_the_cache_instead_of_running_the_encoder(tmp_path):
    classes = load_class_vocabulary("nuscenes")[:3]
    encoder = CountingEncoder()
    first = encode_classes(encoder, classes, TEMPLATES, cache_dir=tmp_path)
    assert len(encoder.calls) == 1
    second = encode_classes(encoder, classes, TEMPLATES, cache_dir=tmp_path)
    assert len(encoder.calls) == 1
    torch.testing.assert_close(first, second)
    # One new class: only it is encoded.
    encode_classes(encoder, classes + ["lamp post"], TEMPLATES, cache_dir=tmp_path)
    assert len(encoder.calls) == 2 and len(encoder.calls[-1]) == len(TEMPLATES)


@pytest.mark.parametrize("change", ["templates", "weights", "synonyms"])
def test_cache_key_covers_encoder_templates_and_synonyms(tmp_path, change):
    classes, templates = [ClassPrompt("car", ("car",))], TEMPLATES
    encode_classes(CountingEncoder(), classes, templates, cache_dir=tmp_path)
    encoder = CountingEncoder(weights="w2" if change == "weights" else "w1")
    if change == "templates":
        templates = SCENE_TEMPLATES
    elif change == "synonyms":
        classes = [ClassPrompt("car", ("car", "automobile"))]
    encode_classes(encoder, classes, templates, cache_dir=tmp_path)
    assert len(encoder.calls) == 1  # a cache miss: the encoder ran


EXPECTED_VOCABULARY = {
    "synthetic": ["road", "sidewalk", "terrain", "building", "vegetation", "pole", "car", "truck",
                  "pedestrian", "traffic cone"],
    "nuscenes": ["barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                 "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk",
                 "terrain", "manmade", "vegetation"],
    "semantickitti": ["car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
                      "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
                      "vegetation", "trunk", "terrain", "pole", "traffic-sign"],
    "scannet": ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
                "bathtub", "otherfurniture"],
}


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_vocabularies_follow_the_dataset_label_order(kind):
    classes = load_class_vocabulary(kind)
    names = [c.name for c in classes]
    assert names == EXPECTED_VOCABULARY[kind] == list(CLASS_NAMES[kind])
    assert all(c.phrases and all(p.strip() for p in c.phrases) for c in classes)
    assert load_class_vocabulary(builtin_vocabulary_dirs()[0] / f"{kind}.yaml") == classes


def test_installed_vocabularies_are_found_under_ament_prefixes(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    dirs = builtin_vocabulary_dirs()
    assert dirs[-2:] == [tmp_path / p / "share" / "clip2scene_ros" / "config" / "classes" for p in "ab"]


def test_vocabulary_synonyms_and_display_names():
    nuscenes = {c.name: c for c in load_class_vocabulary("nuscenes")}
    assert nuscenes["driveable_surface"].phrases == ("road", "driveable surface")
    assert nuscenes["traffic_cone"].display_name == "traffic cone"
    assert nuscenes["manmade"].display_name == "man-made structure"
    assert ClassPrompt("traffic_cone").phrases == ("traffic cone",)


def test_bad_vocabularies_are_reported(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_class_vocabulary(missing)
    no_classes = tmp_path / "empty.yaml"
    no_classes.write_text("dataset: x\n")
    with pytest.raises(ValueError, match="classes"):
        load_class_vocabulary(no_classes)
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text("classes:\n  - name: car\n  - name: car\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_class_vocabulary(duplicate)
    typo = tmp_path / "typo.yaml"
    typo.write_text("classes:\n  - name: car\n    synonym: [auto]\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_class_vocabulary(typo)


def test_embedding_file_round_trip(tmp_path):
    path = save_text_embeddings(tmp_path / "t.pt", torch.eye(3), ["a", "b", "c"],
                                {"kind": "fake", "name": "n", "weights": "w"}, TEMPLATES)
    content = load_text_embeddings(path)
    assert content["class_names"] == ["a", "b", "c"] and content["templates"] == list(TEMPLATES)
    torch.testing.assert_close(content["embeddings"], torch.eye(3))
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a clip2scene-text"):
        load_text_embeddings(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="C = 2"):
        save_text_embeddings(tmp_path / "bad.pt", torch.eye(3), ["a", "b"], {}, TEMPLATES)


def test_encode_text_command_writes_embeddings_names_spec_and_templates(tmp_path, monkeypatch):
    from clip2scene_core.commands import encode_text

    encoder = CountingEncoder()
    built_from = []
    monkeypatch.setattr(encode_text, "build_text_encoder",
                        lambda spec, device: built_from.append(spec) or encoder)
    out = tmp_path / "nuscenes_text.pt"
    assert cli.main(["encode-text", "--classes", "nuscenes", "--text-encoder", "open_clip",
                     "--clip-model", "ViT-B-16", "--clip-pretrained", "/weights/vit.pt",
                     "--out", str(out)]) == 0
    assert built_from == [{"kind": "open_clip", "name": "ViT-B-16", "weights": "/weights/vit.pt"}]
    content = load_text_embeddings(out)
    assert content["class_names"] == list(CLASS_NAMES["nuscenes"])
    assert content["text_encoder"] == encoder.spec and content["templates"] == list(TEMPLATES)
    torch.testing.assert_close(content["embeddings"],
                               encode_classes(encoder, load_class_vocabulary("nuscenes")))


def test_encode_text_command_reports_a_missing_vocabulary(tmp_path, caplog):
    missing = tmp_path / "nope.yaml"
    assert cli.main(["encode-text", "--classes", str(missing), "--out", str(tmp_path / "x.pt")]) == 2
    assert str(missing) in caplog.text


@pytest.mark.parametrize("templates, message", [
    ("a {}", "list of strings, not one string"),
    ([], "list is empty"),
    (["a photo"], "exactly one"),
    (["a {} {}"], "exactly one"),
    (["a {} {x}"], "cannot be filled with a class name"),
    (["a {0} and {}"], "exactly one|cannot be filled"),
])
def test_one_template_validator_serves_inference_and_training(templates, message):
    with pytest.raises(ValueError, match=message):
        validate_prompt_templates(templates)
    # Training encodes its class embeddings through the same check.
    with pytest.raises(ValueError, match=message):
        encode_classes(CountingEncoder(), ["car"], templates)
    assert validate_prompt_templates(["a {}.", "  {} in the scene"]) == ("a {}.", "  {} in the scene")
