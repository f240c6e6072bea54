"""The segmentation node as a real process on loopback: labels, run-time class changes, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from node_client import NodeClient, make_cloud_columns
from ros_harness import ROOT, RosProcess, spin_until

TEMPLATES = ["a photo of a {}.", "a {} in the scene."]  # few templates keep text encoding quick
FIRST_CLASSES = ["road", "car", "building", "vegetation"]
SECOND_CLASSES = ["street", "automobile", "house", "tree", "person"]


@pytest.fixture(scope="module")
def node_process(ros_env, tiny_checkpoint, tmp_path_factory):
    """One node process for the module (starting one costs seconds)."""
    logs = tmp_path_factory.mktemp("node")
    argv = [sys.executable, "-m", "clip2scene_ros.segment_node", "--ros-args",
            "--params-file", str(ROOT / "config" / "segment.yaml"),
            "-p", f"checkpoint:={tiny_checkpoint}",
            "-p", f"class_names:={json.dumps(FIRST_CLASSES)}",
            "-p", f"prompt_templates:={json.dumps(TEMPLATES)}",
            "-p", f"text_cache_dir:={logs / 'text_cache'}",
            "-p", "reliability:=reliable", "-p", "max_points:=20000", "-p", "diagnostics_window:=3.0",
            # The test client's publisher idles between tests: no "matched but silent" WARN here.
            "-p", "input_timeout:=600.0"]
    with RosProcess("segment_node", argv, logs) as process:
        yield process


@pytest.fixture
def client(rclpy_context, node_process):
    client = NodeClient(rclpy_context)
    client.wait_until_connected(node_process)
    yield client
    client.close()


def blob_cloud_columns(seed: int) -> dict:
    """3000 points: 10 dense blobs of 200 points (objects whatever class they get) and scattered rest."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-18, -18, 0], [18, 18, 1], (10, 3))
    blobs = (centres[:, None, :] + rng.uniform(-0.8, 0.8, (10, 200, 3))).reshape(-1, 3)
    columns = make_cloud_columns(seed)
    for axis, name in enumerate("xyz"):
        columns[name][:2000] = blobs[:, axis]
    return columns


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, tmp_path_factory):
    """The same Segmenter run directly, in this process."""
    from clip2scene_core.segmenter import Segmenter

    return Segmenter(tiny_checkpoint, class_names=FIRST_CLASSES, device="cpu", prompt_templates=TEMPLATES,
                     text_cache_dir=tmp_path_factory.mktemp("reference_cache"))


def labels_under(reference, names, columns, things=None):
    space = reference.encode_classes(names, thing_classes=things)
    points = np.stack([columns["x"], columns["y"], columns["z"]], axis=1)
    return reference.segment(points, columns["intensity"], class_space=space)


def test_output_cloud_matches_segmenter_run_directly(client, reference):
    from clip2scene_ros.conversions import cloud_to_array, make_cloud

    columns = make_cloud_columns(seed=1)
    output = cloud_to_array(client.send(make_cloud(columns, stamp_ns=5_000_000_000, frame_id="lidar")))
    expected = labels_under(reference, FIRST_CLASSES, columns)
    assert set(output.dtype.names) >= {"x", "y", "z", "intensity", "label", "score", "rgb"}
    np.testing.assert_array_equal(output["x"], columns["x"])
    np.testing.assert_array_equal(output["label"], expected.labels)
    np.testing.assert_allclose(output["score"], expected.scores, atol=1e-5)
    assert client.announcements[-1]["classes"] == FIRST_CLASSES


