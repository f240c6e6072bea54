"""The two linear heads that project backbone features into the CLIP text space (dimension D).

The paper trains its two objectives on point features from two *different* learnable heads:
``semantic`` feeds the semantic consistency loss (Eq. 1) and inference, ``consistency`` feeds the
semantic-guided spatial-temporal consistency loss (Eq. 2-4). Outputs are unnormalised.
"""
from __future__ import annotations

import torch
from torch import nn


class ProjectionHeads(nn.Module):
    """features (V, F) -> {"semantic": (V, D), "consistency": (V, D)}, each a linear map with bias."""

    def __init__(self, in_features: int, text_dim: int) -> None:
        super().__init__()
        self.semantic = nn.Linear(in_features, text_dim)
        self.consistency = nn.Linear(in_features, text_dim)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"semantic": self.semantic(features), "consistency": self.consistency(features)}
