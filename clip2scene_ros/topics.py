"""The node's topic names, and the remappings that keep the names it used before.

The node names its topics the way current ROS 2 perception packages do (e.g. Autoware's LiDAR
segmentation nodes): private to the node, grouped by direction, each remappable on its own:

==============================  =============================  ======================
topic                           type                           before (still given by
                                                               ``launch/segment.launch.py``)
==============================  =============================  ======================
``~/input/pointcloud``          sensor_msgs/PointCloud2        ``points``
``~/input/<camera>/image``      sensor_msgs/Image              ``<camera>/image``
``~/input/<camera>/camera_info`` sensor_msgs/CameraInfo        ``<camera>/camera_info``
``~/output/pointcloud``         sensor_msgs/PointCloud2        ``segmented_points``
``~/output/objects``            visualization_msgs/MarkerArray ``~/objects``
``~/output/class_names``        std_msgs/String (latched)      ``class_names``
``~/debug/latency_ms``          std_msgs/Float64               ``segment_latency``
==============================  =============================  ======================

(``/diagnostics`` stays global, as every ROS node publishes it.) `legacy_remappings` maps the new
names onto the old ones (relative, so in the node's namespace); the launch file applies them by
default, and the bag replay (:mod:`clip2scene_ros.replay`) starts the node with them.
"""
from __future__ import annotations

from typing import Sequence

INPUT_POINTCLOUD = "~/input/pointcloud"
OUTPUT_POINTCLOUD = "~/output/pointcloud"
OUTPUT_OBJECTS = "~/output/objects"
OUTPUT_CLASS_NAMES = "~/output/class_names"
DEBUG_LATENCY = "~/debug/latency_ms"


def camera_image(camera: str) -> str:
    """The node's input topic for ``camera``'s images."""
    return f"~/input/{camera}/image"


def camera_info(camera: str) -> str:
    """The node's input topic for ``camera``'s intrinsics."""
    return f"~/input/{camera}/camera_info"


def legacy_remappings(points: str = "points", segmented_points: str = "segmented_points",
                      camera_names: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(node topic, topic) pairs that give the node its earlier topic names (``points`` and
    ``segmented_points`` replaced by the given ones), for ``camera_names``' cameras too."""
    remappings = [(INPUT_POINTCLOUD, points), (OUTPUT_POINTCLOUD, segmented_points),
                  (OUTPUT_OBJECTS, "~/objects"), (OUTPUT_CLASS_NAMES, "class_names"),
                  (DEBUG_LATENCY, "segment_latency")]
    for camera in camera_names:
        remappings += [(camera_image(camera), f"{camera}/image"), (camera_info(camera), f"{camera}/camera_info")]
    return remappings


def remap_arguments(remappings: Sequence[tuple[str, str]]) -> list[str]:
    """``--ros-args`` arguments (``-r from:=to`` each) for ``remappings``."""
    return [argument for source, target in remappings for argument in ("-r", f"{source}:={target}")]
