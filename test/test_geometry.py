"""Rigid transforms, point -> pixel projection, z-buffer visibility and sweep registration."""
from __future__ import annotations

import numpy as np
import pytest

from clip2scene_core.frame import Camera, Frame, Sweep
from clip2scene_core.geometry import (
    invert_rigid,
    pose_matrix,
    project_frame,
    project_points_to_image,
    register_sweeps,
    transform_points,
)

K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])
IMAGE_SIZE = (80, 100)  # (H, W)
# LiDAR x forward, y left, z up -> camera x right, y down, z forward
LIDAR_TO_CAMERA = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def test_pose_matrix_rotates_by_quaternion_and_translates():
    half = np.pi / 4  # 90 degrees about z
    matrix = pose_matrix([1.0, 2.0, 3.0], [np.cos(half), 0.0, 0.0, np.sin(half)])
    moved = transform_points(np.array([[1.0, 0.0, 0.0]]), matrix)
    np.testing.assert_allclose(moved, [[1.0, 3.0, 3.0]], atol=1e-12)
    # Unnormalised quaternions (float32 records) still give a rotation.
    np.testing.assert_allclose(pose_matrix([0, 0, 0], [2.0, 0, 0, 0]), np.eye(4))
    with pytest.raises(ValueError, match="quaternion"):
        pose_matrix([0, 0, 0], [0, 0, 0, 0])


def test_invert_rigid_undoes_the_transform():
    matrix = pose_matrix([4.0, -1.0, 0.5], [0.9, 0.1, -0.3, 0.2])
    np.testing.assert_allclose(invert_rigid(matrix) @ matrix, np.eye(4), atol=1e-12)


