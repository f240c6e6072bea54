"""Kernel layout converters between backends, so a checkpoint trained with one runs with another.

Layouts of a cubic kernel of side k (K = k**3 offsets) for a layer C_in -> C_out:

* ``pure`` (canonical): ``(K, C_in, C_out)``, offsets z-fastest: index ``(ix * k + iy) * k + iz``.
* ``minkowski`` (MinkowskiEngine 0.5): ``(K, C_in, C_out)``, offsets x-fastest: index
  ``(iz * k + iy) * k + ix`` (its kernel-region iterator advances the first spatial axis first).
* ``spconv`` (2.x, indices given as ``[b, x, y, z]``): ``(C_out, kx, ky, kz, C_in)``.

Here ``i`` runs over the kernel positions along an axis (offsets -1..1 for k = 3, 0..1 for k = 2).
BatchNorm and linear layers have the same layout in every backend and are left as they are.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from clip2scene_core.sparse.conv import KernelConvolution
from clip2scene_core.sparse.layout import kernel_side

LAYOUTS = ("pure", "minkowski", "spconv")


def _check_layout(name: str) -> None:
    if name not in LAYOUTS:
        raise ValueError(f"unknown kernel layout {name!r}; choose one of {list(LAYOUTS)}")


def kernel_to_canonical(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """A kernel in ``layout`` -> canonical ``(K, C_in, C_out)`` z-fastest."""
    _check_layout(layout)
    if layout == "spconv":
        if weight.ndim != 5:
            raise ValueError(f"spconv kernels are (C_out, k, k, k, C_in), got {tuple(weight.shape)}")
        c_out, k, _, _, c_in = weight.shape
        return weight.permute(1, 2, 3, 4, 0).reshape(k**3, c_in, c_out)
    if weight.ndim != 3:
        raise ValueError(f"{layout} kernels are (K, C_in, C_out), got {tuple(weight.shape)}")
    if layout == "pure":
        return weight
    k = kernel_side(weight.shape[0])
    # x-fastest index (iz, iy, ix) -> z-fastest (ix, iy, iz)
    return weight.reshape(k, k, k, *weight.shape[1:]).permute(2, 1, 0, 3, 4).reshape(weight.shape)


def kernel_from_canonical(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """A canonical ``(K, C_in, C_out)`` kernel -> ``layout``."""
    _check_layout(layout)
    if weight.ndim != 3:
        raise ValueError(f"canonical kernels are (K, C_in, C_out), got {tuple(weight.shape)}")
    k = kernel_side(weight.shape[0])
    c_in, c_out = weight.shape[1:]
    if layout == "pure":
        return weight
    if layout == "spconv":
        return weight.reshape(k, k, k, c_in, c_out).permute(4, 0, 1, 2, 3).contiguous()
    return weight.reshape(k, k, k, c_in, c_out).permute(2, 1, 0, 3, 4).reshape(weight.shape).contiguous()


def convert_kernel(weight: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """A kernel from layout ``source`` to layout ``target``."""
    return kernel_from_canonical(kernel_to_canonical(weight, source), target)


def kernel_keys(model: nn.Module) -> list[str]:
    """State-dict keys of ``model``'s sparse convolution kernels (any backend)."""
    return [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, KernelConvolution)]


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], keys: Iterable[str], source: str,
                       target: str) -> dict[str, torch.Tensor]:
    """Copy of ``state_dict`` with the kernels under ``keys`` converted from ``source`` to ``target``.

    Other entries are passed through unchanged. Raises KeyError naming a missing kernel key.
    """
    out = dict(state_dict)
    for key in keys:
        if key not in out:
            raise KeyError(f"state dict has no sparse kernel {key!r}")
        out[key] = convert_kernel(out[key], source, target)
    return out
