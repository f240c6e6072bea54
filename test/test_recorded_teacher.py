"""The simulated teacher replayed as an image teacher (MaskCLIP's stand-in on synthetic drives)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2scene_core.data.synthetic.recorded_teacher import RecordedTeacher, image_hash
from clip2scene_core.data.synthetic.teacher import simulated_pixel_features
from clip2scene_core.frame import Camera, Frame

TEXT = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)


def _image(seed: int, size=(6, 10)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _teacher(sigma: float = 0.2) -> tuple[RecordedTeacher, np.ndarray, np.ndarray]:
    image = _image(1)
    classes = np.zeros(image.shape[:2], np.int64)
    classes[:, 5:] = 2  # right half class 2, left half none
    return RecordedTeacher({image_hash(image): classes}, TEXT, sigma), image, classes


def test_image_hash_depends_on_pixels_and_shape():
    image = _image(1)
    assert image_hash(image) == image_hash(image.copy())
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert image_hash(changed) != image_hash(image)
    assert image_hash(image.reshape(10, 6, 3)) != image_hash(image)


def test_sample_gives_the_simulated_feature_of_the_pixel_class_and_zero_elsewhere():
    teacher, image, _ = _teacher(sigma=0.0)
    pixels = torch.tensor([[7.5, 2.5], [1.5, 0.5], [9.99, 5.99]])  # class 2, none, class 2 (last pixel)
    features = teacher.sample(teacher.dense_features(image[None]), pixels, image.shape[:2])
    torch.testing.assert_close(features[0], TEXT[1])
    torch.testing.assert_close(features[2], TEXT[1])
    assert torch.count_nonzero(features[1]) == 0


def test_noisy_features_are_seeded_by_the_image_so_runs_agree():
    teacher, image, _ = _teacher(sigma=0.5)
    pixels = torch.tensor([[6.5, 1.5], [8.5, 4.5]])
    first = teacher.sample(teacher.dense_features(image[None]), pixels, image.shape[:2])
    again = teacher.sample(teacher.dense_features(image[None]), pixels, image.shape[:2])
    torch.testing.assert_close(first, again)
    generator = torch.Generator().manual_seed(int(image_hash(image)[:15], 16))
    torch.testing.assert_close(first, simulated_pixel_features(torch.tensor([2, 2]), TEXT, 0.5, generator))
    assert not torch.allclose(first[0], TEXT[1])  # the noise is there


def test_an_unrecorded_image_gives_no_features(caplog):
    teacher, image, _ = _teacher()
    view = teacher.dense_features(_image(2)[None])
    assert view.classes is None and teacher.unknown_images == 1
    assert torch.count_nonzero(teacher.sample(view, torch.tensor([[1.5, 1.5]]), image.shape[:2])) == 0
    assert "was not recorded" in caplog.text


def test_save_and_load_round_trip(tmp_path):
    teacher, image, classes = _teacher(sigma=0.3)
    loaded = RecordedTeacher.load(teacher.save(tmp_path / "teacher.npz"))
    assert loaded.sigma == 0.3 and set(loaded.maps) == {image_hash(image)}
    np.testing.assert_array_equal(loaded.maps[image_hash(image)], classes)
    torch.testing.assert_close(loaded.text_embeddings, TEXT)


def test_bad_files_and_maps_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        RecordedTeacher.load(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz is not a recorded teacher file"):
        RecordedTeacher.load(other)
    with pytest.raises(ValueError, match="classes in 0..3"):
        RecordedTeacher({"k": np.full((2, 2), 4)}, TEXT, 0.1)
    teacher, image, _ = _teacher()
    with pytest.raises(ValueError, match="one image"):
        teacher.dense_features(image)


def test_from_frames_needs_teacher_labels():
    camera = Camera("front", _image(3), np.eye(3), np.eye(4))
    frame = Frame(points=np.zeros((1, 3), np.float32), cameras=[camera])
    with pytest.raises(ValueError, match="no teacher_labels"):
        RecordedTeacher.from_frames([frame], TEXT, 0.1)


def test_segmenter_ensemble_takes_the_recorded_teacher_where_it_is_surer(tiny_checkpoint, tmp_path):
    from clip2scene_core.segmenter import Segmenter

    segmenter = Segmenter(tiny_checkpoint, class_names=["road", "car", "tree"], device="cpu",
                          prompt_templates=["a photo of a {}."], text_cache_dir=tmp_path)
    image = _image(4, size=(20, 20))
    classes = np.full((20, 20), 2, np.int64)  # "car" everywhere in the image
    segmenter.image_teacher = RecordedTeacher({image_hash(image): classes},
                                              segmenter.class_space.embeddings.cpu(), sigma=0.0)
    K = np.array([[10.0, 0, 10], [0, 10, 10], [0, 0, 1]])
    camera = Camera("front", image, K, np.eye(4))
    points = np.array([[0.0, 0.0, 5.0], [0.5, 0.5, 5.0], [0.0, 0.0, -5.0]], np.float32)  # 2 in view, 1 behind
    result = segmenter.segment(points, cameras=[camera])
    np.testing.assert_array_equal(result.source, [1, 1, 0])
    np.testing.assert_array_equal(result.labels[:2], [1, 1])
    np.testing.assert_allclose(result.scores[:2], 1.0, atol=1e-5)
