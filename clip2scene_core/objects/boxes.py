"""Per-object summaries of labelled instances: class, score, size and an oriented 3D box.

An object's box is yaw-only (upright): the yaw is the main axis of the object's points in the
xy-plane (2-D PCA: the leading eigenvector of their 2x2 covariance, in closed form), the length and
width are the points' extents along that axis and across it, and the box spans the points' lowest
to highest z. A LiDAR sees one or two sides of an object, so the box is the tightest one around
the points seen, not the whole object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Objects:
    """K objects as a structure of arrays (coordinates in the frame of the points given).

    Attributes:
        instance_id: (K,) uint32 id of each object's points (ascending).
        class_index: (K,) int64 class index (the most frequent one among the object's points).
        score: (K,) float32 mean score of the object's points.
        point_count: (K,) int64 points in the object.
        centroid: (K, 3) float32 mean of the points, metres.
        center: (K, 3) float32 box centre, metres.
        size: (K, 3) float32 box length (along ``yaw``), width and height, metres.
        yaw: (K,) float32 radians about z of the box's length axis, in (-pi/2, pi/2].
    """

    instance_id: np.ndarray
    class_index: np.ndarray
    score: np.ndarray
    point_count: np.ndarray
    centroid: np.ndarray
    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray

    def __len__(self) -> int:
        return int(len(self.instance_id))


def _per_object_sum(group: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(group, weights=values, minlength=count)


def object_boxes(points: np.ndarray, instances: np.ndarray, class_indices: np.ndarray,
                 scores: np.ndarray) -> Objects:
    """Summarise every object of an instance labelling (see the module docstring).

    Args:
        points: (N, 3) float32, metres.
        instances: (N,) integer instance ids; 0 = no object.
        class_indices: (N,) integer class index per point.
        scores: (N,) float32 score per point.
    Returns:
        `Objects`, one per distinct non-zero instance id, in ascending id order.
    Raises:
        ValueError naming the argument whose shape is wrong.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    count = len(points)
    arrays = {"instances": np.asarray(instances), "class_indices": np.asarray(class_indices),
              "scores": np.asarray(scores, dtype=np.float32)}
    for name, array in arrays.items():
        if array.shape != (count,):
            raise ValueError(f"{name} must have shape ({count},), got {array.shape}")
    instances, class_indices, scores = arrays.values()

    members = np.flatnonzero(instances != 0)
    ids, group, sizes = np.unique(instances[members], return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    objects = len(ids)
    xyz = points[members].astype(np.float64)
    centroid = np.stack([_per_object_sum(group, xyz[:, axis], objects) for axis in range(3)], 1) \
        / np.maximum(sizes, 1)[:, None]
    dx, dy = (xyz[:, :2] - centroid[group, :2]).T
    # Orientation of the leading eigenvector of [[cxx, cxy], [cxy, cyy]] (scaling does not matter).
    cxx, cyy, cxy = (_per_object_sum(group, v, objects) for v in (dx * dx, dy * dy, dx * dy))
    yaw = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    cos, sin = np.cos(yaw)[group], np.sin(yaw)[group]
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos

    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    low = np.stack([np.minimum.reduceat(v[order], starts) if objects else np.zeros(0)
                    for v in (along, across, xyz[:, 2])], 1)
    high = np.stack([np.maximum.reduceat(v[order], starts) if objects else np.zeros(0)
                     for v in (along, across, xyz[:, 2])], 1)
    middle = (low + high) / 2
    cos, sin = np.cos(yaw), np.sin(yaw)
    center = np.stack([centroid[:, 0] + middle[:, 0] * cos - middle[:, 1] * sin,
                       centroid[:, 1] + middle[:, 0] * sin + middle[:, 1] * cos, middle[:, 2]], 1)

    # Most frequent class per object: count (object, class) pairs, keep each object's largest.
    pairs, pair_counts = np.unique(np.stack([group, class_indices[members].astype(np.int64)]), axis=1,
                                   return_counts=True)
    ranked = np.lexsort((-pair_counts, pairs[0]))  # by object, most frequent class first
    owner = pairs[0][ranked]
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    object_class = pairs[1][ranked][first]

    return Objects(
        instance_id=ids.astype(np.uint32),
        class_index=object_class.astype(np.int64),
        score=(_per_object_sum(group, scores[members], objects) / np.maximum(sizes, 1)).astype(np.float32),
        point_count=sizes.astype(np.int64),
        centroid=centroid.astype(np.float32).reshape(objects, 3),
        center=center.astype(np.float32).reshape(objects, 3),
        size=(high - low).astype(np.float32).reshape(objects, 3),
        yaw=yaw.astype(np.float32),
    )


def box_corners(center: np.ndarray, size: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """The 8 corners of yaw-oriented boxes (as in `Objects`): (K, 8, 3) float64, metres.

    Args:
        center: (K, 3) box centres; size: (K, 3) length (along ``yaw``), width, height; yaw: (K,)
            radians about z.
    Returns:
        Corners in the order bottom face (-l-w, +l-w, +l+w, -l+w), then the top face the same way.
    """
    center, size = np.asarray(center, np.float64).reshape(-1, 3), np.asarray(size, np.float64).reshape(-1, 3)
    yaw = np.asarray(yaw, np.float64).reshape(-1)
    if not len(center) == len(size) == len(yaw):
        raise ValueError(f"center, size and yaw must describe the same boxes, got {len(center)}, "
                         f"{len(size)}, {len(yaw)}")
    signs = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
                      [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], np.float64)
    local = signs[None] * size[:, None, :] / 2  # (K, 8, 3)
    cos, sin = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y, local[..., 2]], axis=-1) + center[:, None, :]
