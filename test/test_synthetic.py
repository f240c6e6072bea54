"""The synthetic world: deterministic scenes, consistent sensors, a teacher with MaskCLIP-like errors,
and a disk layout that reads back into identical frames."""
from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from clip2scene_core.cli import main as cli_main
from clip2scene_core.data import open_dataset
from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.data.synthetic import SyntheticConfig, SyntheticDataset, SyntheticWorld
from clip2scene_core.data.synthetic.render import (
    CameraConfig, LidarConfig, camera_candidates, camera_intrinsics, camera_ray_directions, camera_to_ego,
    cast_rays, lidar_candidates, lidar_ray_directions, lidar_to_ego, scan_lidar, with_ground,
)
from clip2scene_core.data.synthetic.scene import BOX, PLAIN_TEXTURE, THING_CLASSES, Primitives, Scene
from clip2scene_core.data.synthetic.teacher import (
    TeacherConfig, apply_systematic_bias, confuse_regions, patch_vote_labels, region_keys, simulate_teacher_labels,
    simulated_pixel_features,
)
from clip2scene_core.frame import Frame
from clip2scene_core.geometry import project_points_to_image, transform_points

LABEL = {name: i + 1 for i, name in enumerate(SYNTHETIC_CLASSES)}
# The default world (the teacher's accuracy is defined at 224 x 416).
FULL = SyntheticConfig()
# Small everything, for tests that only need consistency.
SMALL = SyntheticConfig(lidar=LidarConfig(azimuth_steps=256), num_sweeps=2,
                        cameras=dataclasses.replace(CameraConfig(), image_size=(64, 128)))


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(FULL, seed=0, frames_per_scene=2)


@pytest.fixture(scope="module")
def frames() -> list:
    dataset = SyntheticDataset(seed=0, num_scenes=1, frames_per_scene=2, config=FULL)
    return [dataset[0], dataset[1]]


