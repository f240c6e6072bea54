"""The node with cameras: LiDAR-anchored pairing and the 2D-3D ensemble, as real processes."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml

from ros_harness import ROOT, RosProcess, spin_until

TEMPLATES = ["a photo of a {}."]
CLASSES = ["road", "car", "tree"]
# Camera looking along LiDAR +y: camera x = lidar x, camera y = -lidar z, camera z = lidar y.
FRONT = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
# Camera looking along LiDAR +x.
RIGHT = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
K = np.array([[80.0, 0, 96], [0, 80.0, 64], [0, 0, 1]])
SIZE = (128, 192)


def scene(seed: int):
    rng = np.random.default_rng(seed)
    points = rng.uniform([-2, 2, -1.5], [12, 20, 2], (1500, 3)).astype(np.float32)
    images = {name: rng.integers(0, 255, SIZE + (3,), dtype=np.uint8) for name in ("front", "right")}
    return points, rng.random(len(points), np.float32), images


@pytest.fixture(scope="module")
def camera_node(ros_env, clip_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("camera_node")
    calibration = folder / "calibration.yaml"
    calibration.write_text(yaml.safe_dump({"front": {"lidar_to_camera": FRONT.tolist()},
                                           "right": {"lidar_to_camera": RIGHT.tolist()}}))
    argv = [sys.executable, "-m", "clip2scene_ros.segment_node", "--ros-args",
            "--params-file", str(ROOT / "config" / "segment.yaml"),
            "-p", f"checkpoint:={clip_checkpoint}", "-p", f"class_names:={json.dumps(CLASSES)}",
            "-p", f"prompt_templates:={json.dumps(TEMPLATES)}", "-p", f"text_cache_dir:={folder}",
            "-p", "reliability:=reliable", "-p", "depth:=10", "-p", "use_cameras:=true",
            "-p", 'camera_names:=["front", "right"]', "-p", f"calibration_file:={calibration}",
            "-p", "sync_timeout:=0.5"]
    with RosProcess("camera_node", argv, folder) as process:
        yield process


@pytest.fixture(scope="module")
def reference(clip_checkpoint, tmp_path_factory):
    from clip2scene_core.segmenter import Segmenter

    return Segmenter(clip_checkpoint, class_names=CLASSES, device="cpu", prompt_templates=TEMPLATES,
                     text_cache_dir=tmp_path_factory.mktemp("cache"), image_teacher="auto")


def test_clouds_pair_with_cameras_and_go_ahead_without_a_missing_one(camera_node, reference, rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from clip2scene_core.frame import Camera
    from clip2scene_ros.conversions import cloud_to_array, make_cloud, make_header, numpy_to_image

    node = rclpy.create_node("camera_test_client", context=rclpy_context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    # The node's own topic names (no remapping): ~/input/..., ~/output/...
    clouds = node.create_publisher(PointCloud2, "/clip2scene_segment/input/pointcloud", qos)
    images = {name: node.create_publisher(Image, f"/clip2scene_segment/input/{name}/image", qos)
              for name in ("front", "right")}
    infos = {name: node.create_publisher(CameraInfo, f"/clip2scene_segment/input/{name}/camera_info", 10)
             for name in ("front", "right")}
    outputs = []
    node.create_subscription(PointCloud2, "/clip2scene_segment/output/pointcloud", outputs.append, qos)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)

    def publishers_matched():
        return all(p.get_subscription_count() for p in [clouds, *images.values(), *infos.values()])

    try:
        spin_until(executor, lambda: publishers_matched() or camera_node.poll() is not None, 180,
                   "the camera node")
        assert camera_node.poll() is None, camera_node.output()
        for name in ("front", "right"):
            info = CameraInfo(header=make_header(0, name), height=SIZE[0], width=SIZE[1])
            info.k = K.ravel().tolist()
            infos[name].publish(info)
        for _ in range(10):  # let the camera infos arrive before any image
            executor.spin_once(timeout_sec=0.05)
        cases = [("both cameras", ("front", "right")), ("right camera missing", ("front",))]
        for index, (description, present) in enumerate(cases):
            points, intensity, pictures = scene(seed=index)
            stamp = (index + 1) * 1_000_000_000
            for name in present:
                images[name].publish(numpy_to_image(pictures[name], "rgb8", stamp_ns=stamp, frame_id=name))
            executor.spin_once(timeout_sec=0.2)  # images first, as a camera usually is
            before = len(outputs)
            clouds.publish(make_cloud({"x": points[:, 0], "y": points[:, 1], "z": points[:, 2],
                                       "intensity": intensity}, stamp_ns=stamp, frame_id="lidar"))
            spin_until(executor, lambda: len(outputs) > before, 120, f"output ({description})")
            cameras = [Camera(name, pictures[name], K, {"front": FRONT, "right": RIGHT}[name])
                       for name in present]
            expected = reference.segment(points, intensity, cameras=cameras)
            assert expected.source.any(), "the 2D teacher should win somewhere in this scene"
            output = cloud_to_array(outputs[-1])
            np.testing.assert_array_equal(output["label"], expected.labels, err_msg=description)
            np.testing.assert_allclose(output["score"], expected.scores, atol=1e-4, err_msg=description)
    finally:
        executor.shutdown()
        node.destroy_node()


def test_cameras_need_a_calibration_for_each_camera(ros_env, clip_checkpoint, tmp_path):
    import subprocess

    calibration = tmp_path / "calibration.yaml"
    calibration.write_text(yaml.safe_dump({"front": {"lidar_to_camera": FRONT.tolist()}}))
    result = subprocess.run(
        [sys.executable, "-m", "clip2scene_ros.segment_node", "--ros-args", "-p", f"checkpoint:={clip_checkpoint}",
         "-p", "use_cameras:=true", "-p", 'camera_names:=["front", "right"]',
         "-p", f"calibration_file:={calibration}"],
        capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode == 2
    assert "no lidar_to_camera for camera 'right'" in result.stderr
