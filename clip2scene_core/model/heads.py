"""The two linear heads that project backbone features into the CLIP text space (dimension D).

The paper trains its two objectives on point features from two *different* learnable heads:
``semantic`` feeds the semantic consistency loss (Eq. 1) and inference, ``consistency`` feeds the
semantic-guided spatial-temporal consistency loss (Eq. 2-4). Outputs are unnormalised.

Pretraining evaluates the heads at the paired points only and keeps them factored
(:class:`ProjectedFeatures`): every loss term is a scalar product or a norm of ``p = W h + b``, which
is exact and far cheaper in the backbone's width F (16-96) than in D (384-512).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn


@dataclass(frozen=True)
class ProjectedFeatures:
    """Rows ``p_i = W h_i + b`` of a linear head, kept factored.

    inputs: (M, F) backbone features h; weight: (D, F) W; bias: (D,) b. Shapes and dtypes read like
    the (M, D) tensor they stand for. The augmented factors and their Gram matrix are computed once
    per object, however many losses read them.
    """

    inputs: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.inputs.shape[0], self.weight.shape[0]))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> torch.dtype:
        return torch.promote_types(self.inputs.dtype, self.weight.dtype)

    def to(self, dtype: torch.dtype) -> "ProjectedFeatures":
        if all(t.dtype == dtype for t in (self.inputs, self.weight, self.bias)):
            return self
        return ProjectedFeatures(self.inputs.to(dtype), self.weight.to(dtype), self.bias.to(dtype))

    def detach(self) -> "ProjectedFeatures":
        return ProjectedFeatures(self.inputs.detach(), self.weight.detach(), self.bias.detach())

    @cached_property
    def augmented(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h~, W~)``: h~ = [h, 1] (M, F + 1) and W~ = [W, b] (D, F + 1), so that p = W~ h~."""
        ones = self.inputs.new_ones((self.inputs.shape[0], 1))
        return torch.cat([self.inputs, ones], dim=1), torch.cat([self.weight, self.bias.unsqueeze(1)], dim=1)

    @cached_property
    def gram(self) -> torch.Tensor:
        """(F + 1, F + 1) ``W~^T W~``."""
        _, w = self.augmented
        return w.T @ w

    def matmul_t(self, other: torch.Tensor) -> torch.Tensor:
        """(M, K) scalar products ``p_i . o_k`` with the rows of ``other`` (K, D)."""
        return self.inputs @ (other @ self.weight).T + (other @ self.bias)

    def squared_norms(self) -> torch.Tensor:
        """(M,) ``||p_i||^2``, through the Gram matrix of W~."""
        h, _ = self.augmented
        return ((h @ self.gram) * h).sum(dim=1)


class ProjectionHeads(nn.Module):
    """features (V, F) -> {"semantic": (V, D), "consistency": (V, D)}, each a linear map with bias."""

    def __init__(self, in_features: int, text_dim: int) -> None:
        super().__init__()
        self.semantic = nn.Linear(in_features, text_dim)
        self.consistency = nn.Linear(in_features, text_dim)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"semantic": self.semantic(features), "consistency": self.consistency(features)}

    def projected(self, features: torch.Tensor) -> dict[str, ProjectedFeatures]:
        """The same outputs for ``features`` (R, F), kept factored (see :class:`ProjectedFeatures`)."""
        return {name: ProjectedFeatures(features, head.weight, head.bias)
                for name, head in (("semantic", self.semantic), ("consistency", self.consistency))}
