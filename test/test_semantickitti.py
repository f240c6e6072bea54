"""SemanticKITTI loader: the real scan's class histogram after the learning map, poses -> sweeps in the
keyframe frame, the image_2 camera from P2 and Tr, and errors that name the bad file."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from clip2scene_core.data import open_dataset
from clip2scene_core.data.labels import SEMANTICKITTI_CLASSES
from clip2scene_core.data.semantickitti import SemanticKittiDataset
from clip2scene_core.geometry import project_frame, register_sweeps

# velodyne (x forward, y left, z up) -> camera 0 (x right, y down, z forward), plus an offset
TR = np.array([[0, -1, 0, 0.1], [0, 0, -1, -0.2], [1, 0, 0, -0.3]], dtype=np.float64)


def format_matrix(matrix: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(matrix).reshape(-1)[:12])


def write_sequence(
    folder: Path,
    scans: list[np.ndarray],
    camera0_poses: list[np.ndarray],
    labels: Optional[list[np.ndarray]] = None,
    times: Optional[list[float]] = None,
    tr: np.ndarray = TR,
    projections: Optional[dict[str, np.ndarray]] = None,
) -> Path:
    """Write a KITTI odometry sequence folder: scans (N, 4) float32, labels (N,) uint32, 4x4 poses."""
    (folder / "velodyne").mkdir(parents=True)
    for i, scan in enumerate(scans):
        np.asarray(scan, dtype=np.float32).tofile(folder / "velodyne" / f"{i:06d}.bin")
    if labels is not None:
        (folder / "labels").mkdir()
        for i, label in enumerate(labels):
            np.asarray(label, dtype=np.uint32).tofile(folder / "labels" / f"{i:06d}.label")
    lines = [f"{key}: {format_matrix(value)}" for key, value in (projections or {}).items()]
    (folder / "calib.txt").write_text("\n".join(lines + [f"Tr: {format_matrix(tr)}"]) + "\n")
    (folder / "poses.txt").write_text("\n".join(format_matrix(p[:3]) for p in camera0_poses) + "\n")
    if times is not None:
        (folder / "times.txt").write_text("\n".join(f"{t:e}" for t in times) + "\n")
    return folder


def forward_pose(metres: float) -> np.ndarray:
    """Camera-0 pose after driving ``metres`` along camera z (= LiDAR x)."""
    pose = np.eye(4)
    pose[2, 3] = metres
    return pose


def test_real_scan_class_histogram_after_learning_map(real_data):
    dataset = open_dataset("semantickitti", real_data / "semantickitti")
    assert len(dataset) == 1 and dataset.class_names == SEMANTICKITTI_CLASSES
    frame = dataset[0]
    assert frame.frame_id == "00/000000" and frame.num_points == 123389
    assert 0.0 <= frame.intensity.min() and frame.intensity.max() <= 1.0
    counts = dict(zip(("ignore",) + SEMANTICKITTI_CLASSES, np.bincount(frame.labels, minlength=20).tolist()))
    # README raw histogram through the learning map (moving-car -> car, moving-person -> person,
    # unlabeled/outlier/other-structure/other-object -> ignore).
    assert counts == {
        "ignore": 4458 + 5 + 809 + 1652, "car": 544 + 990, "bicycle": 20, "motorcycle": 0, "truck": 0,
        "other-vehicle": 0, "person": 23 + 138, "bicyclist": 0, "motorcyclist": 0, "road": 20975,
        "parking": 84, "sidewalk": 30092, "other-ground": 0, "building": 2126, "fence": 531,
        "vegetation": 24514, "trunk": 3978, "terrain": 30925, "pole": 413, "traffic-sign": 1112,
    }
    np.testing.assert_allclose(frame.ego_to_world, np.eye(4), atol=1e-12)  # identity pose of frame 0
    assert frame.cameras == [] and frame.sweeps == []


def test_label_ids_use_lower_16_bits_and_the_learning_map(tmp_path):
    raw = np.array([(7 << 16) | 252, 254, 60, 52, 13, (3 << 16) | 81, 1000], dtype=np.uint32)
    scan = np.zeros((len(raw), 4), np.float32)
    write_sequence(tmp_path / "sequences" / "04", [scan], [np.eye(4)], labels=[raw])
    labels = SemanticKittiDataset(tmp_path)[0].labels
    names = ["ignore" if c == 0 else SEMANTICKITTI_CLASSES[c - 1] for c in labels]
    assert names == ["car", "person", "road", "ignore", "other-vehicle", "traffic-sign", "ignore"]


def test_real_scan_instances_are_one_id_per_object_and_zero_for_stuff(real_data):
    frame = SemanticKittiDataset(real_data / "semantickitti")[0]
    assert frame.instances.dtype == np.uint32
    # 11 instance numbers in the file; moving cars and moving persons are both numbered 1..3, so the
    # cloud holds 14 objects: cars 1, 2, 3, 194, 195, 196, 198; bicycles 24, 25; persons 1, 2, 3, 9, 15.
    objects = {(int(i) >> 16, SEMANTICKITTI_CLASSES[(int(i) & 0xFFFF) - 1]) for i in np.unique(frame.instances) if i}
    assert objects == {(n, "car") for n in (1, 2, 3, 194, 195, 196, 198)} | {(24, "bicycle"), (25, "bicycle")} \
        | {(n, "person") for n in (1, 2, 3, 9, 15)}
    for instance in np.unique(frame.instances[frame.instances > 0]):
        assert len(np.unique(frame.labels[frame.instances == instance])) == 1
    things = np.isin(frame.labels, [SEMANTICKITTI_CLASSES.index(name) + 1 for name in ("car", "bicycle", "person")])
    assert not frame.instances[~things].any()
    assert int((frame.instances[things] == 0).sum()) == 3  # 3 person points the file gives no instance


def test_instance_ids_keep_the_upper_16_bits_and_the_evaluation_class(tmp_path):
    raw = np.array([(7 << 16) | 252, (7 << 16) | 10, (7 << 16) | 254, 40, (5 << 16) | 52, 30], dtype=np.uint32)
    scan = np.zeros((len(raw), 4), np.float32)
    write_sequence(tmp_path / "sequences" / "04", [scan, scan], [np.eye(4), forward_pose(1.0)], labels=[raw, raw])
    frame = SemanticKittiDataset(tmp_path)[1]
    car, person = SEMANTICKITTI_CLASSES.index("car") + 1, SEMANTICKITTI_CLASSES.index("person") + 1
    # moving-car and car 7 are one object, person 7 another; road, an ignored id and a person
    # without an instance number have none.
    assert frame.instances.tolist() == [(7 << 16) | car, (7 << 16) | car, (7 << 16) | person, 0, 0, 0]
    np.testing.assert_array_equal(frame.sweeps[0].instances, frame.instances)
    assert SemanticKittiDataset(tmp_path, cameras=False)[0].instances is not None
    shutil.rmtree(tmp_path / "sequences" / "04" / "labels")
    assert SemanticKittiDataset(tmp_path)[0].instances is None


def test_poses_place_sweeps_in_the_keyframe_lidar_frame(tmp_path):
    # A static landmark 10 m ahead of the first scan; the car drives 1 m forward per scan.
    scans = [np.array([[10.0 - k, 0.0, 0.0, 0.5]], np.float32) for k in range(3)]
    labels = [np.array([10], np.uint32)] * 3
    poses = [forward_pose(k) for k in range(3)]
    write_sequence(tmp_path / "sequences" / "00", scans, poses, labels, times=[0.0, 0.1, 0.2])
    dataset = SemanticKittiDataset(tmp_path, num_prev_sweeps=2, max_sweep_seconds=0.5)
    assert len(dataset) == 3
    frame = dataset[2]
    assert frame.timestamp == 200_000_000
    assert [s.timestamp for s in frame.sweeps] == [100_000_000, 0]
    np.testing.assert_allclose(frame.ego_to_world[:3, 3], [2.0, 0.0, 0.0], atol=1e-12)
    points, source = register_sweeps(frame, num_sweeps=3, max_seconds=0.5)
    np.testing.assert_allclose(points, [[8.0, 0.0, 0.0]] * 3, atol=1e-5)
    assert source.tolist() == [0, 1, 2]
    assert frame.sweeps[0].labels.tolist() == [1]
    assert len(SemanticKittiDataset(tmp_path, max_sweep_seconds=0.15)[2].sweeps) == 1
    assert SemanticKittiDataset(tmp_path)[0].sweeps == []


def test_image_2_camera_from_p2_and_tr(real_data, tmp_path):
    """The KITTI object frame 000008 laid out as an odometry sequence: all its points project."""
    kitti = real_data / "kitti"
    calib = {}
    for line in (kitti / "000008_calib.txt").read_text().splitlines():
        if line.strip():
            key, values = line.split(":", 1)
            calib[key] = np.array(values.split(), dtype=np.float64)
    tr = calib["R0_rect"].reshape(3, 3) @ calib["Tr_velo_to_cam"].reshape(3, 4)
    scan = np.fromfile(kitti / "000008.bin", dtype=np.float32).reshape(-1, 4)
    folder = write_sequence(
        tmp_path / "sequences" / "00", [scan], [np.eye(4)], tr=tr,
        projections={f"P{i}": calib[f"P{i}"] for i in range(4)},
    )
    (folder / "image_2").mkdir()
    shutil.copy(kitti / "000008.png", folder / "image_2" / "000000.png")
    frame = SemanticKittiDataset(tmp_path)[0]
    assert frame.labels is None
    (camera,) = frame.cameras
    assert camera.name == "image_2" and camera.image.shape == (375, 1242, 3)
    np.testing.assert_allclose(camera.K, calib["P2"].reshape(3, 4)[:, :3])
    assert len(project_frame(frame, 0, min_depth=1.0)) == 17238  # README: 17238 of 17238
    # lidar_to_camera composes P2's baseline with Tr: K @ [R | t] must reproduce P2 @ Tr.
    p2_tr = calib["P2"].reshape(3, 4) @ np.vstack([tr, [0, 0, 0, 1]])
    np.testing.assert_allclose(camera.K @ camera.lidar_to_camera[:3], p2_tr, atol=1e-9)
    assert SemanticKittiDataset(tmp_path, cameras=False)[0].cameras == []


def test_split_and_sequence_selection(tmp_path):
    for name in ("00", "08"):
        write_sequence(tmp_path / "sequences" / name, [np.zeros((1, 4))], [np.eye(4)])
    assert [f for f, _ in SemanticKittiDataset(tmp_path, split="val").index] == ["08"]
    assert [f for f, _ in SemanticKittiDataset(tmp_path, sequences=[0]).index] == ["00"]
    assert len(SemanticKittiDataset(tmp_path / "sequences")) == 2
    with pytest.raises(ValueError, match="unknown SemanticKITTI split"):
        SemanticKittiDataset(tmp_path, split="everything")


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="kitti-nowhere"):
        SemanticKittiDataset(tmp_path / "kitti-nowhere")
    folder = write_sequence(
        tmp_path / "sequences" / "00", [np.zeros((2, 4))] * 2, [np.eye(4)], labels=[np.zeros(2)] * 2
    )
    with pytest.raises(ValueError, match=re.escape(str(folder / "poses.txt"))):
        SemanticKittiDataset(tmp_path)[1]  # two scans, one pose line
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "sequences" / "03" / "velodyne"))):
        SemanticKittiDataset(tmp_path, sequences=["03"])
    np.zeros(3, np.uint32).tofile(folder / "labels" / "000000.label")
    with pytest.raises(ValueError, match="000000.label"):
        SemanticKittiDataset(tmp_path)[0]
    (folder / "labels" / "000000.label").unlink()
    with pytest.raises(FileNotFoundError, match="000000.label"):
        SemanticKittiDataset(tmp_path)[0]
    np.zeros(7, np.float32).tofile(folder / "velodyne" / "000000.bin")
    with pytest.raises(ValueError, match="000000.bin"):
        SemanticKittiDataset(tmp_path)[0]
    (folder / "calib.txt").write_text("P0: 1 2 3\n")
    with pytest.raises(ValueError, match=re.escape(str(folder / "calib.txt"))):
        SemanticKittiDataset(tmp_path)
    (folder / "calib.txt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / "calib.txt"))):
        SemanticKittiDataset(tmp_path)
    write_sequence(tmp_path / "other" / "sequences" / "00", [np.zeros((1, 4))], [np.eye(4)])
    (tmp_path / "other" / "sequences" / "00" / "poses.txt").unlink()
    with pytest.raises(FileNotFoundError, match="poses.txt"):
        SemanticKittiDataset(tmp_path / "other")
