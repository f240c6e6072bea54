"""The node from the installed ROS layout, driven by the upstream `ros2` tools as a user would.

`ros2 launch clip2scene_ros segment.launch.py` and `ros2 run clip2scene_ros clip2scene_segment` from
the venv of tools/bootstrap.sh (which links the ament index marker, share/clip2scene_ros and
lib/clip2scene_ros into it, and installs the upstream launch / ros2cli wheels from
../shared/ros2-tools), with a namespace, `ros2 param get/set`, a labelled cloud read back and
decoded independently of the project's conversions, and Ctrl-C.
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from node_client import NodeClient, make_cloud_columns
from ros_harness import ROOT, RosProcess, spin_until

TEMPLATES = ["a photo of a {}."]
ROS2 = Path(sys.executable).with_name("ros2")


@pytest.fixture(scope="module")
def ros2(ros_env) -> Path:
    """The upstream ros2 command, and the package installed where `ros2` looks for it."""
    if not ROS2.exists():
        pytest.skip("the upstream ros2 CLI / launch are not installed in this venv: tools/bootstrap.sh "
                    "installs them from ../shared/ros2-tools when that folder exists (a ROS 2 "
                    "distribution provides them otherwise)")
    from ament_index_python.packages import get_package_prefix

    prefix = Path(get_package_prefix("clip2scene_ros"))
    for part in ("share/clip2scene_ros/package.xml", "share/clip2scene_ros/launch/segment.launch.py",
                 "share/clip2scene_ros/config/segment.yaml", "share/clip2scene_ros/config/fastdds.xml",
                 "lib/clip2scene_ros/clip2scene_segment"):
        assert (prefix / part).exists(), f"{prefix / part} is missing: run tools/bootstrap.sh"
    return ROS2


def ros2_until(ros2: Path, args: list[str], expect: str, timeout: float = 60.0) -> str:
    """Run `ros2 ARGS --no-daemon`-style until its output contains ``expect`` (discovery takes a while)."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run([str(ros2), *args], capture_output=True, text=True, timeout=60)
        said = result.stdout + result.stderr  # `ros2 param set` reports a refusal on stderr
        if expect in said:
            return said
        if time.monotonic() > deadline:
            raise AssertionError(f"ros2 {' '.join(args)} never said {expect!r}:\n{said}")
        time.sleep(0.5)


def read_points(cloud) -> dict[str, np.ndarray]:
    """Decode a PointCloud2 from its PointField list with `struct`, like sensor_msgs_py.read_points.

    (sensor_msgs_py is not among the Kilted wheels nor ../shared/ros2-tools, so this test carries an
    independent decoder instead of the project's own conversions.)
    """
    codes = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
    order = ">" if cloud.is_bigendian else "<"
    data = bytes(cloud.data)
    columns: dict[str, list] = {field.name: [] for field in cloud.fields}
    for row in range(cloud.height):
        for column in range(cloud.width):
            base = row * cloud.row_step + column * cloud.point_step
            for field in cloud.fields:
                columns[field.name].append(struct.unpack_from(order + codes[field.datatype], data,
                                                              base + field.offset)[0])
    return {name: np.array(values) for name, values in columns.items()}


def check_labelled_cloud(client: NodeClient, classes: list[str]) -> None:
    """Publish a cloud into the node and check the labelled one it sends back."""
    from sensor_msgs.msg import PointField

    from clip2scene_ros.conversions import make_cloud

    spin_until(client.executor, lambda: client.announcements and client.announcements[-1]["classes"] == classes,
               60, f"the node to announce {classes}")
    columns = make_cloud_columns(seed=21, count=500)
    output = client.send(make_cloud(columns, frame_id="lidar"))
    assert {f.name: f.datatype for f in output.fields}["label"] == PointField.UINT32
    decoded = read_points(output)
    np.testing.assert_array_equal(decoded["x"], columns["x"])
    assert decoded["label"].max() < len(classes)


def stop_process_group(process: RosProcess, within: float) -> float:
    """SIGINT the process group (as Ctrl-C does); return how long it took to exit."""
    started = time.monotonic()
    os.killpg(process.process.pid, signal.SIGINT)
    process.wait(timeout=within + 10)
    return time.monotonic() - started


def assert_clean_exit(process: RosProcess, elapsed: float, within: float) -> None:
    log = process.output()
    assert process.process.returncode == 0, log[-3000:]
    assert elapsed < within, f"took {elapsed:.1f} s to stop:\n{log[-3000:]}"
    bad = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line or "RCLError" in line]
    assert not bad, "\n".join(bad)
    assert "it/s]" not in log, "a progress bar wrote into the node's log"


