"""Network input: per-point features -> voxels -> a batched `SparseTensor`.

Training, evaluation and the `Segmenter` all build the 3D network's input here, so a checkpoint's
``input_features`` and ``voxel_size`` mean the same thing everywhere.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from clip2scene_core.frame import Frame
from clip2scene_core.sparse import SparseTensor
from clip2scene_core.voxel import pool_to_voxels, voxelize

#: Known per-point input features and their widths.
FEATURE_WIDTHS = {"intensity": 1, "rgb": 3, "ones": 1}


def feature_width(names: Sequence[str]) -> int:
    """Number of input channels for the feature ``names`` (validated)."""
    unknown = [name for name in names if name not in FEATURE_WIDTHS]
    if unknown or not names:
        raise ValueError(f"input features must be a non-empty subset of {sorted(FEATURE_WIDTHS)}, "
                         f"got {list(names)}")
    return sum(FEATURE_WIDTHS[name] for name in names)


def point_features(names: Sequence[str], num_points: int, intensity: Optional[np.ndarray] = None,
                   colors: Optional[np.ndarray] = None) -> np.ndarray:
    """Stack the named per-point features.

    Args:
        names: feature names from `FEATURE_WIDTHS`, in order.
        num_points: N.
        intensity: (N,) float32 in [0, 1]; zeros when the sensor has none.
        colors: (N, 3) float32 in [0, 1]; zeros when absent.
    Returns:
        (N, F) float32.
    """
    feature_width(names)
    columns = []
    for name in names:
        if name == "intensity":
            value = np.zeros(num_points, np.float32) if intensity is None else intensity
            columns.append(np.clip(np.asarray(value, np.float32), 0.0, 1.0).reshape(num_points, 1))
        elif name == "rgb":
            value = np.zeros((num_points, 3), np.float32) if colors is None else colors
            columns.append(np.asarray(value, np.float32).reshape(num_points, 3))
        else:  # "ones"
            columns.append(np.ones((num_points, 1), np.float32))
    return np.concatenate(columns, axis=1)


def frame_features(frame: Frame, names: Sequence[str]) -> np.ndarray:
    """`point_features` of a keyframe: (N, F) float32."""
    return point_features(names, frame.num_points, frame.intensity, frame.colors)


def sparse_input(points: torch.Tensor, features: torch.Tensor, voxel_size: float,
                 batch: Optional[torch.Tensor] = None) -> tuple[SparseTensor, torch.Tensor]:
    """Voxelise a (batched) point set into the network's input.

    Args:
        points: (N, 3) float, metres.
        features: (N, F) float per-point features (averaged per voxel).
        voxel_size: metres.
        batch: (N,) int64 sample index of each point; None = one sample.
    Returns:
        (SparseTensor with V voxels, inverse (N,) int64 mapping each point to its voxel).
    """
    voxels = voxelize(points, voxel_size, batch)
    voxel_features = pool_to_voxels(features, voxels.inverse, len(voxels.coords), reduce="mean")
    return SparseTensor(voxel_features, voxels.coords, 1), voxels.inverse
