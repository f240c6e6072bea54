"""Segmenter: class lists, thresholds, non-finite points, the 2D-3D ensemble, text-space checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2scene_core.checkpoint import load_checkpoint
from clip2scene_core.clip.prompts import load_thing_classes
from clip2scene_core.frame import Camera
from clip2scene_core.clip.text_encoders import same_text_space
from clip2scene_core.device import resolve_device
from clip2scene_core.segmenter import UNKNOWN_LABEL, Segmenter, validate_class_names

TEMPLATES = ["a photo of a {}."]


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint, tmp_path_factory):
    return Segmenter(tiny_checkpoint, class_names=["road", "car", "tree"], device="cpu",
                     prompt_templates=TEMPLATES, text_cache_dir=tmp_path_factory.mktemp("cache"))


def random_points(count: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-15, 15, (count, 3)).astype(np.float32), rng.random(count, np.float32)


@pytest.mark.parametrize("names, message", [
    ([], "empty"), (["a", "a"], "duplicates"), (["a", " "], "empty name"), ("car", "not one string"),
    (["x" * 200], "longer than"),
])
def test_bad_class_lists_are_rejected_with_a_reason(names, message):
    with pytest.raises(ValueError, match=message):
        validate_class_names(names)


def test_device_auto_falls_back_to_cpu_and_rejects_unknown():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises((ValueError, RuntimeError)):
        resolve_device("tpu")


def test_labels_are_the_argmax_cosine_over_the_class_list(segmenter):
    points, intensity = random_points()
    result = segmenter.segment(points, intensity, return_embeddings=True)
    similarity = result.embeddings @ segmenter.class_space.embeddings.numpy().T
    np.testing.assert_array_equal(result.labels, similarity.argmax(1))
    np.testing.assert_allclose(result.scores, similarity.max(1), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)


def test_threshold_marks_low_scores_unknown(segmenter):
    points, intensity = random_points()
    scores = segmenter.segment(points, intensity).scores
    segmenter.score_threshold = float(np.median(scores))
    try:
        labels = segmenter.segment(points, intensity).labels
    finally:
        segmenter.score_threshold = -1.0
    assert ((labels == UNKNOWN_LABEL) == (scores < np.median(scores))).all()


def test_non_finite_points_are_unknown_and_do_not_change_the_others(segmenter):
    points, intensity = random_points()
    clean = segmenter.segment(points, intensity)
    dirty = points.copy()
    dirty[:5] = np.nan
    result = segmenter.segment(dirty, intensity)
    assert (result.labels[:5] == UNKNOWN_LABEL).all() and (result.scores[:5] == 0).all()
    assert result.labels.shape == (len(points),)
    clean_rest = segmenter.segment(points[5:], intensity[5:])
    np.testing.assert_array_equal(result.labels[5:], clean_rest.labels)
    np.testing.assert_allclose(result.scores[5:], clean_rest.scores, rtol=1e-5, atol=1e-6)
    assert (clean.labels != UNKNOWN_LABEL).all()  # the same points were labelled when finite


def test_class_space_swap_is_atomic_and_versioned(segmenter):
    before = segmenter.class_space
    space = segmenter.encode_classes(["street", "automobile"])
    assert segmenter.class_space is before, "encoding must not activate the new list"
    assert space.version > before.version and space.names == ("street", "automobile")
    points, intensity = random_points()
    pinned = segmenter.segment(points, intensity, class_space=space)
    assert pinned.class_space is space and pinned.labels.max() <= 1
    segmenter.set_class_space(space)
    assert segmenter.class_space is space
    segmenter.set_class_space(before)


def test_thing_classes_default_to_the_vocabulary_of_the_checkpoints_data(tiny_checkpoint, tmp_path):
    state = load_checkpoint(tiny_checkpoint)
    assert Segmenter(state, class_names=["road", "car"], device="cpu", prompt_templates=TEMPLATES,
                     text_cache_dir=tmp_path).class_space.things == ()  # no recorded data kind
    state["extra"] = {"config": {"data": {"kind": "synthetic"}}}
    segmenter = Segmenter(state, class_names=["road", "automobile", "car", "pedestrian"], device="cpu",
                          prompt_templates=TEMPLATES, text_cache_dir=tmp_path)
    assert segmenter.vocabulary_things == load_thing_classes("synthetic")
    assert segmenter.class_space.thing_names == ("car", "pedestrian")  # "automobile" is no vocabulary name
    space = segmenter.encode_classes(["road", "automobile"], thing_classes=["automobile"])
    assert space.things == (1,) and space.thing_names == ("automobile",)
    with pytest.raises(ValueError, match=r"thing classes \['lorry'\] are not in the class list"):
        segmenter.encode_classes(["road", "car"], thing_classes=["car", "lorry"])


def test_points_of_thing_classes_are_grouped_into_objects(segmenter):
    points, intensity = random_points()
    plain = segmenter.segment(points, intensity)
    assert plain.class_space.things == () and not plain.instances.any() and len(plain.objects) == 0
    space = segmenter.encode_classes(["road", "car", "tree"], thing_classes=["car", "tree"])
    result = segmenter.segment(points, intensity, class_space=space)
    np.testing.assert_array_equal(result.labels, plain.labels)
    assert result.instances.dtype == np.uint32 and result.instances.shape == (len(points),)
    assert ((result.instances > 0) <= np.isin(result.labels, [1, 2])).all()
    assert result.instances.max() == len(result.objects) > 0
    assert result.objects.point_count.sum() == np.count_nonzero(result.instances)
    assert set(result.objects.class_index.tolist()) <= {1, 2}


def test_checkpoint_text_space_must_match_the_encoder(tiny_checkpoint):
    class OtherSpace:
        spec = {"kind": "open_clip", "name": "ViT-B-16", "weights": "openai"}

    with pytest.raises(ValueError, match="text space"):
        Segmenter(tiny_checkpoint, device="cpu", text_encoder=OtherSpace())
    assert not same_text_space({"kind": "open_clip", "name": "ViT-B-16", "weights": "openai"},
                               {"kind": "open_clip", "name": "ViT-B-16", "weights": "laion2b_s34b_b88k"})
    assert same_text_space({"kind": "open_clip", "name": "ViT-B-16", "weights": "/a/model.pt"},
                           {"kind": "open_clip", "name": "ViT-B-16", "weights": "/b/model.pt"})


def test_image_teacher_needs_a_clip_text_space(tiny_checkpoint):
    with pytest.raises(ValueError, match="CLIP's text space"):
        Segmenter(tiny_checkpoint, device="cpu", image_teacher="auto")


class ConstantTeacher:
    """A 2D teacher whose every pixel feature is one fixed vector."""

    def __init__(self, vector: torch.Tensor) -> None:
        self.vector = vector

    def dense_features(self, images):
        return self.vector.view(1, -1, 1, 1).expand(len(images), -1, 2, 2)

    @staticmethod
    def sample(dense, pixels, image_size):
        return dense[0, :, 0, 0].expand(len(pixels), -1)


def test_ensemble_keeps_the_more_confident_of_2d_and_3d(segmenter):
    points, intensity = random_points()
    points[:, 1] = np.abs(points[:, 1]) + 2.0  # all in front of the camera below
    lidar_only = segmenter.segment(points, intensity)
    car = segmenter.class_space.embeddings[1]
    segmenter.image_teacher = ConstantTeacher(car)  # 2D says "car" with cosine 1 wherever it sees
    # Camera looking along +y (LiDAR y forward): camera z = lidar y, camera x = lidar x, y = -z.
    lidar_to_camera = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    camera = Camera("front", np.zeros((100, 200, 3), np.uint8), np.array([[100, 0, 100], [0, 100, 50], [0, 0, 1]]),
                    lidar_to_camera)
    try:
        fused = segmenter.segment(points, intensity, cameras=[camera])
    finally:
        segmenter.image_teacher = None
    u = 100 * points[:, 0] / points[:, 1] + 100
    v = -100 * points[:, 2] / points[:, 1] + 50
    seen = (u >= 0) & (u < 200) & (v >= 0) & (v < 100) & (points[:, 1] > 1)
    assert seen.any() and (~seen).any()
    assert (fused.labels[seen] == 1).all() and np.allclose(fused.scores[seen], 1.0, atol=1e-5)
    assert (fused.source[seen] == 1).all() and (fused.source[~seen] == 0).all()
    np.testing.assert_array_equal(fused.labels[~seen], lidar_only.labels[~seen])
