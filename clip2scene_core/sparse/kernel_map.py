"""Kernel maps of the pure backend: which input voxel feeds which output voxel through which offset.

Coordinates are packed into one int64 key per voxel (batch-major, z fastest) inside a box padded by
one cell, so a neighbour at offset d has key ``key + delta(d)`` and never wraps around. Lookups use
a dense key -> index table when the box is small compared with the voxel count, else a sorted key
array and ``searchsorted``. Everything is tensor code: it runs unchanged on CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from typing import Optional

import torch

from clip2scene_core.sparse.layout import kernel_offsets
from clip2scene_core.sparse.scatter import RowScatter
from clip2scene_core.sparse.tensor import SparseTensor, finer_coords

# A dense table costs one int64 per box cell: use it while the box has at most this many cells per
# voxel (or at most _DENSE_MIN_CELLS in all, which is cheap whatever the voxel count).
_DENSE_CELLS_PER_VOXEL = 16
_DENSE_MIN_CELLS = 1 << 18
_MAX_KEY = 1 << 62


@dataclass(frozen=True)
class PairGroup:
    """Consecutive offsets of a kernel map whose rows are gathered at once and scattered at once.

    spans: (k, start, end) per offset: its pairs are rows start:end of the group's stacked pairs;
    inputs: (P,) int64 input rows of all the group's pairs, in order; scatter: sums the stacked
    products (P, C) into their output rows (``scatter.rows``, the output row of each pair).
    """

    spans: tuple[tuple[int, int, int], ...]
    inputs: torch.Tensor
    scatter: RowScatter

    @property
    def num_pairs(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Input -> output voxel pairs per kernel offset.

    pairs: (offset index k, in_idx (P,) int64, out_idx (P,) int64) triples: ``out[out_idx] +=
    feats[in_idx] @ weight[k]``. identity_offset: the offset whose pairs are all voxels to
    themselves (submanifold centre; needs num_in == num_out), kept out of ``pairs`` so it runs as
    one plain matmul.
    """

    num_in: int
    num_out: int
    pairs: tuple[tuple[int, torch.Tensor, torch.Tensor], ...]
    identity_offset: Optional[int] = None

    @cached_property
    def transposed(self) -> "KernelMap":
        """The map of the transposed operator (outputs feed inputs through the same offsets)."""
        return KernelMap(self.num_out, self.num_in, tuple((k, o, i) for k, i, o in self.pairs),
                         self.identity_offset)

    @cached_property
    def _groups(self) -> dict[int, tuple[PairGroup, ...]]:
        return {}

    def groups(self, max_pairs: int) -> tuple[PairGroup, ...]:
        """``pairs`` cut into groups of whole offsets with at most ``max_pairs`` pairs each (unless one
        offset has more), built once per ``max_pairs``: bounds the buffers of gathered rows and
        stacked products that a convolution holds at once."""
        cached = self._groups.get(max_pairs)
        if cached is not None:
            return cached
        groups, current, size = [], [], 0
        for pair in self.pairs:
            if current and size + pair[1].numel() > max_pairs:
                groups.append(current)
                current, size = [], 0
            current.append(pair)
            size += pair[1].numel()
        if current:
            groups.append(current)
        cached = self._groups[max_pairs] = tuple(self._group(group) for group in groups)
        return cached

    def _group(self, pairs: list[tuple[int, torch.Tensor, torch.Tensor]]) -> PairGroup:
        sizes = [in_idx.numel() for _, in_idx, _ in pairs]
        spans = tuple((k, end - size, end) for (k, _, _), size, end in zip(pairs, sizes, accumulate(sizes)))
        return PairGroup(spans, torch.cat([p[1] for p in pairs]),
                         RowScatter(torch.cat([p[2] for p in pairs]), self.num_out))


def pack_keys(coords: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int], int]:
    """Pack coords (V, 4) int ``[b, x, y, z]`` into int64 keys inside their box padded by one cell.

    Returns (keys (V,) int64, per-axis multipliers, number of cells in the padded box); key order is
    lexicographic ``(b, x, y, z)`` order.
    """
    cells = coords.long()
    if cells.shape[0] == 0:
        raise ValueError("cannot pack an empty voxel set")
    pad = torch.tensor([0, 1, 1, 1], device=cells.device)
    low = cells.min(dim=0).values - pad
    span = (cells.max(dim=0).values + pad - low + 1).tolist()
    total = span[0] * span[1] * span[2] * span[3]
    if total >= _MAX_KEY:
        raise ValueError(f"voxel coordinates span {span[1:]} cells: too large to pack into int64 keys")
    multipliers = (span[1] * span[2] * span[3], span[2] * span[3], span[3], 1)
    keys = ((cells - low) * torch.tensor(multipliers, device=cells.device)).sum(dim=1)
    return keys, multipliers, total