def assert_frames_equal(a, b) -> None:
    for name in ("points", "intensity", "labels", "instances", "lidar_to_ego", "ego_to_world"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.timestamp, a.frame_id, a.class_names) == (b.timestamp, b.frame_id, b.class_names)
    assert len(a.cameras) == len(b.cameras) and len(a.sweeps) == len(b.sweeps)
    for x, y in zip(a.cameras, b.cameras):
        assert (x.name, x.timestamp) == (y.name, y.timestamp)
        for name in ("image", "K", "lidar_to_camera", "labels", "teacher_labels"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
    for x, y in zip(a.sweeps, b.sweeps):
        assert x.timestamp == y.timestamp
        for name in ("points", "intensity", "labels", "instances", "lidar_to_ego", "ego_to_world"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)


def write_small_config(folder):
    """SMALL as a JSON file for `clip2scene synth --config`."""
    path = folder / "small.json"
    path.write_text(json.dumps(SMALL.to_dict()))
    return path


def test_same_seed_gives_identical_frames_in_any_order_and_other_seeds_differ():
    alone = SyntheticDataset(seed=3, num_scenes=2, frames_per_scene=2, config=SMALL)[3]
    in_order = SyntheticDataset(seed=3, num_scenes=2, frames_per_scene=2, config=SMALL)
    in_order[2]
    assert_frames_equal(alone, in_order[3])
    other = SyntheticDataset(seed=4, num_scenes=2, frames_per_scene=2, config=SMALL)[3]
    assert len(other.points) != len(alone.points) or not np.array_equal(other.points, alone.points)


def test_every_class_appears_in_the_points_and_the_pixels(frames):
    frame = frames[0]
    everything = set(range(1, len(SYNTHETIC_CLASSES) + 1))
    assert set(np.unique(frame.labels)) == everything
    pixels = set().union(*(np.unique(camera.labels) for camera in frame.cameras))
    assert everything <= pixels
    assert frame.intensity.min() >= 0 and frame.intensity.max() <= 1.0 and frame.intensity.max() > 0.2
    assert frame.class_names == SYNTHETIC_CLASSES


def test_frame_carries_three_cameras_with_maskclip_image_size_and_a_full_sensor_chain(frames):
    frame = frames[1]
    assert [camera.name for camera in frame.cameras] == ["CAM_FRONT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
    for camera in frame.cameras:
        assert camera.image.shape == (224, 416, 3) and camera.teacher_labels.shape == (224, 416)
        assert camera.teacher_labels.min() >= 1 and camera.teacher_labels.max() <= len(SYNTHETIC_CLASSES)
    # The LiDAR sees everything around the ego within range.
    assert 0.75 < np.linalg.norm(frame.points[:, :2], axis=1).max() / FULL.lidar.max_range_m <= 1.01


def test_camera_labels_agree_with_lidar_labels_where_unoccluded_points_project(frames, world):
    frame = frames[1]
    agreements = []
    for index, camera in enumerate(frame.cameras):
        projection = project_points_to_image(frame.points, camera.K, camera.lidar_to_camera,
                                             (camera.height, camera.width))
        cols, rows = np.floor(projection.pixels).astype(np.int64).T
        # Unoccluded: the point lies on the surface the camera sees at its pixel.
        rendered = world.render_view(0, 1, index).depth[rows, cols]
        visible = np.abs(projection.depth - rendered) < 0.05 * rendered + 0.2
        assert visible.mean() > 0.8
        point_labels = frame.labels[projection.indices[visible]]
        agreements.append(np.mean(point_labels == camera.labels[rows[visible], cols[visible]]))
    assert min(agreements) > 0.9, agreements


def boxes_scene(boxes: list[tuple[str, int, tuple, tuple]]) -> Scene:
    """A still street of axis-aligned boxes: (class name, object id, centre, half extents) each."""
    count = len(boxes)
    primitives = Primitives(
        kind=np.full(count, BOX), center=np.array([b[2] for b in boxes], float),
        size=np.array([b[3] for b in boxes], float), yaw=np.zeros(count), velocity=np.zeros((count, 3)),
        label=np.array([LABEL[b[0]] for b in boxes]), object_id=np.array([b[1] for b in boxes]),
        color=np.full((count, 3), 0.5), texture=np.full(count, PLAIN_TEXTURE), reflectivity=np.full(count, 0.5))
    return Scene(index=0, primitives=primitives, street_to_world=np.eye(4), lane_lines=np.zeros((0, 2)),
                 sun_direction=np.array([0.0, 0.0, 1.0]), start_timestamp_ns=0, ego_speed_mps=0.0,
                 ego_lane_y_m=0.0, ego_wobble_m=0.0, ego_wobble_period_s=10.0, ego_wobble_phase=0.0,
                 ego_tilt_rad=0.0)


def test_two_touching_cars_stay_two_instances_and_stuff_has_none():
    # Two parked cars bumper to bumper (touching at x = 9 m) beside the sensor, a building behind them.
    cars = {1: (7.0, -3.0, 0.7), 2: (11.0, -3.0, 0.7)}
    scene = boxes_scene([("car", 1, cars[1], (2.0, 0.9, 0.4)), ("car", 2, cars[2], (2.0, 0.9, 0.4)),
                         ("building", 3, (9.0, -12.0, 5.0), (10.0, 3.0, 5.0))])
    lidar_to_street = np.eye(4)
    lidar_to_street[2, 3] = 1.8
    config = LidarConfig(range_noise_m=0.0, dropout=0.0)
    points, _, labels, instances = scan_lidar(scene, scene.primitives, lidar_to_street, config,
                                              np.random.default_rng(0))
    street = points + lidar_to_street[:3, 3]
    assert instances.dtype == np.uint32
    assert set(np.unique(instances[labels == LABEL["car"]])) == {1, 2}
    assert not instances[labels != LABEL["car"]].any()  # road (ground plane) and building: stuff
    for instance, (x, _, _) in cars.items():
        mine = street[instances == instance]
        assert len(mine) > 50
        assert np.all(np.abs(mine[:, 0] - x) <= 2.0 + 1e-3), instance  # every point on its own car


def test_instance_ids_mark_each_thing_object_and_are_zero_for_stuff(frames):
    things = [LABEL[name] for name in THING_CLASSES]
    assert set(THING_CLASSES) == {"car", "truck", "pedestrian", "traffic cone", "pole"}
    for frame in frames:
        thing = np.isin(frame.labels, things)
        assert frame.instances.dtype == np.uint32
        assert not frame.instances[~thing].any() and frame.instances[thing].all()
        ids = np.unique(frame.instances[thing])
        assert len(ids) > 20  # the street's cars, poles, cones, pedestrians and the anchor truck
        for instance in ids:  # one object, one class, one place (a truck is at most 11.5 m long)
            mine = frame.instances == instance
            assert len(np.unique(frame.labels[mine])) == 1
            assert np.ptp(frame.points[mine], axis=0).max() < 12.0
        for sweep in frame.sweeps:
            assert sweep.instances is not None and len(sweep.instances) == len(sweep.points)
    # An object keeps its id from frame to frame (ids are the scene's object ids).
    shared = np.intersect1d(frames[0].instances[frames[0].instances > 0], frames[1].instances)
    assert len(shared) > 0.8 * len(np.unique(frames[0].instances[frames[0].instances > 0]))


def test_frame_instances_are_uint32_and_bad_ids_are_named():
    points = np.zeros((3, 3), np.float32)
    assert Frame(points=points, instances=np.array([0, 7, 7])).instances.dtype == np.uint32
    for bad, message in ((np.array([0, -1, 2]), "instances must lie in 0..4294967295"),
                         (np.array([0.0, 1.5, 2.0]), "instances must be integer ids"),
                         (np.array([1, 2]), r"instances must have shape \(3,\)")):
        with pytest.raises(ValueError, match=message):
            Frame(points=points, instances=bad)


def test_teacher_pixel_accuracy_is_about_half(frames):
    accuracies = [np.mean((camera.teacher_labels == camera.labels)[camera.labels > 0])
                  for frame in frames for camera in frame.cameras]
    assert 0.35 < np.mean(accuracies) < 0.7, accuracies


def test_default_region_confusions_keep_the_true_class_the_most_frequent_label(world):
    """Each region draws once per view: it keeps its class with probability 1 - n q and becomes each
    of its n partners with probability q = 0.3, measured over the regions of 2 frames x 3 cameras."""
    config = TeacherConfig()
    assert config.confusion_probability == 0.3
    outcomes: dict[int, list[int]] = {}
    for frame in range(2):
        for camera in range(3):
            view = world.render_view(0, frame, camera)
            regions = region_keys(view.labels, view.object_ids, view.points, config, SYNTHETIC_CLASSES)
            confused = confuse_regions(view.labels, regions, config, SYNTHETIC_CLASSES, (0, 0, frame, camera))
            _, first = np.unique(regions[view.labels > 0], return_index=True)
            for truth, seen in zip(view.labels[view.labels > 0][first], confused[view.labels > 0][first]):
                outcomes.setdefault(int(truth), []).append(int(seen))
    checked = 0
    for name, partners in config.confusions:
        seen = np.array(outcomes.get(LABEL[name], []))
        if len(seen) < 40:  # too few objects of this class in view for a rate
            continue
        checked += 1
        keep = np.mean(seen == LABEL[name])
        shares = [np.mean(seen == LABEL[other]) for other in partners]
        expected_keep = 1 - 0.3 * len(partners)
        tolerance = 3 * np.sqrt(0.3 * 0.7 / len(seen))
        assert abs(keep - expected_keep) < tolerance + 0.02, (name, keep, len(seen))
        assert all(abs(share - 0.3) < tolerance + 0.02 for share in shares), (name, shares)
        assert keep > max(shares), name
    assert checked >= 4, {k: len(v) for k, v in outcomes.items()}


def test_confusion_probability_per_partner_is_validated():
    with pytest.raises(ValueError, match="per partner.*2 confusable partners"):
        TeacherConfig(confusion_probability=0.6)


def view_inputs(world: SyntheticWorld, frame: int = 1, camera: int = 0):
    view = world.render_view(0, frame, camera)
    return view.labels, view.object_ids, view.points


def teacher_map(inputs, config: TeacherConfig, view_key=(0, 0, 1, 0)) -> np.ndarray:
    """The simulated teacher on one rendered view of scene 0 of seed 0."""
    return simulate_teacher_labels(*inputs, config, SYNTHETIC_CLASSES, view_key, (0, 0))


def test_region_confusions_relabel_whole_objects_to_confusable_classes(world):
    labels, object_ids, points = inputs = view_inputs(world)
    config = TeacherConfig(confusion_probability=0.5, systematic=(), patch_size_px=1)
    teacher = teacher_map(inputs, config)
    partners = {LABEL[name]: {LABEL[other] for other in others} for name, others in config.confusions}
    for label in np.unique(labels[labels > 0]):
        kept = {label} if len(partners[label]) == 1 else set()  # two partners at 0.5 each: always flips
        assert set(np.unique(teacher[labels == label])) <= partners[label] | kept
    cars = np.unique(object_ids[np.isin(labels, [LABEL["car"], LABEL["truck"]])])
    for object_id in cars:
        assert len(np.unique(teacher[object_ids == object_id])) == 1  # a whole object flips together


def test_systematic_bias_sees_a_fixed_third_of_terrain_as_vegetation(world):
    labels, _, _ = inputs = view_inputs(world, camera=1)
    config = TeacherConfig(confusion_probability=0.0, patch_size_px=1)
    terrain = labels == LABEL["terrain"]
    assert terrain.sum() > 1000
    teacher = teacher_map(inputs, config)
    np.testing.assert_array_equal(teacher, teacher_map(inputs, config, (0, 0, 2, 2)))  # any frame, camera
    assert np.all(teacher[~terrain & (labels > 0)] == labels[~terrain & (labels > 0)])
    assert set(np.unique(teacher[terrain])) == {LABEL["terrain"], LABEL["vegetation"]}
    # A fixed spatial subset: about 30 % of a large terrain area, by world cell.
    grid = np.stack(np.meshgrid(np.arange(0, 60, 0.5), np.arange(0, 60, 0.5), [0.2], indexing="ij"), -1)
    flat = np.full(grid.shape[:2], LABEL["terrain"])
    biased = apply_systematic_bias(flat, flat, grid.reshape(*flat.shape, 3), config, SYNTHETIC_CLASSES,
                                   (0, 0))
    assert 0.2 < np.mean(biased == LABEL["vegetation"]) < 0.4


def test_boundary_bleed_errors_lie_within_a_patch_of_an_edge(world):
    labels, _, _ = inputs = view_inputs(world)
    config = TeacherConfig(confusion_probability=0.0, systematic=())
    teacher = teacher_map(inputs, config)
    wrong = (teacher != labels) & (labels > 0)
    assert 0.01 < wrong[labels > 0].mean() < 0.15
    # Distance to the nearest label edge, in pixels (edges between labelled classes or sky).
    edges = np.zeros_like(labels, dtype=bool)
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edges[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge_tree = cKDTree(np.argwhere(edges))
    distance, _ = edge_tree.query(np.argwhere(wrong))
    assert distance.max() <= 2 * config.patch_size_px


def test_patch_votes_are_upsampled_bilinearly_like_torch_interpolate():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(0, 4, (3, 5)), 16, 0), 16, 1)
    labels[5:20, 30:33] = 2  # a thin object inside other patches
    out = patch_vote_labels(labels, 3, 16, unlabelled=1)
    votes = torch.zeros(1, 3, 3, 5, dtype=torch.float64)
    for c in range(1, 4):
        votes[0, c - 1] = torch.from_numpy((labels == c).reshape(3, 16, 5, 16).mean(axis=(1, 3)))
    up = torch.nn.functional.interpolate(votes, size=labels.shape, mode="bilinear", align_corners=False)[0]
    expected = np.where(up.amax(0).numpy() > 0, up.argmax(0).numpy() + 1, 1)
    np.testing.assert_array_equal(out, expected)


def test_confusions_are_drawn_independently_per_frame_and_camera():
    rng = np.random.default_rng(0)
    regions = rng.integers(0, 1 << 40, 2000)
    labels = np.full(2000, LABEL["car"])
    config = TeacherConfig(confusion_probability=0.5)

    def confused(view_key):
        return confuse_regions(labels, regions, config, SYNTHETIC_CLASSES, view_key)

    first = confused((0, 0, 5, 0))
    np.testing.assert_array_equal(first, confused((0, 0, 5, 0)))
    other_camera, other_frame = confused((0, 0, 5, 1)), confused((0, 0, 6, 0))
    assert 0.4 < np.mean(first == LABEL["truck"]) < 0.6
    for other in (other_camera, other_frame):
        assert 0.4 < np.mean(first != other) < 0.6  # independent draws disagree half the time


def test_sweeps_are_earlier_scans_whose_poses_register_static_structure(frames):
    frame = frames[1]
    assert len(frame.sweeps) == FULL.num_sweeps
    gaps = np.diff([frame.timestamp] + [sweep.timestamp for sweep in frame.sweeps])
    np.testing.assert_array_equal(gaps, -int(FULL.frame_interval_s * 1e9))
    # Poles and trees: static, and round, so a wrong pose cannot slide them along themselves.
    static = [LABEL["pole"], LABEL["vegetation"]]
    key_world = transform_points(frame.points[np.isin(frame.labels, static)].astype(np.float64),
                                 frame.lidar_to_world)
    tree = cKDTree(key_world)
    sweep = frame.sweeps[1]
    sweep_static = sweep.points[np.isin(sweep.labels, static)].astype(np.float64)
    registered, _ = tree.query(transform_points(sweep_static, sweep.ego_to_world @ sweep.lidar_to_ego))
    unregistered, _ = tree.query(transform_points(sweep_static, frame.lidar_to_world))
    assert np.median(registered) < 0.15
    assert np.median(unregistered) > 3 * np.median(registered)


def test_synth_command_writes_a_folder_that_reads_back_identical_picklable_frames(tmp_path):
    out = tmp_path / "world"
    assert cli_main(["synth", "--out", str(out), "--scenes", "1", "--frames-per-scene", "2", "--seed", "5",
                     "--config", str(write_small_config(tmp_path))]) == 0
    stored = open_dataset("synthetic", out)
    generated = SyntheticDataset(seed=5, num_scenes=1, frames_per_scene=2, config=SMALL)
    assert len(stored) == len(generated) == 2 and stored.config == SMALL
    for index in range(2):
        assert_frames_equal(stored[index], generated[index])
    for dataset in (stored, generated):  # DataLoader workers receive pickled datasets
        assert_frames_equal(pickle.loads(pickle.dumps(dataset))[1], generated[1])
    assert cli_main(["synth", "--out", str(out), "--scenes", "1"]) == 2  # refuses to overwrite


def test_folders_stored_before_instance_ids_read_with_instances_none(tmp_path):
    out = tmp_path / "world"
    assert cli_main(["synth", "--out", str(out), "--scenes", "1", "--frames-per-scene", "1", "--seed", "5",
                     "--config", str(write_small_config(tmp_path))]) == 0
    assert SyntheticDataset(out, with_cameras=False)[0].instances is not None
    for scan_file in (out / "scene_0000").glob("scan_*.npz"):
        arrays = dict(np.load(scan_file))
        del arrays["instances"]
        np.savez(scan_file, **arrays)
    frame = SyntheticDataset(out, with_cameras=False)[0]
    assert frame.instances is None and all(sweep.instances is None for sweep in frame.sweeps)
    generated = SyntheticDataset(seed=5, num_scenes=1, frames_per_scene=1, config=SMALL, with_cameras=False)[0]
    np.testing.assert_array_equal(frame.labels, generated.labels)


def test_config_round_trips_through_json_and_rejects_unknown_fields():
    config = SyntheticConfig(teacher=TeacherConfig(confusion_probability=0.1), num_sweeps=3)
    assert SyntheticConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="lidar.*beamz"):
        SyntheticConfig.from_dict({"lidar": {"beamz": 3}}, "my.yaml")


