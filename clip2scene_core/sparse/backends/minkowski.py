"""MinkowskiEngine 0.5 backend (optional): the same layers computed by MinkowskiEngine.

MinkowskiEngine keeps coordinates in base-voxel units (a stride-s tensor's coordinates are
multiples of s) inside a coordinate manager, one per tensor family here, kept in the family's
`CoordinateCache`. Its kernels are ``(K, C_in, C_out)`` with offsets in x-fastest order (see
`convert`). When it builds the stride-1 map it may reorder the voxels; the permutation is kept so
layers at stride 1 read and write rows in the `SparseTensor`'s own order.

MinkowskiEngine is not on PyPI as a wheel: ``tools/build_minkowski.sh`` builds it against the
project's torch. The parity tests (test_sparse_backends.py) run wherever it is installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import MinkowskiEngine as ME
import torch

from clip2scene_core.sparse.backends.base import LibraryConvolution
from clip2scene_core.sparse.tensor import SparseTensor, finer_coords


@dataclass
class _MinkowskiState:
    """MinkowskiEngine's view of one tensor family."""

    shift: list[int]  # subtracted from stride-1 x, y, z
    manager: Any  # ME.CoordinateManager
    keys: dict[int, Any] = field(default_factory=dict)  # stride -> ME.CoordinateMapKey
    # Stride-1 rows: engine row r is our row to_engine[r]; our row i is engine row from_engine[i].
    to_engine: Optional[torch.Tensor] = None
    from_engine: Optional[torch.Tensor] = None


class _MinkowskiConvolution(LibraryConvolution):
    """A MinkowskiEngine layer: kernel ``(K, C_in, C_out)``, offsets x-fastest."""

    weight_attribute = "kernel"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, impl: torch.nn.Module,
                 alignment: int) -> None:
        k = kernel_size
        super().__init__(in_channels, out_channels, k, (k**3, in_channels, out_channels), impl, alignment)

    def _state(self, x: SparseTensor) -> _MinkowskiState:
        def create(x: SparseTensor, coords: torch.Tensor, shift: list[int], _shape: list[int]) -> _MinkowskiState:
            first = ME.SparseTensor(features=x.feats, coordinates=coords)
            state = _MinkowskiState(shift, first.coordinate_manager)
            state.keys[1] = first.coordinate_map_key
            state.to_engine, state.from_engine = first.unique_index.long(), first.inverse_mapping.long()
            return state

        return self.family_state(x, create)

    def _run(self, x: SparseTensor, state: _MinkowskiState) -> Any:
        self._check_input(x)
        feats = x.feats if x.stride != 1 else x.feats.index_select(0, state.to_engine)
        native = ME.SparseTensor(features=feats, coordinate_map_key=state.keys[x.stride],
                                 coordinate_manager=state.manager)
        return self.bound_impl()(native)

    @staticmethod
    def _ours(feats: torch.Tensor, stride: int, state: _MinkowskiState) -> torch.Tensor:
        return feats if stride != 1 else feats.index_select(0, state.from_engine)


class MinkowskiSubmanifoldConv3d(_MinkowskiConvolution):
    def __init__(self, in_channels: int, out_channels: int, alignment: int) -> None:
        impl = ME.MinkowskiConvolution(in_channels, out_channels, kernel_size=3, stride=1, bias=False,
                                       dimension=3)
        super().__init__(in_channels, out_channels, 3, impl, alignment)

    def forward(self, x: SparseTensor) -> SparseTensor:
        state = self._state(x)
        return x.with_feats(self._ours(self._run(x, state).F, x.stride, state))


class MinkowskiDownConv3d(_MinkowskiConvolution):
    def __init__(self, in_channels: int, out_channels: int, alignment: int) -> None:
        impl = ME.MinkowskiConvolution(in_channels, out_channels, kernel_size=2, stride=2, bias=False,
                                       dimension=3)
        super().__init__(in_channels, out_channels, 2, impl, alignment)

    def forward(self, x: SparseTensor) -> SparseTensor:
        state = self._state(x)
        out = self._run(x, state)
        stride = x.stride * 2
        state.keys[stride] = out.coordinate_map_key
        engine = out.C.to(x.device).long()
        coords = torch.cat([engine[:, :1], torch.div(engine[:, 1:], stride, rounding_mode="floor")
                            + torch.tensor([s // stride for s in state.shift], device=x.device)], dim=1)
        return SparseTensor(out.F, coords, stride, x.cache)


class MinkowskiUpConv3d(_MinkowskiConvolution):
    def __init__(self, in_channels: int, out_channels: int, alignment: int) -> None:
        impl = ME.MinkowskiConvolutionTranspose(in_channels, out_channels, kernel_size=2, stride=2,
                                                bias=False, dimension=3)
        super().__init__(in_channels, out_channels, 2, impl, alignment)

    def forward(self, x: SparseTensor) -> SparseTensor:
        fine, coords = finer_coords(x)
        state = self._state(x)
        out = self._run(x, state)
        return SparseTensor(self._ours(out.F, fine, state), coords, fine, x.cache)


class MinkowskiBackend:
    name = "minkowski"

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment

    def submanifold_conv(self, in_channels: int, out_channels: int) -> MinkowskiSubmanifoldConv3d:
        return MinkowskiSubmanifoldConv3d(in_channels, out_channels, self.alignment)

    def down_conv(self, in_channels: int, out_channels: int) -> MinkowskiDownConv3d:
        return MinkowskiDownConv3d(in_channels, out_channels, self.alignment)

    def up_conv(self, in_channels: int, out_channels: int) -> MinkowskiUpConv3d:
        return MinkowskiUpConv3d(in_channels, out_channels, self.alignment)


def make_backend(max_stride: int) -> MinkowskiBackend:
    """MinkowskiEngine backend aligning its grid to ``max_stride``."""
    return MinkowskiBackend(max_stride)