def test_class_list_change_mid_stream_loses_and_mixes_nothing(client, reference):
    from clip2scene_ros.conversions import cloud_to_array, make_cloud

    sent = [make_cloud_columns(seed=10 + i) for i in range(8)]
    outputs, future = [], None
    for index, columns in enumerate(sent):
        outputs.append(cloud_to_array(client.send(make_cloud(columns, stamp_ns=index + 1))).copy())
        if index == 2:  # change the list without waiting: the swap races the stream
            future = client.set_class_names(SECOND_CLASSES, wait=False)
    spin_until(client.executor, future.done, 30, "the parameter service")
    assert future.result().results[0].successful
    assert len(outputs) == len(sent), "a frame was lost"
    switched = []
    for columns, output in zip(sent, outputs):
        old = labels_under(reference, FIRST_CLASSES, columns)
        new = labels_under(reference, SECOND_CLASSES, columns)
        is_old, is_new = (np.array_equal(output["label"], result.labels)
                          and np.allclose(output["score"], result.scores, atol=1e-5) for result in (old, new))
        assert is_old != is_new, "a cloud is labelled with neither list alone (mixed lists)"
        switched.append(is_new)
    assert switched[:3] == [False] * 3 and switched[-1], switched
    assert switched == sorted(switched), "the old list came back after the new one"
    assert client.announcements[-1]["classes"] == SECOND_CLASSES
    versions = [a["version"] for a in client.announcements]
    assert versions == sorted(versions)
    client.set_class_names(FIRST_CLASSES)


@pytest.mark.parametrize("names, reason", [
    ([], "empty"),
    (["Car", "car "], "duplicates"),
    (["car", "car"], "duplicates"),
    (["car", ""], "empty name"),
    (["x" * 500], "longer than"),
])
def test_bad_class_list_is_rejected_with_a_reason(client, names, reason):
    from clip2scene_ros.conversions import make_cloud

    result = client.set_class_names(names)
    assert not result.successful
    assert reason in result.reason
    assert client.send(make_cloud(make_cloud_columns(seed=3))).width == 3000  # still serving


def objects_for(client, stamp_ns: int):
    from clip2scene_ros.conversions import stamp_to_ns

    spin_until(client.executor, lambda: any(stamp_to_ns(o.markers[0].header.stamp) == stamp_ns
                                            for o in client.objects), 30, "the objects of a cloud")
    return next(o for o in client.objects if stamp_to_ns(o.markers[0].header.stamp) == stamp_ns)


def test_objects_topic_boxes_the_thing_points_with_the_clouds_stamp(client, reference):
    from visualization_msgs.msg import Marker

    from clip2scene_ros.conversions import cloud_to_array, make_cloud

    things = ["car", "building", "vegetation"]
    assert all(result.successful for result in client.set_string_arrays(thing_classes=things))
    spin_until(client.executor, lambda: client.announcements[-1].get("things") == things, 30, "the things")
    columns = blob_cloud_columns(seed=21)
    output = client.send(make_cloud(columns, stamp_ns=7_000_000_003, frame_id="velodyne"))
    cloud = cloud_to_array(output)
    expected = labels_under(reference, FIRST_CLASSES, columns, things)
    assert {f.name: f.datatype for f in output.fields}["instance"] == 6  # uint32
    np.testing.assert_array_equal(cloud["instance"], expected.instances)
    assert len(expected.objects) > 0
    markers = objects_for(client, 7_000_000_003)
    assert markers.markers[0].action == Marker.DELETEALL
    boxes = markers.markers[1:]
    assert [m.id for m in boxes] == expected.objects.instance_id.tolist()
    assert [m.ns for m in boxes] == [FIRST_CLASSES[i] for i in expected.objects.class_index]
    assert all(m.header.frame_id == "velodyne" for m in markers.markers)
    np.testing.assert_allclose([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in boxes],
                               expected.objects.center, atol=1e-4)
    assert [json.loads(m.text)["points"] for m in boxes] == expected.objects.point_count.tolist()
    assert all(result.successful for result in client.set_string_arrays(thing_classes=[""]))


