"""One cloud through the 3D network: per-point embeddings in the text space (inference and evaluation)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip2scene_core.inputs import sparse_input

#: The network's output heads: ``semantic`` (inference) and ``consistency`` (Eq. 2-4 during training).
HEADS = ("semantic", "consistency")


@torch.no_grad()
def point_embeddings(model: nn.Module, points: np.ndarray, features: np.ndarray, voxel_size: float,
                     head: str = "semantic") -> torch.Tensor:
    """(N, D) float32 L2-normalised embeddings of every point (each takes its voxel's), on the model's device.

    Args:
        model: the 3D network (in eval mode).
        points: (N, 3) float32, metres, LiDAR frame.
        features: (N, F) float32 per-point input features (`clip2scene_core.inputs.point_features`).
        voxel_size: metres.
        head: one of `HEADS`.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    device = next(model.parameters()).device
    xyz = torch.from_numpy(np.ascontiguousarray(points, np.float32)).to(device)
    feats = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(device)
    sparse, inverse = sparse_input(xyz, feats, voxel_size)
    with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        voxel_embeddings = model(sparse)[head]
    return F.normalize(voxel_embeddings.float()[inverse], dim=1)
