"""Global pooling: one feature vector per frame of a batched `SparseTensor`."""
from __future__ import annotations

import torch

from clip2scene_core.sparse.tensor import SparseTensor


def global_pool(x: SparseTensor, reduce: str = "mean") -> torch.Tensor:
    """Pool the voxels of each frame: returns (B, C), B = ``x.batch_size``.

    reduce: "mean", "sum" or "max"; a frame without voxels gets zeros.
    """
    if reduce not in ("mean", "sum", "max"):
        raise ValueError(f"reduce must be 'mean', 'sum' or 'max', got {reduce!r}")
    batch = x.coords[:, 0].long()
    out = x.feats.new_zeros((x.batch_size, x.num_channels))
    if reduce == "max":
        index = batch[:, None].expand_as(x.feats)
        return out.scatter_reduce(0, index, x.feats, reduce="amax", include_self=False)
    out = out.index_add(0, batch, x.feats)
    if reduce == "mean":
        counts = torch.bincount(batch, minlength=out.shape[0]).clamp_min(1)
        out = out / counts[:, None].to(out.dtype)
    return out
