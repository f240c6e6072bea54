"""The one differentiable kernel every pure-backend convolution runs: gather -> matmul -> scatter-add.

A custom autograd Function keeps only the layer input and the kernel map for backward (autograd
would otherwise keep every offset's gathered rows, about K/2 times the input for LiDAR voxels) and
re-gathers them there. The input gradient is the same operator with the transposed map and weights.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.autograd.function import once_differentiable

from clip2scene_core.sparse.kernel_map import KernelMap


def _compute_dtype(feats: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for this device (fp16 training on CUDA), else feats'."""
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(feats.dtype, weight.dtype)


def _gather_matmul_scatter(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                           on_gather: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None
                           ) -> torch.Tensor:
    """out (num_out, C_out) = sum over pairs of feats[in] @ weight[k] added at out rows.

    Products of a `PairGroup` are written into one buffer and scattered at once.
    on_gather(k, out_idx, gathered rows) lets the backward pass reuse each gathered block.
    """
    if kmap.identity_offset is not None:
        out = feats @ weight[kmap.identity_offset]
    else:
        out = feats.new_zeros((kmap.num_out, weight.shape[2]))
    for group in kmap.groups:
        products = feats.new_empty((group.num_pairs, weight.shape[2]))
        start = 0
        for (k, in_idx, out_idx), size in zip(group.pairs, group.sizes):
            gathered = feats.index_select(0, in_idx)
            if on_gather is not None:
                on_gather(k, out_idx, gathered)
            torch.mm(gathered, weight[k], out=products[start:start + size])
            start += size
        group.scatter.add_(out, products)
    return out


class _SparseConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        dtype = _compute_dtype(feats, weight)
        x, w = feats.to(dtype), weight.to(dtype)
        ctx.kmap = kmap
        ctx.input_dtypes = (feats.dtype, weight.dtype)
        ctx.save_for_backward(x, w)
        with torch.autocast(feats.device.type, enabled=False):
            return _gather_matmul_scatter(x, w, kmap)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, w = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        need_feats, need_weight = ctx.needs_input_grad[:2]
        grad_out = grad_out.to(x.dtype).contiguous()
        grad_feats = grad_weight = None
        with torch.autocast(x.device.type, enabled=False):
            if need_weight:
                grad_weight = torch.zeros_like(w)
                if kmap.identity_offset is not None:
                    grad_weight[kmap.identity_offset] = x.t() @ grad_out

                def weight_gradient(k: int, forward_in: torch.Tensor, grad_rows: torch.Tensor) -> None:
                    # forward_in: the forward inputs of these pairs ("out" rows of the transposed map)
                    grad_weight[k].addmm_(x.index_select(0, forward_in).t(), grad_rows)

            if need_feats:
                # The input gradient is the transposed convolution of the output gradient; the
                # weight gradient reuses its gathered output-gradient rows.
                grad_feats = _gather_matmul_scatter(grad_out, w.transpose(1, 2), kmap.transposed,
                                                    weight_gradient if need_weight else None)
                grad_feats = grad_feats.to(ctx.input_dtypes[0])
            elif need_weight:
                for k, in_idx, out_idx in kmap.pairs:
                    weight_gradient(k, in_idx, grad_out.index_select(0, out_idx))
            if need_weight:
                grad_weight = grad_weight.to(ctx.input_dtypes[1])
        return grad_feats, grad_weight, None


def sparse_convolution(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Sparse convolution by a kernel map.

    feats: (num_in, C_in) float; weight: (K, C_in, C_out) canonical layout (see `layout`);
    kmap: pairs per offset. Returns (num_out, C_out): ``out[o] = sum_k sum_{(i, o) in pairs_k}
    feats[i] @ weight[k]``.
    """
    if feats.shape[0] != kmap.num_in:
        raise ValueError(f"kernel map expects {kmap.num_in} input voxels, got {feats.shape[0]}")
    if weight.ndim != 3 or weight.shape[1] != feats.shape[1]:
        raise ValueError(f"weight must be (K, {feats.shape[1]}, C_out), got {tuple(weight.shape)}")
    return _SparseConvolution.apply(feats, weight, kmap)