def test_bad_folders_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        SyntheticDataset(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json"):
        SyntheticDataset(tmp_path)
    out = tmp_path / "world"
    assert cli_main(["synth", "--out", str(out), "--scenes", "1", "--frames-per-scene", "1",
                     "--config", str(write_small_config(tmp_path))]) == 0
    with pytest.raises(ValueError, match="seed=9 conflicts"):
        SyntheticDataset(out, seed=9)
    frame_file = out / "scene_0000" / "frame_0000.npz"
    arrays = dict(np.load(frame_file))
    del arrays["camera1_teacher_labels"]
    np.savez(frame_file, **arrays)
    with pytest.raises(ValueError, match="frame_0000.npz.*camera1_teacher_labels"):
        SyntheticDataset(out)[0]
    (out / "scene_0000" / "scan_0001.npz").unlink()
    with pytest.raises(FileNotFoundError, match="scan_0001.npz"):
        SyntheticDataset(out, with_cameras=False)[0]
    frame_file.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="frame_0000.npz"):
        SyntheticDataset(out)[0]
    with pytest.raises(IndexError):
        SyntheticDataset(out)[1]


def test_simulated_pixel_features_are_noisy_unit_text_embeddings():
    text = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    text = torch.nn.functional.normalize(text, dim=1)
    classes = torch.tensor([1, 4, 4, 2])
    exact = simulated_pixel_features(classes, text, 0.0)
    torch.testing.assert_close(exact, text[classes - 1])
    noisy = simulated_pixel_features(classes, text, 3.0, torch.Generator().manual_seed(1))
    again = simulated_pixel_features(classes, text, 3.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(noisy, again)
    torch.testing.assert_close(noisy.norm(dim=1), torch.ones(4))
    assert 0.1 < float((noisy * text[classes - 1]).sum(1).mean()) < 0.6
    with pytest.raises(ValueError, match="1..4"):
        simulated_pixel_features(torch.tensor([0, 1]), text, 1.0)


def brute_force_pairs(num_primitives: int, num_rays: int):
    """Every primitive (but the ground, last) against every ray."""
    primitives = np.arange(num_primitives - 1)
    return np.repeat(primitives, num_rays), np.tile(np.arange(num_rays), len(primitives))


def test_culling_finds_the_same_hits_as_testing_every_primitive_against_every_ray(world):
    scene = world.scene(0)
    primitives = with_ground(scene.primitives)
    pose = scene.ego_to_street(0.3)
    lidar = LidarConfig(beams=12, azimuth_steps=180)
    lidar_pose = pose @ lidar_to_ego(lidar)
    dirs = lidar_ray_directions(lidar, 0.01) @ lidar_pose[:3, :3].T
    elevations = np.radians(np.linspace(*lidar.elevation_deg, lidar.beams))
    culled = lidar_candidates(primitives, np.linalg.inv(lidar_pose), elevations, 0.01, lidar.azimuth_steps,
                              70.0)
    for rig in FULL.cameras.rigs:
        camera_pose = pose @ camera_to_ego(rig)
        K = camera_intrinsics(rig, (224, 416)) / 8.0
        K[2, 2] = 1.0
        camera_dirs = camera_ray_directions(K, (28, 52)) @ camera_pose[:3, :3].T
        camera_culled = camera_candidates(primitives, np.linalg.inv(camera_pose), K, (28, 52), 100.0)
        every = brute_force_pairs(len(primitives), len(camera_dirs))
        full = cast_rays(primitives, camera_pose[:3, 3], camera_dirs, *every, 100.0)
        fast = cast_rays(primitives, camera_pose[:3, 3], camera_dirs, *camera_culled, 100.0)
        np.testing.assert_array_equal(fast.primitive, full.primitive)
        assert len(camera_culled[0]) < 0.1 * len(primitives) * len(camera_dirs)
    every = brute_force_pairs(len(primitives), len(dirs))
    full = cast_rays(primitives, lidar_pose[:3, 3], dirs, *every, 70.0)
    fast = cast_rays(primitives, lidar_pose[:3, 3], dirs, *culled, 70.0)
    np.testing.assert_array_equal(fast.primitive, full.primitive)
    np.testing.assert_array_equal(fast.distance, full.distance)
    assert fast.hit.mean() > 0.5 and len(culled[0]) < 0.1 * len(primitives) * len(dirs)
