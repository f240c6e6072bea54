"""Rigid transforms, LiDAR point -> camera pixel projection, visibility, sweep registration.

Conventions (see ``frame.py``): poses are 4x4 float64 ``a_to_b`` matrices; camera axes are OpenCV's
(x right, y down, z forward). Pixel coordinates are ``(u, v)`` = (column, row) as given by ``K @ p / z``
with pixel ``(row, col)`` covering ``[col, col + 1) x [row, row + 1)``, i.e. its centre at ``+0.5``;
``floor(u), floor(v)`` index the image. Loaders pass each dataset's calibrated ``K`` unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .frame import Frame


def pose_matrix(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    """Build a 4x4 float64 rigid transform from a translation (metres) and a unit quaternion.

    ``rotation_wxyz``: (4,) quaternion in (w, x, y, z) order, as nuScenes stores it; it is normalised
    here so float32-rounded records still give a proper rotation.
    """
    q = np.asarray(rotation_wxyz, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    if q.shape != (4,) or t.shape != (3,):
        raise ValueError(f"expected translation (3,) and quaternion (4,), got {t.shape} and {q.shape}")
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"quaternion {q.tolist()} is not a rotation")
    w, x, y, z = q / norm
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    matrix[:3, 3] = t
    return matrix


def invert_rigid(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform ``[R t; 0 1]`` -> ``[R^T -R^T t; 0 1]`` (float64)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got {matrix.shape}")
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous transform to points.

    points: (N, 3) metres; matrix: (4, 4). Computed in float64; returns (N, 3) in ``points``' dtype.
    """
    points = np.asarray(points)
    matrix = np.asarray(matrix, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    if matrix.shape != (4, 4):
        raise ValueError(f"matrix must have shape (4, 4), got {matrix.shape}")
    out = points.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    return out.astype(points.dtype, copy=False)


@dataclass
class PointProjection:
    """Points that land in an image.

    indices: (M,) int64 into the projected point array; pixels: (M, 2) float32 (u = column, v = row,
    pixel centres at +0.5); depth: (M,) float32 metres along the camera's optical axis.
    """

    indices: np.ndarray
    pixels: np.ndarray
    depth: np.ndarray

    def __len__(self) -> int:
        return int(len(self.indices))

    def pixel_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer (rows, cols), each (M,) int64, of the pixels the points fall in."""
        return (
            np.floor(self.pixels[:, 1]).astype(np.int64),
            np.floor(self.pixels[:, 0]).astype(np.int64),
        )


def zbuffer_visible(
    pixels: np.ndarray,
    depth: np.ndarray,
    image_size: tuple[int, int],
    tolerance: float,
    block: int = 1,
) -> np.ndarray:
    """Z-buffer visibility test: the nearest point per pixel block wins.

    pixels: (M, 2) float (u, v) inside the image; depth: (M,) metres; image_size: (H, W);
    tolerance: metres a point may lie behind its block's nearest point and still count as visible;
    block: side of the square pixel blocks, pixels (LiDAR is sparse, so blocks > 1 let a near
    surface hide the points seen through its gaps). Returns (M,) bool, True = visible.
    """
    if block < 1:
        raise ValueError(f"occlusion block must be >= 1 pixel, got {block}")
    height, width = image_size
    cols = np.floor(pixels[:, 0]).astype(np.int64) // block
    rows = np.floor(pixels[:, 1]).astype(np.int64) // block
    blocks_per_row = (width + block - 1) // block
    key = rows * blocks_per_row + cols
    nearest = np.full(((height + block - 1) // block) * blocks_per_row, np.inf)
    np.minimum.at(nearest, key, depth.astype(np.float64))
    return depth <= nearest[key] + tolerance


def pinhole_pixels(camera_points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N, 2) float64 ``(u, v)`` of camera-frame points (N, 3) in front of the
    camera (z > 0), through the (3, 3) pinhole intrinsics ``K``."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {K.shape}")
    uvw = np.asarray(camera_points, dtype=np.float64) @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def project_points_to_image(
    points: np.ndarray,
    K: np.ndarray,
    lidar_to_camera: np.ndarray,
    image_size: tuple[int, int],
    min_depth: float = 1.0,
    occlusion: bool = False,
    occlusion_tolerance: float = 0.5,
    occlusion_block: int = 1,
) -> PointProjection:
    """Project LiDAR points into a pinhole image, keeping those in front of the camera and in view.

    points: (N, 3) metres, LiDAR frame; K: (3, 3) intrinsics, pixels; lidar_to_camera: (4, 4) full
    LiDAR -> camera chain; image_size: (H, W) pixels. A point is kept when its depth > ``min_depth``
    (metres) and ``0 <= u < W``, ``0 <= v < H``. With ``occlusion`` a z-buffer over
    ``occlusion_block``-pixel blocks drops points more than ``occlusion_tolerance`` metres behind the
    nearest point of their block (see :func:`zbuffer_visible`).
    """
    height, width = (int(s) for s in image_size)
    camera_points = transform_points(np.asarray(points, dtype=np.float64), lidar_to_camera)
    depth = camera_points[:, 2]
    in_front = np.flatnonzero(depth > min_depth)
    uv = pinhole_pixels(camera_points[in_front], K)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    indices = in_front[inside]
    pixels = uv[inside].astype(np.float32)
    # Float32 rounding can push u just below W; keep the in-image promise after the cast.
    np.clip(pixels[:, 0], 0, np.nextafter(np.float32(width), np.float32(0)), out=pixels[:, 0])
    np.clip(pixels[:, 1], 0, np.nextafter(np.float32(height), np.float32(0)), out=pixels[:, 1])
    kept_depth = depth[indices].astype(np.float32)
    if occlusion and len(indices):
        visible = zbuffer_visible(pixels, kept_depth, (height, width), occlusion_tolerance, occlusion_block)
        indices, pixels, kept_depth = indices[visible], pixels[visible], kept_depth[visible]
    return PointProjection(indices=indices.astype(np.int64), pixels=pixels, depth=kept_depth)


def project_frame(frame: Frame, camera_index: int, **options) -> PointProjection:
    """Project ``frame.points`` into ``frame.cameras[camera_index]``.

    ``options`` are passed to :func:`project_points_to_image` (min_depth, occlusion, ...).
    """
    if not 0 <= camera_index < len(frame.cameras):
        raise ValueError(f"camera index {camera_index} out of range: frame has {len(frame.cameras)} cameras")
    camera = frame.cameras[camera_index]
    return project_points_to_image(
        frame.points, camera.K, camera.lidar_to_camera, (camera.height, camera.width), **options
    )


def register_sweeps(frame: Frame, num_sweeps: int, max_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Stitch the keyframe and its earlier sweeps into the keyframe's LiDAR frame.

    Each sweep goes LiDAR(t_k) -> ego(t_k) -> world -> ego(t_0) -> LiDAR(t_0). ``num_sweeps`` counts
    the keyframe (1 = keyframe only, 3 = keyframe + 2 earlier, the paper's K); sweeps older than
    ``max_seconds`` before the keyframe are skipped. Returns points (N', 3) float32, metres, keyframe
    LiDAR frame, keyframe points first; and source (N',) int64: 0 = keyframe, k = k-th earlier sweep
    (``frame.sweeps[k - 1]``, newest first).
    """
    if num_sweeps < 1:
        raise ValueError(f"num_sweeps counts the keyframe and must be >= 1, got {num_sweeps}")
    world_to_keyframe = invert_rigid(frame.lidar_to_world)
    chunks = [frame.points]
    sources = [np.zeros(frame.num_points, dtype=np.int64)]
    max_ns = max_seconds * 1e9
    for k, sweep in enumerate(frame.sweeps[: num_sweeps - 1], start=1):
        if frame.timestamp - sweep.timestamp > max_ns:
            break  # sweeps are newest first, so every later one is older still
        sweep_to_keyframe = world_to_keyframe @ sweep.ego_to_world @ sweep.lidar_to_ego
        chunks.append(transform_points(sweep.points, sweep_to_keyframe))
        sources.append(np.full(len(sweep.points), k, dtype=np.int64))
    return np.concatenate(chunks).astype(np.float32, copy=False), np.concatenate(sources)
