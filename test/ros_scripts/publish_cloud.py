"""Publish one deterministic PointCloud2 (reliable QoS) once a subscriber has matched, then exit.

Usage: publish_cloud.py TOPIC NUM_POINTS SEED
"""
import sys

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from script_support import run, wait_for_subscriber

from clip2scene_ros.conversions import make_cloud


def deterministic_cloud(num_points: int, seed: int) -> dict:
    """Columns of the test cloud; the receiving test rebuilds them from the same seed."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(0, 20, num_points).astype(np.float32),
        "y": rng.normal(0, 20, num_points).astype(np.float32),
        "z": rng.normal(0, 2, num_points).astype(np.float32),
        "intensity": rng.random(num_points, dtype=np.float32),
        "ring": rng.integers(0, 32, num_points).astype(np.uint16),
    }


def main() -> int:
    topic, num_points, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rclpy.init()
    node = rclpy.create_node("cloud_publisher")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    publisher = node.create_publisher(__import__("sensor_msgs.msg").msg.PointCloud2, topic, qos)
    if not wait_for_subscriber(node, publisher, 60):
        return 1
    publisher.publish(make_cloud(deterministic_cloud(num_points, seed), stamp_ns=123_456_789,
                                 frame_id="lidar"))
    print("published", flush=True)
    # Stay until the subscriber has it (reliable delivery needs the writer alive); the test stops us.
    while rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.1)
    return 0


if __name__ == "__main__":
    run(main)