class CoordinateIndex:
    """Finds voxels by coordinates: coords (V, 4) int ``[b, x, y, z]`` -> row index or -1."""

    def __init__(self, coords: torch.Tensor) -> None:
        self.keys, self.multipliers, total = pack_keys(coords)
        num = self.keys.shape[0]
        self._table: Optional[torch.Tensor] = None
        if total <= max(_DENSE_MIN_CELLS, _DENSE_CELLS_PER_VOXEL * num):
            self._table = torch.full((total,), -1, dtype=torch.long, device=self.keys.device)
            self._table[self.keys] = torch.arange(num, device=self.keys.device)
        else:
            self._sorted_keys, self._order = torch.sort(self.keys)

    def delta(self, offset: tuple[int, int, int]) -> int:
        """Key difference of a neighbour at ``offset`` (dx, dy, dz) with |d| <= 1 per axis."""
        return offset[0] * self.multipliers[1] + offset[1] * self.multipliers[2] + offset[2]

    def find_column(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row indices (-1 if absent) of ``keys - 1``, ``keys`` and ``keys + 1``: three z-neighbours.

        ``keys`` (Q,) int64 lie inside the padded box. On the sorted path this costs one binary
        search: keys are unique and z is their fastest axis, so in sorted order the three sit at the search
        position of ``keys - 1`` plus the number of them present before each: a few gathers instead of
        two more binary searches.
        """
        if self._table is not None:
            return self._table[keys - 1], self._table[keys], self._table[keys + 1]
        last = self._sorted_keys.shape[0] - 1
        pos = torch.searchsorted(self._sorted_keys, keys - 1)
        rows = []
        for dz in (-1, 0, 1):
            pos = pos.clamp_(max=last)
            hit = self._sorted_keys[pos] == keys + dz
            rows.append(torch.where(hit, self._order[pos], torch.full_like(pos, -1)))
            pos = pos + hit
        return rows[0], rows[1], rows[2]


def build_submanifold_map(coords: torch.Tensor) -> KernelMap:
    """3x3x3 submanifold map on coords (V, 4): outputs are the inputs' own voxels.

    Only the 13 offsets after the centre (lexicographically positive) are looked up, a (dx, dy) column
    of three at a time (`CoordinateIndex.find_column`): if voxel b sits at a + d then a sits at
    b - d, so the pair list of -d is the same pairs reversed. In canonical order offset -d has index
    26 - k(d).
    """
    offsets = kernel_offsets(3).tolist()
    centre = len(offsets) // 2
    num = coords.shape[0]
    if num == 0:
        return KernelMap(0, 0, (), identity_offset=centre)
    index = CoordinateIndex(coords)
    neighbours = {}
    for k in range(centre + 1, len(offsets), 3):  # offsets 3j..3j+2 share (dx, dy) and step z
        column = index.find_column(index.keys + index.delta(offsets[k - k % 3 + 1]))
        neighbours.update({k - k % 3 + dz: rows for dz, rows in enumerate(column)})
    pairs = []
    for k in range(centre + 1, len(offsets)):
        neighbour = neighbours[k]
        a = torch.nonzero(neighbour >= 0).squeeze(1)
        b = neighbour.index_select(0, a)
        pairs.append((k, b, a))  # out a reads in b = a + d
        pairs.append((len(offsets) - 1 - k, a, b))  # out b reads in a = b - d
    return KernelMap(num, num, tuple(pairs), identity_offset=centre)


def build_downsample_map(coords: torch.Tensor) -> tuple[KernelMap, torch.Tensor]:
    """2x2x2 stride-2 map: each voxel x feeds the coarse voxel floor(x / 2) through offset x mod 2.

    coords: (V, 4) int at stride s. Returns (map from the V fine to V' coarse voxels, coarse coords
    (V', 4) int32 at stride 2s, sorted by key).
    """
    if coords.shape[0] == 0:
        return KernelMap(0, 0, ()), coords.to(torch.int32)
    cells = coords.long()
    coarse = cells.clone()
    coarse[:, 1:] = torch.div(cells[:, 1:], 2, rounding_mode="floor")
    parity = cells[:, 1:] - 2 * coarse[:, 1:]
    offset_index = parity[:, 0] * 4 + parity[:, 1] * 2 + parity[:, 2]  # canonical z-fastest order
    _, inverse = torch.unique(pack_keys(coarse)[0], return_inverse=True)
    num_coarse = int(inverse.max()) + 1
    coarse_coords = torch.empty((num_coarse, 4), dtype=torch.int32, device=coords.device)
    coarse_coords[inverse] = coarse.to(torch.int32)
    # Group the fine voxels by offset with one stable sort instead of eight masks.
    offset_sorted, fine_order = torch.sort(offset_index, stable=True)
    counts = torch.bincount(offset_sorted, minlength=8).tolist()
    pairs = []
    for k, fine in enumerate(torch.split(fine_order, counts)):
        if fine.numel():
            pairs.append((k, fine, inverse.index_select(0, fine)))
    return KernelMap(coords.shape[0], num_coarse, tuple(pairs)), coarse_coords


def submanifold_map(x: SparseTensor) -> KernelMap:
    """Cached `build_submanifold_map` of ``x``'s stride."""
    return x.cache.get_or_compute(("pure-subm", x.stride), lambda: build_submanifold_map(x.coords))


def downsample_map(x: SparseTensor) -> tuple[KernelMap, torch.Tensor]:
    """Cached `build_downsample_map` from ``x``'s stride to twice it."""
    return x.cache.get_or_compute(("pure-down", x.stride), lambda: build_downsample_map(x.coords))


def upsample_map(x: SparseTensor) -> tuple[KernelMap, torch.Tensor]:
    """Map of the transposed 2x2x2 conv from ``x`` (stride s) back to the family's stride s/2 voxels.

    Returns (map, fine coords); see `finer_coords`.
    """
    fine_stride, fine = finer_coords(x)
    down, coarse = x.cache.get_or_compute(("pure-down", fine_stride), lambda: build_downsample_map(fine))
    if coarse is not x.coords and not torch.equal(coarse, x.coords):
        raise ValueError(f"stride-{x.stride} voxels were not made by down-sampling the stride-{fine_stride} ones")
    return down.transposed, fine
