"""The one data model every part of clip2scene speaks: `Frame`, `Camera`, `Sweep`.

Conventions (all loaders, the synthetic world, training, inference and the ROS node follow them):

* Coordinates are metres. ``points`` are in the LiDAR frame of *their own* scan.
* Poses are 4x4 float64 homogeneous matrices named ``a_to_b`` (they map a point in frame *a* to *b*).
* Timestamps are integer nanoseconds.
* ``labels`` live in the dataset's *evaluation* label space: 0 = ignore, ``1..C`` = classes, and
  ``class_names[c - 1]`` names label ``c``. A prediction index ``k`` over the same class list therefore
  corresponds to label ``k + 1``.
* ``instances`` (optional, like ``labels``) are per-point object ids, (N,) uint32: 0 = no instance
  (stuff classes, ignored points); the points of one *thing* object (a car, a pedestrian, ...) share
  one id, and ids are unique within a scene (one cloud for the real datasets; the synthetic world's
  are unique within its street and the same in all of its frames). ``None`` = no instance ground truth.
* ``intensity`` is scaled to [0, 1] by the loader (nuScenes' 0..255 divided by 255; SemanticKITTI's
  remission is already 0..1), so one network input convention serves every sensor.
* Images are ``(H, W, 3)`` uint8 RGB; per-pixel label maps are ``(H, W)`` int64 in the same label space.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


def _check_matrix(name: str, value: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def _check_points(name: str, points: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(points, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {array.shape}")
    return array


def _check_per_point(name: str, value: Optional[np.ndarray], count: int, dtype, width: int = 0):
    if value is None:
        return None
    array = np.ascontiguousarray(value, dtype=dtype)
    expected = (count, width) if width else (count,)
    if array.shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    return array


def _check_instances(name: str, value: Optional[np.ndarray], count: int) -> Optional[np.ndarray]:
    """Per-point instance ids as (N,) uint32; a cast alone would wrap negative or fractional ids."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integer ids, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > np.iinfo(np.uint32).max):
        raise ValueError(f"{name} must lie in 0..{np.iinfo(np.uint32).max} (0 = no instance), found "
                         f"{int(array.min())}..{int(array.max())}")
    return _check_per_point(name, array, count, np.uint32)


@dataclass
class Camera:
    """One pinhole camera image taken near the LiDAR keyframe.

    ``lidar_to_camera`` is the *full* chain for this image (for nuScenes: LiDAR -> ego at LiDAR time ->
    world -> ego at camera time -> camera), so projecting a keyframe point needs nothing else.
    Camera axes follow the OpenCV convention: x right, y down, z forward.
    """

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    K: np.ndarray  # (3, 3) intrinsics, pixels
    lidar_to_camera: np.ndarray  # (4, 4)
    timestamp: int = 0  # ns
    labels: Optional[np.ndarray] = None  # (H, W) int64 true per-pixel labels (synthetic world only)
    teacher_labels: Optional[np.ndarray] = None  # (H, W) int64 simulated-teacher class map (synthetic)

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"camera {self.name!r}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )
        self.image = image
        self.K = _check_matrix(f"camera {self.name!r} K", self.K, (3, 3))
        self.lidar_to_camera = _check_matrix(
            f"camera {self.name!r} lidar_to_camera", self.lidar_to_camera, (4, 4)
        )
        for attr in ("labels", "teacher_labels"):
            value = getattr(self, attr)
            if value is not None:
                value = np.asarray(value, dtype=np.int64)
                if value.shape != image.shape[:2]:
                    raise ValueError(
                        f"camera {self.name!r}: {attr} must be {image.shape[:2]}, got {value.shape}"
                    )
                setattr(self, attr, value)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Sweep:
    """An earlier LiDAR scan with its pose, used by the spatial-temporal consistency loss."""

    points: np.ndarray  # (M, 3) float32, LiDAR frame of this sweep
    timestamp: int  # ns
    lidar_to_ego: np.ndarray  # (4, 4)
    ego_to_world: np.ndarray  # (4, 4)
    intensity: Optional[np.ndarray] = None  # (M,) float32
    labels: Optional[np.ndarray] = None  # (M,) int64
    instances: Optional[np.ndarray] = None  # (M,) uint32, 0 = no instance

    def __post_init__(self) -> None:
        self.points = _check_points("sweep points", self.points)
        n = len(self.points)
        self.lidar_to_ego = _check_matrix("sweep lidar_to_ego", self.lidar_to_ego, (4, 4))
        self.ego_to_world = _check_matrix("sweep ego_to_world", self.ego_to_world, (4, 4))
        self.intensity = _check_per_point("sweep intensity", self.intensity, n, np.float32)
        self.labels = _check_per_point("sweep labels", self.labels, n, np.int64)
        self.instances = _check_instances("sweep instances", self.instances, n)


@dataclass
class Frame:
    """A LiDAR keyframe with everything that belongs to it."""

    points: np.ndarray  # (N, 3) float32, metres, LiDAR frame
    timestamp: int = 0  # ns
    intensity: Optional[np.ndarray] = None  # (N,) float32 in [0, 1] (outdoor)
    colors: Optional[np.ndarray] = None  # (N, 3) float32 in [0, 1] (indoor)
    lidar_to_ego: np.ndarray = field(default_factory=lambda: np.eye(4))
    ego_to_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    labels: Optional[np.ndarray] = None  # (N,) int64, evaluation label space, 0 = ignore
    class_names: Sequence[str] = ()  # class_names[c - 1] names label c
    cameras: list[Camera] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)  # earlier scans, newest first
    frame_id: str = ""  # dataset-specific identifier (sample token, "seq/index", ...)
    instances: Optional[np.ndarray] = None  # (N,) uint32 object ids, 0 = no instance

    def __post_init__(self) -> None:
        self.points = _check_points("points", self.points)
        n = len(self.points)
        self.intensity = _check_per_point("intensity", self.intensity, n, np.float32)
        self.colors = _check_per_point("colors", self.colors, n, np.float32, width=3)
        self.labels = _check_per_point("labels", self.labels, n, np.int64)
        self.instances = _check_instances("instances", self.instances, n)
        self.lidar_to_ego = _check_matrix("lidar_to_ego", self.lidar_to_ego, (4, 4))
        self.ego_to_world = _check_matrix("ego_to_world", self.ego_to_world, (4, 4))
        self.class_names = tuple(self.class_names)
        if self.labels is not None and len(self.labels) and self.class_names:
            top = int(self.labels.max())
            if top > len(self.class_names) or int(self.labels.min()) < 0:
                raise ValueError(
                    f"labels must lie in 0..{len(self.class_names)} (0 = ignore), found "
                    f"{int(self.labels.min())}..{top}"
                )

    @property
    def num_points(self) -> int:
        return int(len(self.points))

    @property
    def lidar_to_world(self) -> np.ndarray:
        return self.ego_to_world @ self.lidar_to_ego
