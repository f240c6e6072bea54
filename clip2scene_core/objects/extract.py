"""The object stage in one call: per-point class labels and scores in, instance ids and boxes out."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .boxes import Objects, object_boxes
from .clustering import ClusteringParams, cluster_instances


def extract_objects(points: np.ndarray, class_indices: np.ndarray, scores: np.ndarray,
                    thing_classes: Sequence[int], params: ClusteringParams = ClusteringParams()
                    ) -> tuple[np.ndarray, Objects]:
    """Cluster the points of every thing class into objects and summarise each one.

    Args:
        points: (N, 3) float32, metres (the cloud's frame); non-finite rows join no object.
        class_indices: (N,) int class index per point (e.g. ``Segmentation.labels``); an index not
            in ``thing_classes`` (stuff, 0xFFFF unknown, -1) joins no object.
        scores: (N,) float32 per-point score (e.g. the cosine of the chosen class).
        thing_classes: the class indices that are countable objects.
        params: clustering radius and minimum object size.
    Returns:
        (instances, objects): (N,) uint32 instance id per point (1..K, 0 = no object) and the K
        objects' class, mean score, point count, centroid and oriented box, object ``k`` being
        instance ``k + 1``.
    Raises:
        ValueError naming the argument whose shape or values are wrong.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (len(points),):
        raise ValueError(f"scores must have shape ({len(points)},), got {scores.shape}")
    instances = cluster_instances(points, class_indices, thing_classes, params)
    return instances, object_boxes(points, instances, class_indices, scores)