def test_thing_class_changes_swap_between_clouds_in_order(client, reference):
    from clip2scene_ros.conversions import cloud_to_array, make_cloud

    assert all(result.successful for result in client.set_string_arrays(thing_classes=["car"]))
    sent = [blob_cloud_columns(seed=30 + i) for i in range(6)]
    outputs, future = [], None
    for index, columns in enumerate(sent):
        outputs.append(cloud_to_array(client.send(make_cloud(columns, stamp_ns=100 + index))).copy())
        if index == 1:  # change the things without waiting: the swap races the stream
            future = client.set_string_arrays(wait=False, thing_classes=["building", "vegetation"])
    spin_until(client.executor, future.done, 30, "the parameter service")
    assert future.result().results[0].successful
    switched = []
    for index, (columns, output) in enumerate(zip(sent, outputs)):
        old = labels_under(reference, FIRST_CLASSES, columns, ["car"]).instances
        new = labels_under(reference, FIRST_CLASSES, columns, ["building", "vegetation"]).instances
        assert not np.array_equal(old, new)
        is_new = np.array_equal(output["instance"], new)
        assert is_new or np.array_equal(output["instance"], old), "instances of neither thing list"
        switched.append(is_new)
        assert len(objects_for(client, 100 + index).markers) - 1 == output["instance"].max()
    assert switched[:2] == [False, False] and switched[-1] and switched == sorted(switched), switched
    assert client.announcements[-1]["things"] == ["building", "vegetation"]
    assert all(result.successful for result in client.set_string_arrays(thing_classes=[""]))


def test_thing_classes_must_name_classes_of_the_list(client):
    from clip2scene_ros.conversions import make_cloud

    result = client.set_string_arrays(thing_classes=["car", "lorry"])[0]
    assert not result.successful and "thing classes ['lorry'] are not in the class list" in result.reason
    assert all(result.successful for result in client.set_string_arrays(thing_classes=["car"]))
    result = client.set_class_names(SECOND_CLASSES)  # would drop the thing "car"
    assert not result.successful and "thing_classes in the same call" in result.reason
    together = client.set_string_arrays_atomically(class_names=SECOND_CLASSES, thing_classes=["automobile"])
    assert together.successful, together.reason
    spin_until(client.executor, lambda: client.announcements[-1]["things"] == ["automobile"], 30, "the swap")
    assert client.announcements[-1]["classes"] == SECOND_CLASSES
    assert client.send(make_cloud(make_cloud_columns(seed=3))).width == 3000  # still serving
    assert client.set_string_arrays_atomically(class_names=FIRST_CLASSES, thing_classes=[""]).successful


def malformed_clouds():
    """(description, message) pairs the node must log and skip."""
    from clip2scene_ros.conversions import make_cloud

    good = make_cloud(make_cloud_columns(seed=4))
    short = make_cloud(make_cloud_columns(seed=4))
    short.data = bytes(short.data)[:-7]
    wrong_step = make_cloud(make_cloud_columns(seed=4))
    wrong_step.point_step += 4
    no_z = make_cloud({k: v for k, v in make_cloud_columns(seed=4).items() if k != "z"})
    empty = make_cloud({k: v[:0] for k, v in make_cloud_columns(seed=4).items()})
    oversized = make_cloud(make_cloud_columns(seed=4, count=25000))
    return good, [("truncated data", short), ("wrong point_step", wrong_step), ("missing z", no_z),
                  ("empty", empty), ("oversized", oversized)]


def test_malformed_clouds_are_logged_and_skipped(client, node_process):
    good, bad = malformed_clouds()
    client.wait_for_counter("skipped", 0)
    for description, message in bad:
        skipped = int(client.diagnostics["skipped"])
        before = len(client.outputs)
        client.publisher.publish(message)
        client.wait_for_counter("skipped", skipped + 1)
        # The next good cloud is answered, and it is the only answer: the bad one was skipped.
        output = client.send(good)
        assert len(client.outputs) == before + 1, f"{description}: the bad cloud produced output"
        assert output.width == good.width
    log = node_process.output()
    for needle in ("bytes, expected", "point_step", "no 'z' field", "empty", "max_points"):
        assert needle in log, f"node log does not mention {needle!r}:\n{log[-3000:]}"


def test_malformed_cloud_warnings_are_grouped_and_the_level_returns_to_ok(client, node_process):
    from diagnostic_msgs.msg import DiagnosticStatus

    good, bad = malformed_clouds()
    oversized = dict(bad)["oversized"]
    client.wait_for_counter("skipped", 0)
    skipped = int(client.diagnostics["skipped"])
    for _ in range(20):
        client.publisher.publish(oversized)
        client.executor.spin_once(timeout_sec=0.02)
    client.wait_for_counter("skipped", skipped + 20)
    spin_until(client.executor, lambda: client.diagnostic_status.level == DiagnosticStatus.WARN, 10,
               "a WARN level after skipped clouds")
    assert "skipped" in client.diagnostic_status.message
    log = node_process.output()
    assert log.count("more than max_points") <= 3, "malformed-cloud warnings are not throttled"
    # The window is 3 s: with no more bad clouds the level goes back to OK.
    spin_until(client.executor, lambda: client.diagnostic_status.level == DiagnosticStatus.OK, 15,
               "the level to return to OK")
    assert client.send(good).width == good.width


