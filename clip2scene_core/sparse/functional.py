"""The one differentiable kernel every pure-backend convolution runs: gather -> matmul -> scatter-add.

A custom autograd Function keeps only the layer input and the kernel map for backward (autograd
would otherwise keep every offset's gathered rows, about K/2 times the input for LiDAR voxels) and
re-gathers them there. The input gradient is the same operator with the transposed map and weights.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

import torch
from torch.autograd.function import once_differentiable

from clip2scene_core.sparse.kernel_map import KernelMap, PairGroup


def _compute_dtype(feats: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for this device (fp16 training on CUDA), else feats'."""
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(feats.dtype, weight.dtype)


_WORKSPACE = threading.local()
# Floats per workspace buffer of a convolution's pair group (gathered rows, products): 64 MB.
_GROUP_FLOATS = 1 << 24


def workspace(slot: str, rows: int, columns: int, like: torch.Tensor) -> torch.Tensor:
    """A (rows, columns) scratch tensor of ``like``'s dtype and device, reused across calls.

    Each thread keeps one grow-only buffer per slot: on CPU a fresh large tensor per offset or layer
    costs page faults (glibc maps large blocks anew each time), which made gathers 2x slower. A
    slot's contents are valid until the next call with the same slot in the same thread. The price:
    each thread keeps its largest temporaries (three buffers of at most _GROUP_FLOATS floats each, see
    `group_pairs`: 203 MB for the default U-Net on 150k voxels).
    """
    # a tensor made under inference mode cannot be written outside it
    key = (slot, like.device, like.dtype, torch.is_inference_mode_enabled())
    buffers = _WORKSPACE.__dict__.setdefault("buffers", {})
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < rows * columns:
        buffer = buffers[key] = like.new_empty(rows * columns)
    return buffer[: rows * columns].view(rows, columns)


def gather_rows(source: torch.Tensor, index: torch.Tensor, slot: str) -> torch.Tensor:
    """``source[index]`` written into the workspace ``slot``."""
    return torch.index_select(source, 0, index, out=workspace(slot, index.shape[0], source.shape[1], source))


def group_pairs(in_channels: int, out_channels: int) -> int:
    """Pairs per `PairGroup` for a layer of these widths: a power of two that keeps each of its
    workspace buffers within _GROUP_FLOATS (the same for a layer's forward and backward)."""
    return 1 << max(0, (_GROUP_FLOATS // max(in_channels, out_channels, 1)).bit_length() - 1)


def _gather_matmul_scatter(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                           on_gather: Optional[Callable[[PairGroup, torch.Tensor], None]] = None
                           ) -> torch.Tensor:
    """out (num_out, C_out) = sum over pairs of feats[in] @ weight[k] added at out rows.

    Per `PairGroup`, the input rows of all its offsets are gathered in one call, each offset's slice
    is multiplied by its weight into one products buffer, and the products are scattered at once.
    on_gather(group, gathered rows) lets the backward pass reuse the gathered block (it lives in a
    workspace that the next group overwrites).
    """
    if kmap.identity_offset is not None:
        out = feats @ weight[kmap.identity_offset]
    else:
        out = feats.new_zeros((kmap.num_out, weight.shape[2]))
    for group in kmap.groups(group_pairs(feats.shape[1], weight.shape[2])):
        gathered = gather_rows(feats, group.inputs, "gathered")
        products = workspace("products", group.num_pairs, weight.shape[2], feats)
        for k, start, end in group.spans:
            torch.mm(gathered[start:end], weight[k], out=products[start:end])
        if on_gather is not None:
            on_gather(group, gathered)
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

                def weight_gradient(group: PairGroup, grad_rows: torch.Tensor) -> None:
                    # group is the transposed map's: its output rows are the forward inputs
                    inputs = gather_rows(x, group.scatter.rows, "inputs")
                    for k, start, end in group.spans:
                        grad_weight[k].addmm_(inputs[start:end].t(), grad_rows[start:end])

            if need_feats:
                # The input gradient is the transposed convolution of the output gradient; the
                # weight gradient reuses its gathered output-gradient rows.
                grad_feats = _gather_matmul_scatter(grad_out, w.transpose(1, 2), kmap.transposed,
                                                    weight_gradient if need_weight else None)
                grad_feats = grad_feats.to(ctx.input_dtypes[0])
            elif need_weight:
                for group in kmap.transposed.groups(group_pairs(w.shape[1], w.shape[2])):
                    weight_gradient(group, gather_rows(grad_out, group.inputs, "gathered"))
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
