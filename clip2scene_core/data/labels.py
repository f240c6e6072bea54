"""Class lists of every dataset (label order 1..C) and the raw-label -> evaluation-label maps.

Evaluation labels follow ``frame.py``: 0 = ignore, ``c`` in 1..C names ``CLASS_NAMES[kind][c - 1]``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

SYNTHETIC_CLASSES = (
    "road", "sidewalk", "terrain", "building", "vegetation",
    "pole", "car", "truck", "pedestrian", "traffic cone",
)

NUSCENES_CLASSES = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)

SEMANTICKITTI_CLASSES = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
    "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk",
    "terrain", "pole", "traffic-sign",
)

SCANNET_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "synthetic": SYNTHETIC_CLASSES,
    "nuscenes": NUSCENES_CLASSES,
    "semantickitti": SEMANTICKITTI_CLASSES,
    "scannet": SCANNET_CLASSES,
}

# nuScenes-lidarseg category name -> 16-class label (the standard lidarseg evaluation mapping);
# categories not listed (noise, animal, debris, ambulance, vehicle.ego, ...) map to 0.
NUSCENES_CATEGORY_TO_LABEL: dict[str, int] = {
    "movable_object.barrier": 1,
    "vehicle.bicycle": 2,
    "vehicle.bus.bendy": 3,
    "vehicle.bus.rigid": 3,
    "vehicle.car": 4,
    "vehicle.construction": 5,
    "vehicle.motorcycle": 6,
    "human.pedestrian.adult": 7,
    "human.pedestrian.child": 7,
    "human.pedestrian.construction_worker": 7,
    "human.pedestrian.police_officer": 7,
    "movable_object.trafficcone": 8,
    "vehicle.trailer": 9,
    "vehicle.truck": 10,
    "flat.driveable_surface": 11,
    "flat.other": 12,
    "flat.sidewalk": 13,
    "flat.terrain": 14,
    "static.manmade": 15,
    "static.vegetation": 16,
}

# SemanticKITTI raw label id (lower 16 bits of .label) -> 19-class label: the learning map of the
# official semantic-kitti.yaml (moving objects fold into their static class; unlisted ids -> 0).
SEMANTICKITTI_LEARNING_MAP: dict[int, int] = {
    10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}

# NYU40 id -> ScanNet20 label (the ScanNet benchmark's 20 valid ids, in order; others -> 0).
SCANNET_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET_NYU40_TO_LABEL: dict[int, int] = {nyu: i + 1 for i, nyu in enumerate(SCANNET_NYU40_IDS)}


def lookup_table(mapping: Mapping[int, int], size: int) -> np.ndarray:
    """Dense (size,) int64 table from a sparse raw-id -> label mapping; unmapped ids give 0."""
    table = np.zeros(size, dtype=np.int64)
    for raw, label in mapping.items():
        table[raw] = label
    return table


def map_labels(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map raw ids (N,) int through a lookup table; ids outside the table map to 0 (ignore)."""
    raw = np.asarray(raw).astype(np.int64)
    inside = (raw >= 0) & (raw < len(table))
    out = np.zeros(raw.shape, dtype=np.int64)
    out[inside] = table[raw[inside]]
    return out
