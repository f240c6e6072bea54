"""The node's parameters: defaults (``config/segment.yaml``), descriptors, and checks of their values.

``config/segment.yaml`` is the single source of the defaults; the descriptors here add types, ranges
and read-only flags, and the checks give each bad value one line naming the parameter.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from clip2scene_ros.package_files import package_file

#: Parameters `ros2 param set` may change while the node runs.
DYNAMIC_PARAMETERS = ("class_names", "prompt_templates", "thing_classes", "score_threshold", "max_points")
#: The key of config/segment.yaml: every node name in every namespace.
PARAMS_FILE_KEY = "/**"


def default_parameters() -> dict[str, Any]:
    """The node's parameter defaults from ``config/segment.yaml`` (installed share/ or the checkout)."""
    path = package_file("config", "segment.yaml")
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)[PARAMS_FILE_KEY]["ros__parameters"]


def non_empty(values: Sequence[str]) -> list[str]:
    """ROS parameter files cannot hold an empty list, so ``[""]`` stands for "none"."""
    return [value for value in values if value.strip()]


def descriptor(description: str, read_only: bool = False, float_range=None, int_range=None,
               constraints: str = "") -> ParameterDescriptor:
    """A ParameterDescriptor; rclpy enforces ``float_range`` / ``int_range`` on every set."""
    result = ParameterDescriptor(description=description, read_only=read_only,
                                 additional_constraints=constraints)
    if float_range:
        result.floating_point_range = [FloatingPointRange(from_value=float_range[0],
                                                          to_value=float_range[1], step=0.0)]
    if int_range:
        result.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return result


DESCRIPTORS = {
    "checkpoint": descriptor("clip2scene checkpoint file (.pt)", read_only=True),
    "device": descriptor("auto | cpu | cuda | cuda:N", read_only=True,
                         constraints="a device that exists on this machine"),
    "sparse_backend": descriptor("'' (the checkpoint's) | pure | spconv | minkowski", read_only=True),
    "class_names": descriptor("open-vocabulary class list ([''] = the checkpoint's classes)",
                              constraints="1..1024 names, no duplicates ignoring case and spaces"),
    "thing_classes": descriptor("classes whose points are grouped into objects ([''] = the vocabulary's)",
                                constraints="names of the class list, no repeats"),
    "prompt_templates": descriptor("prompt templates with one '{}' ([''] = 85-template ensemble)",
                                   constraints="each must format with a class name"),
    "voxel_size": descriptor("voxel size, m (0 = the checkpoint's)", read_only=True,
                             float_range=(0.0, 10.0)),
    "max_range": descriptor("points farther than this (m) are labelled unknown", read_only=True,
                            float_range=(0.1, 1.0e5)),
    "intensity_scale": descriptor("'auto' | a number the raw intensity is divided by", read_only=True,
                                  constraints="'auto' or a number > 0"),
    "score_threshold": descriptor("cosine score under which a point is unknown (65535)",
                                  float_range=(-1.0, 1.0)),
    "text_cache_dir": descriptor("text-embedding cache folder ('' = default)", read_only=True),
    "reliability": descriptor("input QoS reliability: best_effort | reliable", read_only=True),
    "depth": descriptor("input QoS history depth", read_only=True, int_range=(1, 100)),
    "input_timeout": descriptor("warn when a publisher is matched but no cloud came for this long, s",
                                read_only=True, float_range=(0.1, 3600.0)),
    "max_points": descriptor("clouds with more points are logged and skipped", int_range=(1, 10_000_000)),
    "use_cameras": descriptor("pair clouds with camera images for the 2D-3D ensemble", read_only=True),
    "camera_names": descriptor("camera names; topics ~/input/<name>/image and ~/input/<name>/camera_info",
                                 read_only=True),
    "calibration_file": descriptor("YAML {camera: {lidar_to_camera: 4x4}}", read_only=True),
    "image_teacher": descriptor("'' (MaskCLIP) | recorded-teacher file (.npz) of a synthetic drive",
                                read_only=True),
    "sync_tolerance": descriptor("max |cloud - image| stamp difference, s", read_only=True,
                                 float_range=(0.0, 10.0)),
    "sync_timeout": descriptor("how long a cloud waits for late cameras, s", read_only=True,
                               float_range=(0.0, 10.0)),
    "diagnostics_period": descriptor("period of /diagnostics, s", read_only=True,
                                     float_range=(0.05, 60.0)),
    "diagnostics_window": descriptor("how far back /diagnostics levels look, s", read_only=True,
                                     float_range=(0.1, 3600.0)),
}


def parse_intensity_scale(value: str) -> float:
    """``intensity_scale``: 0.0 for ``auto``, else the positive number; ValueError otherwise."""
    text = str(value).strip()
    if text.lower() == "auto":
        return 0.0
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"parameter intensity_scale must be 'auto' or a number > 0, got {value!r}")
    return scale


def check_reliability(value: str) -> str:
    """``reliability`` must be best_effort or reliable."""
    if value not in ("best_effort", "reliable"):
        raise ValueError(f"parameter reliability must be best_effort or reliable, got {value!r}")
    return value
