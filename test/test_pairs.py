"""Point-pixel pairing of registered sweeps with keyframe cameras, teacher features, and batch collation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2scene_core.clip.feature_cache import DenseFeatureCache
from clip2scene_core.clip.teacher import MaskCLIPTeacher
from clip2scene_core.data.synthetic.teacher import simulated_pixel_features
from clip2scene_core.frame import Camera, Frame, Sweep
from clip2scene_core.train.batching import AugmentOptions, PretrainCollator, augment_points, step_generator
from clip2scene_core.train.pairs import (
    MaskCLIPPixelTeacher, PairingOptions, SimulatedTeacher, image_key, pair_points_with_cameras,
)

HEIGHT, WIDTH = 48, 96
K = np.array([[50.0, 0.0, 48.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])
# LiDAR (x forward, y left, z up) -> OpenCV camera (x right, y down, z forward).
LIDAR_TO_CAMERA = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def wall(x: float) -> np.ndarray:
    """(45, 3) points of a wall facing the sensor at distance x (metres)."""
    ys, zs = np.meshgrid(np.linspace(-4, 4, 9), np.linspace(-2, 2, 5), indexing="ij")
    return np.stack([np.full(ys.size, x), ys.ravel(), zs.ravel()], axis=1).astype(np.float32)


def translation(x: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[0, 3] = x
    return matrix


def make_frame(shift: float = 0.0, teacher_labels: np.ndarray | None = None) -> Frame:
    """A keyframe seeing a wall 10 m ahead (label 1) plus points behind it (label 2), with one sweep
    taken 0.1 s earlier from 1 m further back (the same wall, label 3 in the sweep)."""
    points = np.concatenate([wall(10.0), np.array([[-5.0, 0.0, 0.0]], np.float32)]) + np.float32(shift)
    labels = np.r_[np.ones(45, np.int64), 2]
    if teacher_labels is None:
        teacher_labels = np.ones((HEIGHT, WIDTH), np.int64)
    camera = Camera("CAM", np.zeros((HEIGHT, WIDTH, 3), np.uint8), K, LIDAR_TO_CAMERA, 0,
                    labels=np.ones((HEIGHT, WIDTH), np.int64), teacher_labels=teacher_labels)
    sweep = Sweep(points=wall(11.0) + np.float32(shift), timestamp=int(0.9e9), lidar_to_ego=np.eye(4),
                  ego_to_world=translation(-1.0), intensity=np.full(45, 0.5, np.float32),
                  labels=np.full(45, 3, np.int64))
    return Frame(points=points, timestamp=int(1e9), intensity=np.full(46, 0.25, np.float32), labels=labels,
                 class_names=("a", "b", "c"), cameras=[camera], sweeps=[sweep], frame_id=f"f{shift}")


def test_sweeps_are_registered_into_the_keyframe_and_projected():
    pairs = pair_points_with_cameras(make_frame(), PairingOptions(num_sweeps=2, occlusion=False))
    assert np.array_equal(np.bincount(pairs.source), [46, 45])
    np.testing.assert_allclose(pairs.points[pairs.source == 1], wall(10.0), atol=1e-5)
    # Both sweeps' wall points are seen; the point behind the sensor is not.
    assert len(pairs) == 90 and 45 not in pairs.point_index
    centre = np.flatnonzero((pairs.points[pairs.point_index] == [10.0, 0.0, 0.0]).all(axis=1))
    np.testing.assert_allclose(pairs.pixels[centre], [[48.0, 24.0]] * 2, atol=1e-4)


def test_sweep_count_and_age_limit_select_sweeps():
    frame = make_frame()
    assert pair_points_with_cameras(frame, PairingOptions(num_sweeps=1)).source.max() == 0
    assert pair_points_with_cameras(frame, PairingOptions(num_sweeps=3, max_sweep_seconds=0.05)).source.max() == 0


def test_occlusion_drops_points_behind_a_nearer_surface():
    frame = make_frame()
    frame.points = np.concatenate([frame.points, np.array([[20.0, 0.0, 0.0]], np.float32)])
    frame.intensity, frame.labels = None, None
    options = dict(num_sweeps=1, occlusion_block=1)
    assert 46 in pair_points_with_cameras(frame, PairingOptions(occlusion=False, **options)).point_index
    assert 46 not in pair_points_with_cameras(frame, PairingOptions(occlusion=True, **options)).point_index


def test_simulated_teacher_features_follow_the_teacher_map_and_skip_unlabelled_pixels():
    teacher_map = np.ones((HEIGHT, WIDTH), np.int64)
    teacher_map[:, WIDTH // 2:] = 2
    teacher_map[: HEIGHT // 2, :40] = 0  # no teacher class here: no pair
    frame = make_frame(teacher_labels=teacher_map)
    pairs = pair_points_with_cameras(frame, PairingOptions(num_sweeps=1))
    text = torch.nn.functional.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    kept, features = SimulatedTeacher(text, 0.3).pixel_features(frame, 0, pairs, torch.Generator().manual_seed(5))
    rows, cols = kept.pixel_rows_cols()
    classes = torch.from_numpy(teacher_map[rows, cols])
    assert 0 < len(kept) < len(pairs) and bool((classes > 0).all())
    expected = simulated_pixel_features(classes, text, 0.3, torch.Generator().manual_seed(5))
    torch.testing.assert_close(features, expected)
    _, exact = SimulatedTeacher(text, 0.0).pixel_features(frame, 0, pairs, torch.Generator())
    torch.testing.assert_close(exact, text[classes - 1])


def test_simulated_teacher_needs_teacher_maps():
    frame = make_frame()
    frame.cameras[0].teacher_labels = None
    pairs = pair_points_with_cameras(frame)
    with pytest.raises(ValueError, match="teacher_labels"):
        SimulatedTeacher(torch.eye(3), 0.1).pixel_features(frame, 0, pairs, torch.Generator())


class StubDenseTeacher:
    """Stands in for MaskCLIPTeacher: a fixed (D, 3, 6) patch grid per image, brighter for brighter images."""

    spec = {"model_name": "stub"}

    def dense_features(self, images):
        grid = torch.arange(4 * 3 * 6, dtype=torch.float32).reshape(4, 3, 6)
        return torch.stack([grid + float(np.asarray(image).mean()) for image in images])


def test_maskclip_teacher_reads_precomputed_patch_features(tmp_path):
    frame = make_frame()
    cache = DenseFeatureCache(tmp_path, StubDenseTeacher.spec)
    teacher = MaskCLIPPixelTeacher(cache, dim=4, teacher=StubDenseTeacher())
    pairs = pair_points_with_cameras(frame)
    with pytest.raises(FileNotFoundError, match="f0.0/CAM"):
        teacher.pixel_features(frame, 0, pairs, torch.Generator())
    teacher.prepare([frame], [0])
    assert image_key(frame, 0, "CAM") in cache
    kept, features = MaskCLIPPixelTeacher(cache, dim=4).pixel_features(frame, 0, pairs, torch.Generator())
    expected = MaskCLIPTeacher.sample(StubDenseTeacher().dense_features([frame.cameras[0].image])[0],
                                      pairs.pixels, (HEIGHT, WIDTH))
    assert len(kept) == len(pairs)
    torch.testing.assert_close(features, expected, atol=0.05, rtol=0.01)  # fp16 cache


def test_collated_batch_makes_each_sweep_a_sample_and_indexes_pairs_into_it():
    frames = [make_frame(0.0), make_frame(0.05)]
    text = torch.eye(3)
    collate = PretrainCollator(SimulatedTeacher(text, 0.0),
                               PairingOptions(num_sweeps=2, occlusion=False), ("intensity",), cell_size=0.1)
    batch = collate(frames, [0, 1], torch.Generator().manual_seed(0))
    assert batch.num_frames == 2 and torch.equal(torch.unique(batch.sample), torch.arange(4))
    assert batch.points.shape == (2 * 91, 3) and batch.features.shape == (2 * 91, 1)
    # Sweep points keep their own LiDAR frame as network input (x = 11 m, not the registered 10 m).
    assert torch.allclose(batch.points[batch.sample == 1, 0], torch.tensor(11.0))
    # Pair rows point at wall points of the right sweep: label 1 in keyframes, 3 in sweeps.
    assert set(batch.labels[batch.pair_point].tolist()) == {1, 3}
    assert torch.equal(batch.labels[batch.pair_point] == 3, batch.pair_source == 1)
    # The keyframe and sweep observation of one wall point share a grid cell; frames never share cells.
    frame0 = batch.pair_point < 91
    cells0, cells1 = batch.cell_ids[frame0], batch.cell_ids[~frame0]
    assert len(torch.unique(cells0)) == 45 and not set(cells0.tolist()) & set(cells1.tolist())
    assert batch.pixel_features.shape == (len(batch.pair_point), 3)


def test_batch_randomness_depends_only_on_seed_epoch_step():
    frames = [make_frame()]
    collate = PretrainCollator(SimulatedTeacher(torch.eye(3), 0.5), PairingOptions(num_sweeps=2),
                               ("intensity",), augment=AugmentOptions())
    first = collate(frames, [0], step_generator(3, 1, 2))
    again = collate(frames, [0], step_generator(3, 1, 2))
    other = collate(frames, [0], step_generator(3, 1, 3))
    assert torch.equal(first.points, again.points) and torch.equal(first.pixel_features, again.pixel_features)
    assert not torch.equal(first.points, other.points)


def test_augmentation_is_a_rigid_yaw_flip_and_scale():
    points = wall(10.0)
    moved = augment_points(points, AugmentOptions(scale=(2.0, 2.0)), torch.Generator().manual_seed(1))
    # Distances to the sensor scale by exactly 2 and heights keep their magnitude times 2.
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 2 * np.linalg.norm(points, axis=1), rtol=1e-5)
    np.testing.assert_allclose(moved[:, 2], 2 * points[:, 2], rtol=1e-5)
    assert augment_points(points, None, torch.Generator()) is points


@pytest.mark.parametrize("max_pairs", [None, 60])
def test_prepared_frames_give_bit_identical_batches_and_losses(max_pairs):
    """The in-memory cache of pairs, grid cells and input features changes nothing a step computes."""
    from clip2scene_core.data.synthetic import SyntheticConfig, SyntheticDataset
    from clip2scene_core.data.synthetic.render import LidarConfig
    from clip2scene_core.model import build_model
    from clip2scene_core.train.losses import grid_cell_ids
    from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, model_config_for, pretraining_losses

    world = SyntheticDataset(seed=1, num_scenes=1, frames_per_scene=2,
                             config=SyntheticConfig(lidar=LidarConfig(azimuth_steps=96), num_sweeps=2))
    frames = [world[0], world[1]]
    text = torch.nn.functional.normalize(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    collate = PretrainCollator(SimulatedTeacher(text, 0.5), PairingOptions(num_sweeps=2), ("intensity",),
                               cell_size=0.2, augment=AugmentOptions(), max_pairs_per_frame=max_pairs)
    fresh = collate(frames, [0, 1], step_generator(0, 1, 2))
    cached = collate([collate.prepare(frame) for frame in frames], [0, 1], step_generator(0, 1, 2))
    for name, value in vars(fresh).items():
        other = getattr(cached, name)
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, name
    if max_pairs is None:  # the cells are those of the stitched points of the kept pairs, by definition
        stitched, frame_of_pair = [], []
        for b, frame in enumerate(frames):
            kept, _ = collate.teacher.pixel_features(frame, b, pair_points_with_cameras(frame, collate.pairing),
                                                     torch.Generator())
            stitched.append(torch.from_numpy(kept.points[kept.point_index]))
            frame_of_pair.append(torch.full((len(kept),), b))
        assert torch.equal(fresh.cell_ids, grid_cell_ids(torch.cat(stitched), 0.2, torch.cat(frame_of_pair)))
    else:
        assert len(fresh.pair_point) <= 2 * max_pairs
    config = {**DEFAULT_PRETRAIN_CONFIG, "model_preset": "tiny", "amp": False}
    losses = []
    for batch in (fresh, cached):
        torch.manual_seed(0)
        model = build_model(model_config_for(config, 8))
        losses.append(pretraining_losses(model, batch, text, config, 5, 0, torch.Generator().manual_seed(3)))
    for key in ("total", "semantic", "spatial_temporal"):
        assert torch.equal(losses[0][key], losses[1][key]), key