def test_transform_points_keeps_dtype_and_validates_shapes():
    points = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    moved = transform_points(points, pose_matrix([10.0, 0.0, 0.0], [1, 0, 0, 0]))
    assert moved.dtype == np.float32
    np.testing.assert_allclose(moved, [[11.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        transform_points(np.zeros((2, 4)), np.eye(4))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        transform_points(np.zeros((2, 3)), np.eye(3))


def test_projection_hand_computed_pixels_depth_and_in_image_test():
    points = np.array(
        [
            [10.0, 0.0, 0.0],  # straight ahead -> principal point (50, 40), depth 10
            [2.0, 1.0, 0.4],  # u = 50 - 100 * 1 / 2 = 0 (left edge, kept), v = 40 - 100 * 0.4 / 2 = 20
            [2.0, -1.0, 0.0],  # u = 100 = W: outside
            [1.0, 0.0, 0.0],  # depth 1.0 is not > min_depth 1.0
            [-5.0, 0.0, 0.0],  # behind the camera
            [4.0, 0.0, -1.6],  # v = 40 + 100 * 1.6 / 4 = 80 = H: outside
            [4.0, 0.0, -1.59],  # v = 79.75: inside, last row
        ],
        dtype=np.float32,
    )
    hit = project_points_to_image(points, K, LIDAR_TO_CAMERA, IMAGE_SIZE)
    np.testing.assert_array_equal(hit.indices, [0, 1, 6])
    np.testing.assert_allclose(hit.pixels, [[50.0, 40.0], [0.0, 20.0], [50.0, 79.75]], atol=1e-4)
    np.testing.assert_allclose(hit.depth, [10.0, 2.0, 4.0])
    assert hit.indices.dtype == np.int64 and hit.pixels.dtype == np.float32 and hit.depth.dtype == np.float32
    rows, cols = hit.pixel_indices()
    np.testing.assert_array_equal(rows, [40, 20, 79])
    np.testing.assert_array_equal(cols, [50, 0, 50])
    # A larger min_depth drops the 2 m point.
    deeper = project_points_to_image(points, K, LIDAR_TO_CAMERA, IMAGE_SIZE, min_depth=3.0)
    assert deeper.indices.tolist() == [0, 6]


def test_zbuffer_occlusion_hides_points_behind_nearer_ones_beyond_tolerance():
    points = np.array(
        [
            [5.0, 0.0, 0.0],  # near, pixel (50, 40)
            [10.0, 0.0, 0.0],  # same pixel, 5 m behind: occluded
            [5.3, 0.0, 0.0],  # same pixel, 0.3 m behind: within tolerance
            [10.0, -0.1, 0.0],  # u = 51: the next pixel, same 4 px block, 5 m behind the near point
        ]
    )
    plain = project_points_to_image(points, K, LIDAR_TO_CAMERA, IMAGE_SIZE)
    assert plain.indices.tolist() == [0, 1, 2, 3]
    per_pixel = project_points_to_image(
        points, K, LIDAR_TO_CAMERA, IMAGE_SIZE, occlusion=True, occlusion_tolerance=0.5
    )
    assert per_pixel.indices.tolist() == [0, 2, 3]
    per_block = project_points_to_image(
        points, K, LIDAR_TO_CAMERA, IMAGE_SIZE, occlusion=True, occlusion_tolerance=0.5, occlusion_block=4
    )
    assert per_block.indices.tolist() == [0, 2]


def test_project_frame_uses_the_cameras_calibration():
    camera = Camera("front", np.zeros((80, 100, 3), np.uint8), K, LIDAR_TO_CAMERA)
    frame = Frame(points=np.array([[10.0, 0.0, 0.0], [-10.0, 0.0, 0.0]]), cameras=[camera])
    hit = project_frame(frame, 0)
    assert hit.indices.tolist() == [0]
    np.testing.assert_allclose(hit.pixels, [[50.0, 40.0]])
    with pytest.raises(ValueError, match="camera index 1"):
        project_frame(frame, 1)


def test_register_sweeps_maps_earlier_scans_into_the_keyframe_lidar_frame():
    lidar_to_ego = pose_matrix([1.0, 0.0, 2.0], [1, 0, 0, 0])
    half = np.pi / 4
    turn_left = [np.cos(half), 0.0, 0.0, np.sin(half)]  # ego heading +y in the world
    # Keyframe at t = 1 s: ego at world (10, 0) heading +y; one sweep 0.1 s earlier with the ego
    # 2 m behind at (10, -2), another 2 s earlier.
    frame = Frame(
        points=np.array([[0.0, 0.0, 0.0]]),
        timestamp=1_000_000_000,
        lidar_to_ego=lidar_to_ego,
        ego_to_world=pose_matrix([10.0, 0.0, 0.0], turn_left),
        sweeps=[
            Sweep(np.array([[3.0, 0.0, -2.0], [0.0, 1.0, 0.0]]), 900_000_000, lidar_to_ego,
                  pose_matrix([10.0, -2.0, 0.0], turn_left)),
            Sweep(np.array([[5.0, 5.0, 5.0]]), -1_000_000_000, lidar_to_ego, np.eye(4)),
        ],
    )
    points, source = register_sweeps(frame, num_sweeps=3, max_seconds=0.5)
    # Sweep point (3, 0, -2): ego (4, 0, 0) -> world (10, 2, 0) -> keyframe ego (2, 0, 0) -> LiDAR (1, 0, -2).
    # Sweep point (0, 1, 0): ego (1, 1, 2) -> world (9, -1, 2) -> keyframe ego (-1, 1, 2) -> LiDAR (-2, 1, 0).
    np.testing.assert_allclose(points, [[0, 0, 0], [1, 0, -2], [-2, 1, 0]], atol=1e-5)
    assert points.dtype == np.float32
    assert source.tolist() == [0, 1, 1]
    assert register_sweeps(frame, num_sweeps=1, max_seconds=10.0)[1].tolist() == [0]
    assert register_sweeps(frame, num_sweeps=5, max_seconds=10.0)[1].tolist() == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="num_sweeps"):
        register_sweeps(frame, num_sweeps=0, max_seconds=1.0)
