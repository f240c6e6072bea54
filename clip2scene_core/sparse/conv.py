"""Sparse convolution layers: submanifold 3x3x3, down-sampling 2x2x2/2 and its transpose.

`KernelConvolution` is the base every backend's layer derives from: one parameter named ``weight``
in that backend's layout (see `convert`), no bias (a BatchNorm follows every convolution here). The
classes below are the pure-PyTorch backend.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from clip2scene_core.sparse.functional import sparse_convolution
from clip2scene_core.sparse.kernel_map import downsample_map, submanifold_map, upsample_map
from clip2scene_core.sparse.tensor import SparseTensor


class KernelConvolution(nn.Module):
    """A sparse convolution with a cubic kernel of side ``kernel_size`` and a ``weight`` parameter.

    weight_shape: the backend's layout of that kernel. Initialised like torch's dense convolutions:
    uniform in +-1/sqrt(fan_in), fan_in = kernel volume * in_channels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 weight_shape: tuple[int, ...]) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        bound = 1.0 / math.sqrt(in_channels * kernel_size**3)
        self.weight = nn.Parameter(torch.empty(weight_shape).uniform_(-bound, bound))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"

    def _check_input(self, x: SparseTensor) -> None:
        if x.num_channels != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} channels, got {x.num_channels}")


class SubmanifoldConv3d(KernelConvolution):
    """3x3x3 submanifold convolution: outputs only on the input's voxels, same stride and order.

    weight: (27, C_in, C_out) canonical layout.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, (27, in_channels, out_channels))

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check_input(x)
        return x.with_feats(sparse_convolution(x.feats, self.weight, submanifold_map(x)))


class DownConv3d(KernelConvolution):
    """2x2x2 convolution with stride 2: stride s -> 2s, one output per occupied coarse cell.

    weight: (8, C_in, C_out) canonical layout; offset o in {0, 1}^3 carries voxel 2q + o to q.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 2, (8, in_channels, out_channels))

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check_input(x)
        kmap, coarse = downsample_map(x)
        return SparseTensor(sparse_convolution(x.feats, self.weight, kmap), coarse, x.stride * 2, x.cache)


class UpConv3d(KernelConvolution):
    """Transposed 2x2x2 stride-2 convolution: stride s -> s/2 onto the family's known finer voxels.

    weight: (8, C_in, C_out) canonical layout; fine voxel 2q + o reads coarse q through offset o.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 2, (8, in_channels, out_channels))

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check_input(x)
        kmap, fine = upsample_map(x)
        return SparseTensor(sparse_convolution(x.feats, self.weight, kmap), fine, x.stride // 2, x.cache)
