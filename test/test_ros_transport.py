"""Real ROS 2 processes on loopback: a large PointCloud2 crosses process boundaries intact."""
from __future__ import annotations

import sys

import numpy as np

from ros_harness import ROOT, RosProcess, spin_until

sys.path.insert(0, str(ROOT / "test" / "ros_scripts"))


def test_100k_point_cloud_arrives_intact_in_another_process(rclpy_context, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from clip2scene_ros.conversions import cloud_to_array, stamp_to_ns
    from publish_cloud import deterministic_cloud

    node = rclpy.create_node("cloud_receiver", context=rclpy_context)
    received = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(PointCloud2, "transport_test", received.append, qos)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    script = ROOT / "test" / "ros_scripts" / "publish_cloud.py"
    with RosProcess("publisher", [sys.executable, str(script), "transport_test", "100000", "7"],
                    tmp_path) as publisher:
        try:
            spin_until(executor, lambda: received or publisher.poll() is not None, 90,
                       "the 100k-point cloud")
        finally:
            executor.shutdown()
            node.destroy_node()
        assert received, f"nothing received; publisher said:\n{publisher.output()}"
    cloud = received[0]
    assert (cloud.width, cloud.height, cloud.header.frame_id) == (100_000, 1, "lidar")
    assert stamp_to_ns(cloud.header.stamp) == 123_456_789
    points = cloud_to_array(cloud)
    for name, expected in deterministic_cloud(100_000, 7).items():
        np.testing.assert_array_equal(points[name], expected, err_msg=name)
