"""What a convolution backend provides, and the grid alignment the library backends share."""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import nn

from clip2scene_core.sparse.conv import KernelConvolution
from clip2scene_core.sparse.tensor import SparseTensor


class ConvBackend(Protocol):
    """Factory of the three sparse convolutions of a backend (all take and return `SparseTensor`)."""

    name: str

    def submanifold_conv(self, in_channels: int, out_channels: int) -> KernelConvolution:
        """3x3x3 submanifold convolution (same voxels)."""

    def down_conv(self, in_channels: int, out_channels: int) -> KernelConvolution:
        """2x2x2 stride-2 convolution (stride s -> 2s)."""

    def up_conv(self, in_channels: int, out_channels: int) -> KernelConvolution:
        """Transposed 2x2x2 stride-2 convolution back onto the stride s/2 voxels (s -> s/2)."""


def aligned_grid(coords: torch.Tensor, alignment: int) -> tuple[torch.Tensor, list[int], list[int]]:
    """Shift coords (V, 4) int ``[b, x, y, z]`` onto a non-negative grid for the libraries.

    The shift is a multiple of ``alignment`` (the network's coarsest stride), so floor-halving
    commutes with it and every stride sees the same cells as unshifted coordinates do.
    Returns (shifted coords (V, 4) int32, shift [sx, sy, sz] that was subtracted, spatial shape
    [X, Y, Z] covering the shifted coords, each a multiple of ``alignment``).
    """
    xyz = coords[:, 1:].long()
    low = torch.div(xyz.min(dim=0).values, alignment, rounding_mode="floor") * alignment
    shifted = xyz - low
    top = shifted.max(dim=0).values + 1
    shape = (torch.div(top + alignment - 1, alignment, rounding_mode="floor") * alignment).tolist()
    out = torch.cat([coords[:, :1].long(), shifted], dim=1).to(torch.int32)
    return out, low.tolist(), shape


class LibraryConvolution(KernelConvolution):
    """A layer computed by an external library but whose kernel is this module's ``weight``.

    The library's own module (``impl``) is kept out of the module tree, so state dicts have the
    same keys for every backend (only the tensor layout differs, see `convert`); it is handed the
    parameter as ``impl.<weight_attribute>`` at each call. ``alignment`` is for `aligned_grid`.
    """

    weight_attribute = "weight"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 weight_shape: tuple[int, ...], impl: nn.Module, alignment: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, weight_shape)
        setattr(impl, self.weight_attribute, None)  # drop the library's own copy of the kernel
        object.__setattr__(self, "_impl", impl)
        self.alignment = alignment

    def family_state(self, x: SparseTensor, create: Callable[..., Any]) -> Any:
        """The library's state for ``x``'s tensor family, made on first use at stride 1 by
        ``create(x, aligned coords, shift, spatial shape)`` (see `aligned_grid`)."""
        key = ("library", type(self).__module__)
        state = x.cache.get(key)
        if state is None:
            if x.stride != 1:
                raise ValueError(f"{type(self).__name__} must first see a tensor family at stride 1")
            state = create(x, *aligned_grid(x.coords, self.alignment))
            x.cache.put(key, state)
        return state

    def bound_impl(self) -> nn.Module:
        """The library module, holding this layer's weight and training mode."""
        setattr(self._impl, self.weight_attribute, self.weight)
        self._impl.train(self.training)
        return self._impl
