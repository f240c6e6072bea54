"""A plain rclpy LiDAR stand-in: publish one large cloud COUNT times at RATE Hz once a subscriber matched.

Usage: stream_clouds.py TOPIC NUM_POINTS RATE COUNT sensor|reliable

``sensor`` is ``qos_profile_sensor_data`` (best effort, what LiDAR drivers use); ``reliable`` is the
default reliable QoS with depth 10. Each cloud has x, y, z, intensity float32 (point_step 16) and
its index as the stamp's seconds. Prints "published N" at the end, then stays 2 s so the last one
can be delivered.
"""
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2

from script_support import run, wait_for_subscriber

from clip2scene_ros.conversions import make_cloud


def lidar_like_cloud(num_points: int) -> dict:
    """Columns of a spinning-LiDAR-like scan (ground ring + clutter), intensities in [0, 1]."""
    rng = np.random.default_rng(3)
    angle = rng.uniform(0, 2 * np.pi, num_points)
    distance = rng.uniform(2, 60, num_points)
    return {"x": (distance * np.cos(angle)).astype(np.float32),
            "y": (distance * np.sin(angle)).astype(np.float32),
            "z": rng.normal(-1.5, 0.8, num_points).astype(np.float32),
            "intensity": rng.random(num_points, dtype=np.float32)}


def main() -> int:
    topic, num_points, rate, count, kind = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
        int(sys.argv[4]), sys.argv[5]
    rclpy.init()
    node = rclpy.create_node("lidar_stand_in")
    qos = qos_profile_sensor_data if kind == "sensor" else QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(PointCloud2, topic, qos)
    message = make_cloud(lidar_like_cloud(num_points), frame_id="lidar")
    if not wait_for_subscriber(node, publisher, 120):
        return 1
    print(f"matched; {len(message.data)} bytes per cloud", flush=True)
    start = time.monotonic()
    for index in range(count):
        message.header.stamp.sec = index + 1
        publisher.publish(message)
        wake = start + (index + 1) / rate
        while time.monotonic() < wake:
            rclpy.spin_once(node, timeout_sec=max(0.0, wake - time.monotonic()))
    print(f"published {count}", flush=True)
    end = time.monotonic() + 2
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    return 0


if __name__ == "__main__":
    run(main)
