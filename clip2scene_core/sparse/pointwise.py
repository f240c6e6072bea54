"""Per-voxel operations on `SparseTensor`: BatchNorm, ReLU and linear maps (1x1x1 convolutions).

They act on the feature rows only, so they are the same for every convolution backend and their
parameters have the same names and layout everywhere.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from clip2scene_core.sparse.tensor import SparseTensor


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over all voxels of the batch: (V, C) features normalised per channel."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.with_feats(super().forward(x.feats))


class SparseReLU(nn.Module):
    """ReLU on the features; ``inplace`` overwrites them (safe after BatchNorm or an addition)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.with_feats(F.relu(x.feats, inplace=self.inplace))


class SparseLinear(nn.Linear):
    """Per-voxel linear map (a 1x1x1 convolution): (V, C_in) -> (V, C_out)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.with_feats(super().forward(x.feats))
