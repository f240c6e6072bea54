"""`SparseTensor`: features on occupied voxels, and the per-pass cache its operations share.

Coordinates are ``[batch, x, y, z]`` in units of the tensor's *own* grid: a tensor at ``stride`` s
lives on cells ``s`` base voxels wide, so a stride-2 down-sampling maps ``x -> floor(x / 2)``.
Every tensor derived from one input (by convolutions, normalisation, concatenation...) shares one
`CoordinateCache`, which holds the coordinates of each stride and the kernel maps built for them;
the cache lives as long as the tensors of that forward pass (and their autograd graph) do.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Optional, Sequence

import torch


class CoordinateCache:
    """Coordinates per stride and anything computed from them (kernel maps, library state).

    All tensors of one family at a given stride must have the same coordinates (same order); this
    invariant is what makes caching kernel maps by stride correct.
    """

    def __init__(self) -> None:
        self.coords: dict[int, torch.Tensor] = {}
        self._entries: dict[Hashable, Any] = {}

    def register(self, stride: int, coords: torch.Tensor) -> None:
        """Record ``coords`` as the coordinates at ``stride``; raises if different ones are known."""
        known = self.coords.get(stride)
        if known is None:
            self.coords[stride] = coords
        elif known is not coords and (known.shape != coords.shape or not torch.equal(known, coords)):
            raise ValueError(
                f"a sparse tensor family already has different coordinates at stride {stride}; "
                "build a new SparseTensor (without cache=) for a new coordinate set"
            )

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The entry under ``key``, computed by ``compute()`` on first use."""
        if key not in self._entries:
            self._entries[key] = compute()
        return self._entries[key]

    def get(self, key: Hashable) -> Any:
        """The entry under ``key`` or None."""
        return self._entries.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        self._entries[key] = value


class SparseTensor:
    """Features on a set of occupied voxels of one or more frames.

    feats: (V, C) float features; coords: (V, 4) int32 ``[batch, x, y, z]`` in grid units of this
    stride (unique rows); stride: grid cell side in base voxels (1, 2, 4, ...); cache: share the
    cache of a tensor with the same family (None starts a new family).
    """

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, stride: int = 1,
                 cache: Optional[CoordinateCache] = None) -> None:
        if feats.ndim != 2 or not feats.is_floating_point():
            raise ValueError(f"feats must be a (V, C) float tensor, got {tuple(feats.shape)} {feats.dtype}")
        if coords.ndim != 2 or coords.shape[1] != 4 or coords.is_floating_point():
            raise ValueError(f"coords must be a (V, 4) integer tensor, got {tuple(coords.shape)} {coords.dtype}")
        if coords.shape[0] != feats.shape[0]:
            raise ValueError(f"{feats.shape[0]} feature rows but {coords.shape[0]} coordinates")
        if coords.device != feats.device:
            raise ValueError(f"feats on {feats.device} but coords on {coords.device}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if coords.dtype != torch.int32:
            if coords.numel() and coords.abs().max() >= 2**31:
                raise ValueError("coords overflow int32; use a larger voxel size")
            coords = coords.to(torch.int32)
        self.feats = feats
        self.coords = coords
        self.stride = int(stride)
        self.cache = CoordinateCache() if cache is None else cache
        self.cache.register(self.stride, coords)

    def with_feats(self, feats: torch.Tensor) -> "SparseTensor":
        """Same voxels (and family) with new features ``feats`` (V, C')."""
        return SparseTensor(feats, self.coords, self.stride, self.cache)

    @property
    def num_voxels(self) -> int:
        return int(self.feats.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.feats.shape[1])

    @property
    def batch_size(self) -> int:
        """Number of frames: 1 + the largest batch index (0 for an empty tensor)."""
        return int(self.coords[:, 0].max()) + 1 if self.num_voxels else 0

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def __repr__(self) -> str:
        return (f"SparseTensor(voxels={self.num_voxels}, channels={self.num_channels}, "
                f"stride={self.stride}, dtype={self.dtype}, device={self.device})")


def finer_coords(x: SparseTensor) -> tuple[int, torch.Tensor]:
    """(stride s/2, its coords) of the family's voxels that an up-sampling of ``x`` (stride s) restores.

    Raises unless ``x`` descends from a down-sampling of known stride s/2 voxels: an up-sampling
    restores known voxels, it does not invent new ones.
    """
    fine = x.stride // 2
    if x.stride % 2 or fine not in x.cache.coords:
        raise ValueError(f"no stride-{fine} voxels known to up-sample a stride-{x.stride} tensor to")
    return fine, x.cache.coords[fine]


def cat(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate features of tensors on the same voxels: (V, C1), (V, C2), ... -> (V, C1 + C2 + ...).

    The tensors must share stride and coordinates (as a U-Net skip and its up-sampled partner do);
    rows are matched by position, which that guarantees.
    """
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    first = tensors[0]
    for other in tensors[1:]:
        if other.stride != first.stride:
            raise ValueError(f"cannot concatenate tensors of strides {first.stride} and {other.stride}")
        if other.coords is not first.coords and not torch.equal(other.coords, first.coords):
            raise ValueError("cannot concatenate sparse tensors with different coordinates")
    return first.with_feats(torch.cat([t.feats for t in tensors], dim=1))