def test_out_of_range_points_are_unknown_and_the_rest_is_labelled(client, reference, node_process):
    from clip2scene_core.segmenter import UNKNOWN_LABEL
    from clip2scene_ros.conversions import cloud_to_array, make_cloud

    columns = make_cloud_columns(seed=8)
    columns["x"][0] = 1e30  # one finite outlier used to overflow the voxel grid and lose the cloud
    columns["y"][1] = -5e4
    output = cloud_to_array(client.send(make_cloud(columns)))
    assert (output["label"][:2] == UNKNOWN_LABEL).all() and (output["score"][:2] == 0).all()
    assert (output["label"][2:] != UNKNOWN_LABEL).all()
    assert "points lie beyond max_range=1000 m" in node_process.output()
    rest = {name: values[2:] for name, values in columns.items()}
    np.testing.assert_array_equal(output["label"][2:], labels_under(reference, FIRST_CLASSES, rest).labels)


def test_organised_clouds_keep_their_shape_and_nan_points(client):
    from clip2scene_core.segmenter import UNKNOWN_LABEL
    from clip2scene_ros.conversions import array_to_cloud, cloud_to_array, make_cloud_array

    columns = make_cloud_columns(seed=9, count=16 * 64)
    columns["x"][::7] = np.nan  # no return: organised drivers keep the slot as NaN
    message = array_to_cloud(make_cloud_array(columns).reshape(16, 64), frame_id="lidar")
    output = client.send(message)
    assert (output.height, output.width, output.is_dense) == (16, 64, False)
    decoded = cloud_to_array(output, flatten=False)
    missing = np.isnan(columns["x"]).reshape(16, 64)
    assert np.isnan(decoded["x"][missing]).all() and not np.isnan(decoded["x"][~missing]).any()
    assert (decoded["label"][missing] == UNKNOWN_LABEL).all()


def test_a_template_that_cannot_be_filled_is_rejected_before_encoding(client):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request(parameters=[Parameter(
        "prompt_templates", Parameter.Type.STRING_ARRAY, ["a photo of a {}.", "a {} {x}"]).to_parameter_msg()])
    future = client.set_parameters.call_async(request)
    spin_until(client.executor, future.done, 30, "the parameter service")
    result = future.result().results[0]
    assert not result.successful and "{x}" in result.reason


def test_duplicate_class_names_differing_in_case_or_spaces_are_rejected(client):
    result = client.set_class_names(["Car", "road", " car"])
    assert not result.successful and "duplicates" in result.reason


def test_non_finite_points_are_labelled_unknown(client):
    from clip2scene_core.segmenter import UNKNOWN_LABEL
    from clip2scene_ros.conversions import cloud_to_array, make_cloud

    columns = make_cloud_columns(seed=5)
    columns["x"][:10] = np.nan
    columns["z"][10:20] = np.inf
    output = cloud_to_array(client.send(make_cloud(columns)))
    assert output.shape == (3000,)
    assert (output["label"][:20] == UNKNOWN_LABEL).all()
    assert (output["label"][20:] != UNKNOWN_LABEL).all()