def test_ros2_launch_with_a_namespace_param_set_and_a_labelled_cloud(ros2, tiny_checkpoint, tmp_path,
                                                                     rclpy_context):
    params = yaml.safe_load((ROOT / "config" / "segment.yaml").read_text())
    params["/**"]["ros__parameters"].update({
        "prompt_templates": TEMPLATES, "max_points": 123456, "text_cache_dir": str(tmp_path / "text"),
        # ROS's per-topic QoS overrides (qos_overriding_options), here the input's reliability.
        "qos_overrides./robot1/points.subscription.reliability": "reliable"})
    params_file = tmp_path / "robot1.yaml"
    params_file.write_text(yaml.safe_dump(params))
    argv = [str(ros2), "launch", "clip2scene_ros", "segment.launch.py", f"checkpoint:={tiny_checkpoint}",
            "device:=cpu", "namespace:=robot1", f"params_file:={params_file}"]
    with RosProcess("ros2_launch", argv, tmp_path) as launch:
        node = "/robot1/clip2scene_segment"
        # The namespaced node reads the "/**" params file.
        ros2_until(ros2, ["param", "get", "--no-daemon", node, "max_points"], "123456")
        ros2_until(ros2, ["param", "get", "--no-daemon", node, "prompt_templates"], "a photo of a {}.")
        said = ros2_until(ros2, ["param", "set", "--no-daemon", node, "class_names",
                                 "['Car', 'car']"], "failed")
        assert "duplicates" in said
        ros2_until(ros2, ["param", "set", "--no-daemon", node, "class_names", "['car', 'road', 'tree']"],
                   "successful")
        client = NodeClient(rclpy_context, namespace="/robot1", launched=True)  # the earlier names
        try:
            client.wait_until_connected(launch)
            from rclpy.qos import ReliabilityPolicy

            reliabilities = [e.qos_profile.reliability
                             for e in node_endpoints(client.node.get_subscriptions_info_by_topic, "/robot1/points")]
            assert reliabilities == [ReliabilityPolicy.RELIABLE], "qos_overrides did not reach the subscription"
            check_labelled_cloud(client, ["car", "road", "tree"])
            # The objects topic gets the private name ~/objects from the launch file.
            assert node_endpoints(client.node.get_publishers_info_by_topic, f"{node}/objects")
        finally:
            client.close()
        assert_clean_exit(launch, stop_process_group(launch, 2.0), 2.0)
        assert "ready on cpu" in launch.output() and "fastdds.xml" in launch.output()


def node_endpoints(by_topic, topic: str, node_name: str = "clip2scene_segment", timeout: float = 10.0) -> list:
    """The node's endpoints on ``topic`` from ``by_topic`` (a graph query), polled: the graph cache
    can lag behind matching."""
    deadline, endpoints = time.monotonic() + timeout, []
    while not endpoints and time.monotonic() < deadline:
        endpoints = [e for e in by_topic(topic) if e.node_name == node_name]
        time.sleep(0.1)
    return endpoints


def test_ros2_run_then_ctrl_c_mid_inference(ros2, tiny_checkpoint, tmp_path, rclpy_context):
    from clip2scene_ros.conversions import make_cloud

    argv = [str(ros2), "run", "clip2scene_ros", "clip2scene_segment", "--ros-args", "-r", "__ns:=/robot2",
            "-p", f"checkpoint:={tiny_checkpoint}", "-p", "device:=cpu",
            "-p", f"prompt_templates:={TEMPLATES}", "-p", f"text_cache_dir:={tmp_path / 'text'}",
            "-p", "class_names:=['car', 'road']"]
    env_profile = os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)  # the node applies its own
    try:
        run = RosProcess("ros2_run", argv, tmp_path)
    finally:
        if env_profile is not None:
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = env_profile
    with run:
        client = NodeClient(rclpy_context, namespace="/robot2")
        try:
            client.wait_until_connected(run)
            check_labelled_cloud(client, ["car", "road"])
            big = make_cloud(make_cloud_columns(seed=22, count=120_000))
            received = int(client.diagnostics.get("received", 0))
            client.publisher.publish(big)
            client.wait_for_counter("received", received + 1)
            time.sleep(0.3)  # well inside the network's forward pass on this cloud
        finally:
            client.close()
        assert_clean_exit(run, stop_process_group(run, 2.0), 2.0)
        assert "shipped" in run.output(), "the node did not apply its Fast DDS profile"
