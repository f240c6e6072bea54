"""Voxelise points and move features between points and voxels (torch only; CPU or CUDA).

Voxel coordinates are ``floor(points / voxel_size)``; points of a batch element that share a cell
become one voxel. ``inverse`` maps each point to its voxel, so per-point outputs are recovered by
indexing (``devoxelize``) and per-voxel inputs by pooling (``pool_to_voxels``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Voxels:
    """Occupied voxels of one or more point clouds.

    coords: (V, 4) int32 [batch, x, y, z] in voxel units, sorted lexicographically;
    inverse: (N,) int64, voxel index of every point; counts: (V,) int64 points per voxel.
    """

    coords: torch.Tensor
    inverse: torch.Tensor
    counts: torch.Tensor

    def __len__(self) -> int:
        return int(self.coords.shape[0])


def voxelize(points: torch.Tensor, voxel_size: float, batch: Optional[torch.Tensor] = None) -> Voxels:
    """Group points into cubic voxels of side ``voxel_size`` metres.

    points: (N, 3) float, metres; batch: (N,) int64 batch index per point (None = all 0).
    Grid coordinates are packed into one int64 key per point so a single ``torch.unique`` finds the
    voxels, their point counts and the point -> voxel map on the points' device.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {tuple(points.shape)}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if not torch.isfinite(points).all():
        raise ValueError("points contain NaN or Inf")
    device = points.device
    n = points.shape[0]
    grid = torch.floor(points.double() / voxel_size).long()
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=device)
    elif batch.shape != (n,):
        raise ValueError(f"batch must have shape ({n},), got {tuple(batch.shape)}")
    batch = batch.to(device=device, dtype=torch.long)
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Voxels(torch.zeros((0, 4), dtype=torch.int32, device=device), empty, empty.clone())
    cells = torch.cat([batch[:, None], grid], dim=1)  # (N, 4)
    low = cells.min(dim=0).values
    span = cells.max(dim=0).values - low + 1
    total = 1.0
    for s in span.tolist():
        total *= s
    if total >= 2**62:
        raise ValueError(f"point extent / voxel_size too large to index ({span.tolist()} cells)")
    shifted = cells - low
    keys = ((shifted[:, 0] * span[1] + shifted[:, 1]) * span[2] + shifted[:, 2]) * span[3] + shifted[:, 3]
    unique_keys, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    coords = torch.empty((unique_keys.shape[0], 4), dtype=torch.long, device=device)
    rest = unique_keys
    for axis in (3, 2, 1):
        coords[:, axis] = rest % span[axis]
        rest = rest // span[axis]
    coords[:, 0] = rest
    coords += low
    if coords[:, 1:].abs().max() >= 2**31:
        raise ValueError("voxel coordinates overflow int32; use a larger voxel_size")
    return Voxels(coords=coords.to(torch.int32), inverse=inverse, counts=counts)


def devoxelize(voxel_feats: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Per-point features from per-voxel ones: voxel_feats (V, C), inverse (N,) -> (N, C)."""
    return voxel_feats.index_select(0, inverse)


def pool_to_voxels(
    point_feats: torch.Tensor, inverse: torch.Tensor, num_voxels: int, reduce: str = "mean"
) -> torch.Tensor:
    """Pool per-point features into their voxels.

    point_feats: (N, C) float; inverse: (N,) int64 in [0, num_voxels); reduce: "mean", "sum" or
    "max". Returns (num_voxels, C); voxels without points get 0.
    """
    if point_feats.shape[0] != inverse.shape[0]:
        raise ValueError(f"{point_feats.shape[0]} point features but {inverse.shape[0]} inverse indices")
    out = point_feats.new_zeros((num_voxels,) + tuple(point_feats.shape[1:]))
    if reduce in ("sum", "mean"):
        out = out.index_add(0, inverse, point_feats)
        if reduce == "mean":
            counts = torch.bincount(inverse, minlength=num_voxels).clamp_min(1)
            out = out / counts.view(-1, *([1] * (point_feats.dim() - 1))).to(out.dtype)
        return out
    if reduce == "max":
        index = inverse.view(-1, *([1] * (point_feats.dim() - 1))).expand_as(point_feats)
        return out.scatter_reduce(0, index, point_feats, reduce="amax", include_self=False)
    raise ValueError(f"reduce must be 'mean', 'sum' or 'max', got {reduce!r}")
