"""Sum value rows into output rows, ``out[rows[j]] += values[j]``: the scatter step of a convolution.

On CPU the sum is a CSR sparse matrix (a single 1 per column, rows = destinations) times the
stacked values: torch's parallel sparse-dense product ran 1.6-4x faster than ``index_add_`` here
(95k voxels x 96 channels, 9 offsets, 2 cores). Elsewhere (CUDA) ``index_add_``'s atomics are the
fast path, and dtypes the CPU sparse kernels lack (bf16, fp16) use it too.
"""
from __future__ import annotations

import warnings

import torch

_CSR_DTYPES = (torch.float32, torch.float64)


class RowScatter:
    """Adds (P, C) value rows into the ``rows`` (P,) int64 of an (num_out, C) output."""

    def __init__(self, rows: torch.Tensor, num_out: int) -> None:
        self.rows = rows
        self.num_out = num_out
        self._matrices: dict[torch.dtype, torch.Tensor] = {}

    def add_(self, out: torch.Tensor, values: torch.Tensor) -> None:
        """``out[rows] += values`` in place (repeated rows accumulate)."""
        if out.device.type != "cpu" or values.dtype not in _CSR_DTYPES:
            out.index_add_(0, self.rows, values)
        else:
            out.addmm_(self._matrix(values.dtype), values)

    def _matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """The (num_out, P) CSR 0/1 matrix, built once per dtype."""
        matrix = self._matrices.get(dtype)
        if matrix is None:
            order = torch.argsort(self.rows, stable=True)
            crow = torch.zeros(self.num_out + 1, dtype=torch.long, device=self.rows.device)
            crow[1:] = torch.cumsum(torch.bincount(self.rows, minlength=self.num_out), dim=0)
            ones = torch.ones(order.shape[0], dtype=dtype, device=self.rows.device)
            with warnings.catch_warnings():  # torch flags its CSR support as beta at every use
                warnings.simplefilter("ignore", UserWarning)
                matrix = torch.sparse_csr_tensor(crow, order, ones, size=(self.num_out, order.shape[0]),
                                                 check_invariants=False)
            self._matrices[dtype] = matrix
        return matrix
