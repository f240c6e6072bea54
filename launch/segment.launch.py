"""Start the clip2scene segmentation node with config/segment.yaml.

    ros2 launch clip2scene_ros segment.launch.py checkpoint:=/path/model.pt device:=cuda \
        points:=/lidar_top segmented_points:=/clip2scene/points namespace:=robot1

Every parameter's default lives in config/segment.yaml (keyed "/**", so it applies under any
namespace; params_file:= selects another file); the launch arguments below override the most common
ones and remap the topics. The node's own topic names are ~/input/pointcloud, ~/output/pointcloud,
~/output/class_names, ~/debug/latency_ms and ~/input/<camera>/{image,camera_info}
(clip2scene_ros/topics.py); this file remaps them to the names the node had before, in the node's
namespace: points (points:=), segmented_points (segmented_points:=), class_names, segment_latency and
<camera>/{image,camera_info} for the params file's camera_names. The node's process gets the package's Fast DDS profile
(config/fastdds.xml: large clouds over shared memory) unless FASTDDS_DEFAULT_PROFILES_FILE is set
already; dds_profile:= picks another file, dds_profile:=none leaves the environment alone.
"""
import os
from pathlib import Path

import yaml

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from clip2scene_ros.topics import legacy_remappings

PACKAGE = "clip2scene_ros"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(PACKAGE))
    arguments = [
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "segment.yaml"),
                              description="ROS parameter file for the node"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="clip2scene checkpoint (.pt); empty = the one in params_file"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("points", default_value="points", description="input PointCloud2 topic"),
        DeclareLaunchArgument("segmented_points", default_value="segmented_points",
                              description="output PointCloud2 topic"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("dds_profile",
                              default_value=os.environ.get(PROFILE_VARIABLE)
                              or str(share / "config" / "fastdds.xml"),
                              description="Fast DDS XML profile of the node's process; none = unset"),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=node_with_overrides)])


def node_with_overrides(context):
    """The node, with launch arguments that were given overriding the parameter file."""
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {"device": value("device")}
    if value("checkpoint"):
        overrides["checkpoint"] = value("checkpoint")
    profile = value("dds_profile")
    return [Node(
        package=PACKAGE,
        executable="clip2scene_segment",
        name="clip2scene_segment",
        namespace=value("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[value("params_file"), overrides],
        remappings=legacy_remappings(value("points"), value("segmented_points"),
                                     camera_names(value("params_file"))),
        additional_env={} if profile == "none" else {PROFILE_VARIABLE: profile},
    )]


def camera_names(params_file: str) -> list[str]:
    """The ``camera_names`` parameter a ROS parameter file sets (for any node name), or none."""
    content = yaml.safe_load(Path(params_file).read_text()) or {}
    for entry in content.values():
        names = ((entry or {}).get("ros__parameters") or {}).get("camera_names")
        if names:
            return [name for name in names if name]
    return []
