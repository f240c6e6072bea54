"""Camera extrinsics files: the one YAML layout the node, the exporter and the evaluator share."""
from __future__ import annotations

import numpy as np
import pytest

from clip2scene_core.calibration import calibration_of, read_calibration, write_calibration
from clip2scene_core.frame import Camera


def test_written_calibration_reads_back(tmp_path):
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.2, 1.5]
    cameras = [Camera("front", np.zeros((4, 4, 3), np.uint8), np.eye(3), pose),
               Camera("back", np.zeros((4, 4, 3), np.uint8), np.eye(3), np.eye(4))]
    path = write_calibration(tmp_path / "sub" / "calibration.yaml", calibration_of(cameras))
    extrinsics = read_calibration(path, ["front", "back"])
    np.testing.assert_array_equal(extrinsics["front"], pose)
    np.testing.assert_array_equal(extrinsics["back"], np.eye(4))


@pytest.mark.parametrize("content, message", [
    ("front: {lidar_to_camera: [[1, 0], [0, 1]]}", "front.lidar_to_camera must be a finite 4x4"),
    ("back: {lidar_to_camera: []}", "no lidar_to_camera for camera 'front'"),
    ("front: [1, 2", "not valid YAML"),
])
def test_bad_calibrations_name_the_file_and_camera(tmp_path, content, message):
    path = tmp_path / "calibration.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_calibration(path, ["front"])


def test_missing_or_empty_calibration_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml does not exist"):
        read_calibration(tmp_path / "nowhere.yaml", ["front"])
    with pytest.raises(ValueError, match="calibration_file is empty"):
        read_calibration("", ["front"])
