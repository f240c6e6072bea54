"""Camera extrinsics files: ``{camera: {lidar_to_camera: 4x4}}`` as YAML.

The ROS node's ``calibration_file`` parameter reads this layout, the bag exporter writes it next to
each bag, and the offline bag evaluator reads it back, so the three agree on one format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import yaml

from .frame import Camera


def calibration_of(cameras: Sequence[Camera]) -> dict[str, dict[str, list[list[float]]]]:
    """``{camera: {lidar_to_camera: 4x4 nested list}}`` of ``cameras`` (the file's layout)."""
    return {camera.name: {"lidar_to_camera": np.asarray(camera.lidar_to_camera, float).tolist()}
            for camera in cameras}


def write_calibration(path: Union[str, Path], calibration: dict) -> Path:
    """Write a calibration from :func:`calibration_of` to ``path`` (parent folders made); returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(calibration, sort_keys=False), encoding="utf-8")
    return path


def read_calibration(path: Union[str, Path], cameras: Sequence[str]) -> dict[str, np.ndarray]:
    """``{camera: (4, 4) float64 lidar_to_camera}`` for every camera in ``cameras``.

    Raises FileNotFoundError naming a missing file and ValueError naming the camera whose entry is
    missing or not a finite 4x4 matrix.
    """
    if not str(path):
        raise ValueError("no calibration file given (calibration_file is empty)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"calibration file {path} is not valid YAML: {error}") from error
    extrinsics = {}
    for name in cameras:
        try:
            matrix = np.asarray(data[name]["lidar_to_camera"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"calibration file {path} has no lidar_to_camera for camera {name!r}") from error
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ValueError(f"calibration file {path}: {name}.lidar_to_camera must be a finite 4x4 matrix")
        extrinsics[name] = matrix
    return extrinsics
