"""spconv 2.x backend (optional): the same layers computed by spconv's kernels.

Indices are passed to spconv as ``[b, x, y, z]`` on the `aligned_grid`, so spconv's kernel axes are
x, y, z and a weight is ``(C_out, kx, ky, kz, C_in)``. spconv's indice pairs are kept in the
family's `CoordinateCache` (one ``indice_dict`` per forward pass, keys per stride), which is how a
transposed convolution finds the voxels of the down-sampling it undoes.

spconv computes wrong results on CPU with more than one torch thread, so on CPU its layers switch
torch to one thread for the whole process (the backward that follows runs outside the layer) and
log a warning when they do.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import spconv.pytorch as spconv
import spconv.pytorch.ops as spconv_ops
import torch

from clip2scene_core.sparse.backends.base import LibraryConvolution
from clip2scene_core.sparse.tensor import SparseTensor, finer_coords

_log = logging.getLogger(__name__)


def _cpu_safe_stream() -> int:
    """The current CUDA stream, or 0 (the default stream) on a machine without CUDA."""
    return torch.cuda.current_stream().cuda_stream if torch.cuda.is_available() else 0


# spconv 2.3's CPU backward asks for the current CUDA stream (unused for CPU tensors), which raises
# with a CUDA build of torch on a machine without a driver; answer the default stream there.
spconv_ops.get_current_stream = _cpu_safe_stream


def _ensure_single_thread(device: torch.device) -> None:
    if device.type == "cpu" and torch.get_num_threads() != 1:
        _log.warning("spconv is wrong on CPU with %d threads: setting torch.set_num_threads(1)",
                     torch.get_num_threads())
        torch.set_num_threads(1)


@dataclass
class _SpconvState:
    """spconv's view of one tensor family: shifted indices and spatial shape per stride."""

    shift: list[int]  # subtracted from stride-1 x, y, z
    batch_size: int
    indices: dict[int, torch.Tensor] = field(default_factory=dict)
    spatial_shape: dict[int, list[int]] = field(default_factory=dict)
    indice_dict: dict = field(default_factory=dict)


class _SpconvConvolution(LibraryConvolution):
    """A spconv layer: weight ``(C_out, k, k, k, C_in)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, impl: torch.nn.Module,
                 alignment: int) -> None:
        k = kernel_size
        super().__init__(in_channels, out_channels, k, (out_channels, k, k, k, in_channels), impl, alignment)

    def _state(self, x: SparseTensor) -> _SpconvState:
        def create(x: SparseTensor, indices: torch.Tensor, shift: list[int], shape: list[int]) -> _SpconvState:
            state = _SpconvState(shift, x.batch_size)
            state.indices[1], state.spatial_shape[1] = indices, shape
            return state

        return self.family_state(x, create)

    def _run(self, x: SparseTensor, state: _SpconvState, indice_key: str) -> spconv.SparseConvTensor:
        self._check_input(x)
        _ensure_single_thread(x.device)
        native = spconv.SparseConvTensor(x.feats, state.indices[x.stride], state.spatial_shape[x.stride],
                                         state.batch_size)
        native.indice_dict = state.indice_dict
        impl = self.bound_impl()
        impl.indice_key = indice_key
        out = impl(native)
        state.indice_dict = out.indice_dict  # spconv adds new pairs to a copy of the dict
        return out


class SpconvSubmanifoldConv3d(_SpconvConvolution):
    def __init__(self, in_channels: int, out_channels: int, alignment: int) -> None:
        impl = spconv.SubMConv3d(in_channels, out_channels, 3, padding=1, bias=False)
        super().__init__(in_channels, out_channels, 3, impl, alignment)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self._run(x, self._state(x), f"subm{x.stride}")
        return x.with_feats(out.features)


class SpconvDownConv3d(_SpconvConvolution):
    def __init__(self, in_channels: int, out_channels: int, alignment: int) -> None:
        impl = spconv.SparseConv3d(in_channels, out_channels, 2, stride=2, padding=0, bias=False)
        super().__init__(in_channels, out_channels, 2, impl, alignment)

    def forward(self, x: SparseTensor) -> SparseTensor:
        state = self._state(x)
        out = self._run(x, state, f"down{x.stride}")
        stride = x.stride * 2
        state.indices[stride], state.spatial_shape[stride] = out.indices, list(out.spatial_shape)
        shift = torch.tensor([0] + [s // stride for s in state.shift], device=out.indices.device)
        return SparseTensor(out.features, out.indices + shift, stride, x.cache)


class SpconvUpConv3d(_SpconvConvolution):
    def __init__(self, in_channels: int, out_channels: int, alignment: int) -> None:
        # The indice key is set per call (the down-sampling being undone); this one is a placeholder.
        impl = spconv.SparseInverseConv3d(in_channels, out_channels, 2, indice_key="down", bias=False)
        super().__init__(in_channels, out_channels, 2, impl, alignment)

    def forward(self, x: SparseTensor) -> SparseTensor:
        fine, coords = finer_coords(x)
        out = self._run(x, self._state(x), f"down{fine}")
        return SparseTensor(out.features, coords, fine, x.cache)


class SpconvBackend:
    name = "spconv"

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment

    def submanifold_conv(self, in_channels: int, out_channels: int) -> SpconvSubmanifoldConv3d:
        return SpconvSubmanifoldConv3d(in_channels, out_channels, self.alignment)

    def down_conv(self, in_channels: int, out_channels: int) -> SpconvDownConv3d:
        return SpconvDownConv3d(in_channels, out_channels, self.alignment)

    def up_conv(self, in_channels: int, out_channels: int) -> SpconvUpConv3d:
        return SpconvUpConv3d(in_channels, out_channels, self.alignment)


def make_backend(max_stride: int) -> SpconvBackend:
    """spconv backend aligning its grid to ``max_stride``."""
    return SpconvBackend(max_stride)