def test_node_without_checkpoint_exits_with_a_reason(ros_env):
    result = subprocess.run([sys.executable, "-m", "clip2scene_ros.segment_node"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert "checkpoint" in result.stderr


def test_node_with_an_unknown_sparse_backend_exits_with_a_reason(ros_env, tiny_checkpoint):
    result = subprocess.run([sys.executable, "-m", "clip2scene_ros.segment_node", "--ros-args",
                             "-p", f"checkpoint:={tiny_checkpoint}", "-p", "sparse_backend:=torchsparse"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert "'backend' must be one of" in result.stderr and "torchsparse" in result.stderr


def test_installed_executable_runs_with_the_params_file(ros_env, tiny_checkpoint, tmp_path, rclpy_context):
    """The console script + config/segment.yaml, exactly as launch/segment.launch.py starts them."""
    executable = ROOT / ".venv" / "bin" / "clip2scene_segment"
    if not executable.exists():
        executable = __import__("shutil").which("clip2scene_segment")
    assert executable, "clip2scene_segment is not installed"
    argv = [str(executable), "--ros-args", "-r", "__node:=clip2scene_segment",
            "--params-file", str(ROOT / "config" / "segment.yaml"), "-p", f"checkpoint:={tiny_checkpoint}",
            "-p", f"prompt_templates:={json.dumps(TEMPLATES)}", "-p", f"text_cache_dir:={tmp_path}",
            "-p", "reliability:=reliable", "-p", "sparse_backend:=pure", "-r", "~/input/pointcloud:=/launch_test/points",
            "-r", "~/output/pointcloud:=/launch_test/segmented"]
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from clip2scene_ros.conversions import make_cloud

    with RosProcess("installed_node", argv, tmp_path) as process:
        node = rclpy.create_node("launch_test_client", context=rclpy_context)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        publisher = node.create_publisher(PointCloud2, "/launch_test/points", qos)
        received = []
        node.create_subscription(PointCloud2, "/launch_test/segmented", received.append, qos)
        executor = SingleThreadedExecutor(context=rclpy_context)
        executor.add_node(node)
        try:
            spin_until(executor, lambda: publisher.get_subscription_count() > 0 or process.poll() is not None,
                       120, "the installed node")
            assert process.poll() is None, process.output()
            deadline = time.monotonic() + 60
            while not received and time.monotonic() < deadline:
                publisher.publish(make_cloud(make_cloud_columns(seed=6)))
                executor.spin_once(timeout_sec=0.5)
            assert received, process.output()
        finally:
            executor.shutdown()
            node.destroy_node()
        # The train classes of the checkpoint are used when the params file leaves class_names empty.
        assert received[0].width == 3000


def test_launch_file_starts_the_node_with_the_params_file(ros2_launch):
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    source = PythonLaunchDescriptionSource(str(ROOT / "launch" / "segment.launch.py"))
    description = source.get_launch_description(ros2_launch.LaunchContext())
    names = [entity.name for entity in description.entities if hasattr(entity, "name")]
    assert {"checkpoint", "device", "points", "segmented_points", "params_file"} <= set(names)


def test_intensities_of_0_to_255_are_scaled_once_automatically(client, node_process, reference):
    """Last in this module: the node keeps the scale it detected for the clouds after this one."""
    from clip2scene_ros.conversions import cloud_to_array, make_cloud

    columns = make_cloud_columns(seed=12)
    raw = dict(columns, intensity=np.round(columns["intensity"] * 255).astype(np.float32))
    output = cloud_to_array(client.send(make_cloud(raw)))
    expected = labels_under(reference, FIRST_CLASSES, dict(raw, intensity=raw["intensity"] / 255))
    np.testing.assert_array_equal(output["label"], expected.labels)
    np.testing.assert_array_equal(output["intensity"], raw["intensity"])  # published as sent
    client.send(make_cloud(raw))
    assert node_process.output().count("intensity_scale auto") == 1


def test_launch_file_keeps_the_earlier_topic_names(tmp_path, ros2_launch):
    import importlib.util

    from clip2scene_ros.topics import legacy_remappings

    spec = importlib.util.spec_from_file_location("segment_launch", ROOT / "launch" / "segment.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    params = tmp_path / "cameras.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"camera_names": ["front", "right"]}}}))
    assert module.camera_names(str(params)) == ["front", "right"]
    assert module.camera_names(str(ROOT / "config" / "segment.yaml")) == []
    remapped = dict(legacy_remappings("/velodyne_points", "segmented_points", ["front"]))
    assert remapped == {"~/input/pointcloud": "/velodyne_points", "~/output/pointcloud": "segmented_points",
                        "~/output/objects": "~/objects",
                        "~/output/class_names": "class_names", "~/debug/latency_ms": "segment_latency",
                        "~/input/front/image": "front/image", "~/input/front/camera_info": "front/camera_info"}
