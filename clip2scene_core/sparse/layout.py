"""Kernel offsets and their canonical order, shared by the pure backend and the weight converters.

Canonical kernel layout (the pure backend's): ``weight`` is ``(K, C_in, C_out)`` with the K offsets
in *z-fastest* order, i.e. offset index ``k = (ix * size + iy) * size + iz``. This is exactly
``torch.nn.functional.conv3d``'s weight ``(C_out, C_in, kx, ky, kz)`` permuted to
``(kx, ky, kz, C_in, C_out)`` and flattened, with the coordinate axes x, y, z mapped to conv3d's
D, H, W. An offset ``d`` means: output voxel ``p`` reads input voxel ``p + d`` (cross-correlation).
"""
from __future__ import annotations

import torch


def kernel_offsets(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Offsets of a cubic kernel in canonical (z-fastest) order.

    size: kernel side; odd sizes are centred (3 -> -1..1), even sizes start at 0 (2 -> 0..1), the
    latter being the strided down/up-sampling kernels.
    Returns (size**3, 3) int64 offsets (dx, dy, dz) in voxels of the input's grid.
    """
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    start = -(size // 2) if size % 2 else 0
    axis = torch.arange(start, start + size, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)  # [ix, iy, iz, 3]
    return grid.reshape(-1, 3)


def kernel_side(volume: int) -> int:
    """Side of a cubic kernel with ``volume`` offsets (27 -> 3, 8 -> 2); raises if not a cube."""
    side = round(volume ** (1.0 / 3.0))
    if side < 1 or side**3 != volume:
        raise ValueError(f"a cubic kernel has size**3 offsets; {volume} is not a cube")
    return side
