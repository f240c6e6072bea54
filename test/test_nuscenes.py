"""nuScenes loader on the real v1.0-mini fixture: projection agrees with the devkit, labels map 32 -> 16,
sweeps follow ``sample_data.prev``, and missing or malformed files are named."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from clip2scene_core.data import open_dataset
from clip2scene_core.data.labels import NUSCENES_CLASSES
from clip2scene_core.data.nuscenes import (
    CAMERA_CHANNELS,
    NuScenesDataset,
    category_label_table,
    open_nuscenes,
)
from clip2scene_core.geometry import pose_matrix, project_frame, register_sweeps, transform_points

pytest.importorskip("nuscenes")

# README of the fixture: points per camera with depth > 1 m and a 1 px margin (devkit projection).
README_COUNTS = {
    "CAM_FRONT": 3053, "CAM_FRONT_RIGHT": 3076, "CAM_BACK_RIGHT": 3369,
    "CAM_BACK": 4820, "CAM_BACK_LEFT": 4089, "CAM_FRONT_LEFT": 3696,
}


@pytest.fixture(scope="module")
def root(real_data) -> Path:
    return real_data / "nuscenes-mini"


@pytest.fixture(scope="module")
def nusc(root):
    return open_nuscenes(root)


@pytest.fixture(scope="module")
def frame(nusc, root):
    return NuScenesDataset(root, nusc=nusc)[0]


def test_keyframe_fields(frame):
    assert frame.frame_id == "ca9a282c9e77460f8360f564131a8af5"
    assert frame.num_points == 34688
    assert frame.timestamp == 1532402927647951 * 1000
    assert 0.0 <= frame.intensity.min() and frame.intensity.max() <= 1.0
    assert [c.name for c in frame.cameras] == list(CAMERA_CHANNELS)
    assert all(c.image.shape == (900, 1600, 3) for c in frame.cameras)
    assert frame.sweeps == []  # the fixture has no earlier sweeps
    assert frame.class_names == NUSCENES_CLASSES


def test_projected_point_counts_match_the_devkit(nusc, frame):
    sample = nusc.sample[0]
    for index, camera in enumerate(frame.cameras):
        devkit_points, _, _ = nusc.explorer.map_pointcloud_to_image(
            sample["data"]["LIDAR_TOP"], sample["data"][camera.name]
        )
        hit = project_frame(frame, index, min_depth=1.0)
        u, v = hit.pixels[:, 0], hit.pixels[:, 1]
        margin = (u > 1) & (u < camera.width - 1) & (v > 1) & (v < camera.height - 1)
        assert int(margin.sum()) == devkit_points.shape[1] == README_COUNTS[camera.name], camera.name
        # The devkit moves float32 points through world coordinates (~1 km): a few 0.01 px of rounding.
        np.testing.assert_allclose(np.sort(hit.pixels[margin, 0]), np.sort(devkit_points[0]), atol=0.05)


def test_lidarseg_labels_map_32_to_16_like_the_devkit(nusc, frame):
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper

    mapper = LidarsegClassMapper(nusc)
    table = category_label_table(nusc)
    for fine, coarse in mapper.fine_idx_2_coarse_idx_mapping.items():
        assert table[fine] == coarse, nusc.lidarseg_idx2name_mapping[fine]
    coarse_index = mapper.coarse_name_2_coarse_idx_mapping
    coarse_names = sorted(coarse_index, key=coarse_index.get)
    assert tuple(coarse_names[1:]) == NUSCENES_CLASSES
    counts = np.bincount(frame.labels, minlength=17)
    expected = {0: 33689, 7: 109, 1: 288, 8: 13, 2: 1, 3: 3, 4: 79, 5: 4, 10: 502}  # README histogram, mapped
    assert {c: int(n) for c, n in enumerate(counts) if n} == expected


def copy_tables_and_cloud(root: Path, tmp_path: Path) -> Path:
    """A LiDAR-only copy of the fixture (tables, keyframe cloud, lidarseg labels, map placeholder)."""
    copy = tmp_path / "nuscenes"
    shutil.copytree(root / "v1.0-mini", copy / "v1.0-mini")
    shutil.copytree(root / "lidarseg", copy / "lidarseg")
    shutil.copytree(root / "maps", copy / "maps")
    shutil.copytree(root / "samples" / "LIDAR_TOP", copy / "samples" / "LIDAR_TOP")
    return copy


def add_sweep(copy: Path, seconds_before: float, world_shift: list[float]) -> None:
    """Insert an earlier LIDAR_TOP sweep (the keyframe cloud again) before the oldest one, its ego pose
    shifted by ``world_shift`` metres in the world."""
    tables = copy / "v1.0-mini"
    sample_data = json.loads((tables / "sample_data.json").read_text())
    poses = json.loads((tables / "ego_pose.json").read_text())
    keyframe = next(r for r in sample_data if r["filename"].startswith("samples/LIDAR_TOP"))
    oldest = keyframe
    while oldest["prev"]:
        oldest = next(r for r in sample_data if r["token"] == oldest["prev"])
    token = f"sweep{len(sample_data):027d}"
    timestamp = keyframe["timestamp"] - int(seconds_before * 1e6)
    pose = dict(next(p for p in poses if p["token"] == keyframe["ego_pose_token"]))
    pose.update(token=token, timestamp=timestamp, translation=list(np.add(pose["translation"], world_shift)))
    filename = f"sweeps/LIDAR_TOP/{token}.pcd.bin"
    (copy / "sweeps" / "LIDAR_TOP").mkdir(parents=True, exist_ok=True)
    shutil.copy(copy / keyframe["filename"], copy / filename)
    sample_data.append(
        dict(keyframe, token=token, ego_pose_token=token, timestamp=timestamp, is_key_frame=False,
             filename=filename, prev="", next=oldest["token"])
    )
    oldest["prev"] = token
    (tables / "sample_data.json").write_text(json.dumps(sample_data))
    (tables / "ego_pose.json").write_text(json.dumps(poses + [pose]))


def test_sweeps_follow_prev_within_the_time_window(root, tmp_path):
    copy = copy_tables_and_cloud(root, tmp_path)
    add_sweep(copy, 0.05, [1.0, -2.0, 0.0])
    add_sweep(copy, 0.6, [3.0, 0.0, 0.0])
    frame = NuScenesDataset(copy, cameras=(), num_prev_sweeps=5, max_sweep_seconds=0.5)[0]
    assert len(frame.sweeps) == 1
    assert frame.sweeps[0].timestamp == frame.timestamp - 50_000_000
    assert len(NuScenesDataset(copy, cameras=(), num_prev_sweeps=5, max_sweep_seconds=1.0)[0].sweeps) == 2
    assert len(NuScenesDataset(copy, cameras=(), num_prev_sweeps=1, max_sweep_seconds=1.0)[0].sweeps) == 1
    # The sweep is the keyframe cloud seen from an ego shifted by (1, -2, 0) m: registered into the
    # keyframe's LiDAR frame and taken to the world, every point sits (1, -2, 0) m from its twin.
    points, source = register_sweeps(frame, num_sweeps=2, max_seconds=0.5)
    world = transform_points(points.astype(np.float64), frame.lidar_to_world)
    offset = world[source == 1] - world[source == 0]
    np.testing.assert_allclose(offset, np.broadcast_to([1.0, -2.0, 0.0], offset.shape), atol=2e-3)


def test_camera_chain_composes_ego_poses_at_both_timestamps(nusc, frame):
    sample = nusc.sample[0]
    record = nusc.get("sample_data", sample["data"]["CAM_BACK"])
    sensor = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
    ego = nusc.get("ego_pose", record["ego_pose_token"])
    camera_to_world = pose_matrix(ego["translation"], ego["rotation"]) @ pose_matrix(
        sensor["translation"], sensor["rotation"]
    )
    camera = frame.cameras[CAMERA_CHANNELS.index("CAM_BACK")]
    np.testing.assert_allclose(camera_to_world @ camera.lidar_to_camera, frame.lidar_to_world, atol=1e-9)


def test_missing_and_malformed_files_are_named(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nuscenes-nowhere"):
        open_dataset("nuscenes", tmp_path / "nuscenes-nowhere")
    with pytest.raises(FileNotFoundError, match="v1.0-trainval"):
        open_dataset("nuscenes", root, version="v1.0-trainval")
    copy = copy_tables_and_cloud(root, tmp_path)
    with pytest.raises(FileNotFoundError, match="CAM_FRONT__1532402927612460.jpg"):
        NuScenesDataset(copy, cameras=("CAM_FRONT",))[0]
    with pytest.raises(ValueError, match="CAM_TOP"):
        NuScenesDataset(copy, cameras=("CAM_TOP",))
    label_file = next((copy / "lidarseg" / "v1.0-mini").iterdir())
    label_file.write_bytes(label_file.read_bytes()[:-3])
    with pytest.raises(ValueError, match=re.escape(label_file.name)):
        NuScenesDataset(copy, cameras=())[0]
    cloud = next((copy / "samples" / "LIDAR_TOP").iterdir())
    cloud.write_bytes(cloud.read_bytes()[:-4])
    with pytest.raises(ValueError, match="malformed"):
        NuScenesDataset(copy, cameras=())[0]
    cloud.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(cloud.name)):
        NuScenesDataset(copy, cameras=())[0]
    (copy / "v1.0-mini" / "sample.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed"):
        NuScenesDataset(copy)


LIDAR_TOKEN = "9d9bf11fb0e144c8b446d54a8a00184f"


def write_panoptic(copy: Path, listed: bool) -> np.ndarray:
    """A panoptic file for the fixture's keyframe from its lidarseg labels (object points numbered
    1..4 in turn); ``listed`` also registers it in ``panoptic.json``. Returns the values."""
    lidarseg = np.fromfile(next((copy / "lidarseg" / "v1.0-mini").iterdir()), np.uint8).astype(np.int64)
    number = np.where((lidarseg >= 1) & (lidarseg <= 23), 1 + np.arange(len(lidarseg)) % 4, 0)
    values = (lidarseg * 1000 + number).astype(np.uint16)
    relative = f"panoptic/v1.0-mini/{LIDAR_TOKEN}_panoptic.npz"
    (copy / relative).parent.mkdir(parents=True)
    np.savez_compressed(copy / relative, data=values)
    if listed:
        record = {"token": LIDAR_TOKEN, "sample_data_token": LIDAR_TOKEN, "filename": relative}
        (copy / "v1.0-mini" / "panoptic.json").write_text(json.dumps([record]))
    return values.astype(np.int64)


def test_panoptic_files_give_instance_ids_and_none_without_them(root, tmp_path, frame):
    assert frame.instances is None  # the fixture has no panoptic files
    for listed in (False, True):
        copy = copy_tables_and_cloud(root, tmp_path / str(listed))
        values = write_panoptic(copy, listed)
        loaded = NuScenesDataset(copy, cameras=())[0]
        np.testing.assert_array_equal(loaded.labels, frame.labels)
        evaluated = frame.labels > 0  # lidarseg noise (index 0) has no class, so no instance
        expected = np.where((values % 1000 > 0) & evaluated, values, 0)
        np.testing.assert_array_equal(loaded.instances, expected)
        # 0 and 23 objects: 8 object classes numbered 1..4 each, less where a class has under 4 points
        assert loaded.instances.dtype == np.uint32 and len(np.unique(loaded.instances)) == 24
        assert not loaded.instances[~evaluated].any()
    # Without lidarseg files the panoptic file's class half gives the labels.
    shutil.rmtree(copy / "lidarseg")
    (copy / "v1.0-mini" / "lidarseg.json").unlink()
    np.testing.assert_array_equal(NuScenesDataset(copy, cameras=())[0].labels, frame.labels)


def test_malformed_panoptic_file_is_named(root, tmp_path):
    copy = copy_tables_and_cloud(root, tmp_path)
    write_panoptic(copy, listed=True)
    path = copy / "panoptic" / "v1.0-mini" / f"{LIDAR_TOKEN}_panoptic.npz"
    np.savez_compressed(path, data=np.zeros(5, np.uint16))
    with pytest.raises(ValueError, match=re.escape(path.name) + ".*expected integer \\(34688,\\)"):
        NuScenesDataset(copy, cameras=())[0]
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=re.escape(path.name)):
        NuScenesDataset(copy, cameras=())[0]


def test_split_selects_scenes(nusc, root):
    assert len(NuScenesDataset(root, nusc=nusc, split="mini_train")) == 1  # scene-0061 is in mini_train
    assert len(NuScenesDataset(root, nusc=nusc, split="mini_val")) == 0
    with pytest.raises(ValueError, match="unknown nuScenes split"):
        NuScenesDataset(root, nusc=nusc, split="nope")
