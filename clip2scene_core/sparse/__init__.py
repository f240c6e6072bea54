"""Sparse 3D convolutions on voxel sets: `SparseTensor` and its operations.

Default backend: pure PyTorch (CPU or CUDA, same code). MinkowskiEngine and spconv are optional
backends (`backends.conv_backend`); `convert` moves kernels between their layouts.
"""
from clip2scene_core.sparse.conv import DownConv3d, KernelConvolution, SubmanifoldConv3d, UpConv3d
from clip2scene_core.sparse.pointwise import SparseBatchNorm, SparseLinear, SparseReLU
from clip2scene_core.sparse.pooling import global_pool
from clip2scene_core.sparse.tensor import CoordinateCache, SparseTensor, cat

__all__ = [
    "CoordinateCache",
    "DownConv3d",
    "KernelConvolution",
    "SparseBatchNorm",
    "SparseLinear",
    "SparseReLU",
    "SparseTensor",
    "SubmanifoldConv3d",
    "UpConv3d",
    "cat",
    "global_pool",
]
