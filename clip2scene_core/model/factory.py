"""Model configuration (plain data stored in checkpoints) -> network, and loading across backends.

Config keys: ``in_channels`` (per-voxel input features), ``text_dim`` (D of the text space),
``widths`` (2L + 1 MinkUNet widths), ``blocks_per_stage``, ``backend`` ("pure" | "minkowski" |
"spconv"). Missing keys take `DEFAULT_MODEL_CONFIG`'s values; unknown keys are an error.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch
from torch import nn

from clip2scene_core.model.heads import ProjectionHeads
from clip2scene_core.model.minkunet import MinkUNet
from clip2scene_core.sparse import SparseTensor
from clip2scene_core.sparse.backends import BACKENDS, conv_backend
from clip2scene_core.sparse.convert import convert_state_dict, kernel_keys

#: The paper's backbone (SPVCNN-style MinkUNet widths, 2 blocks per stage) in CLIP ViT-B/16's text space.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "in_channels": 1,
    "text_dim": 512,
    "widths": [32, 32, 64, 128, 256, 256, 128, 96, 96],
    "blocks_per_stage": 2,
    "backend": "pure",
}

#: A two-level network (~50k parameters, mostly the heads) for tests and smoke runs (MiniLM's 384-d space).
TINY_MODEL_CONFIG: dict[str, Any] = {
    "in_channels": 1,
    "text_dim": 384,
    "widths": [8, 8, 16, 16, 8],
    "blocks_per_stage": 1,
    "backend": "pure",
}


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed with defaults and validated; returns a new plain dict."""
    unknown = sorted(set(config) - set(DEFAULT_MODEL_CONFIG))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; known: {sorted(DEFAULT_MODEL_CONFIG)}")
    resolved = copy.deepcopy(DEFAULT_MODEL_CONFIG)
    resolved.update(copy.deepcopy(dict(config)))
    for key in ("in_channels", "text_dim", "blocks_per_stage"):
        value = resolved[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model config {key!r} must be a positive int, got {value!r}")
    widths = resolved["widths"]
    if not isinstance(widths, (list, tuple)) or not all(isinstance(w, int) and w >= 1 for w in widths):
        raise ValueError(f"model config 'widths' must be a list of positive ints, got {widths!r}")
    resolved["widths"] = list(widths)
    if resolved["backend"] not in BACKENDS:
        raise ValueError(f"model config 'backend' must be one of {list(BACKENDS)}, got {resolved['backend']!r}")
    return resolved


class SceneNetwork(nn.Module):
    """MinkUNet backbone + projection heads.

    forward(SparseTensor (V, in_channels) at stride 1) -> dict with ``semantic`` (V, D),
    ``consistency`` (V, D) (unnormalised) and ``features`` (V, F) backbone features, rows in the
    input's voxel order (or the heads at chosen rows, factored: see ``forward``). ``config`` is the
    resolved config dict to store in checkpoints.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = resolve_config(config)
        levels = len(self.config["widths"]) // 2
        backend = conv_backend(self.config["backend"], max_stride=2**levels)
        self.backbone = MinkUNet(self.config["in_channels"], self.config["widths"],
                                 self.config["blocks_per_stage"], backend)
        self.heads = ProjectionHeads(self.backbone.out_channels, self.config["text_dim"])

    def forward(self, x: SparseTensor, rows: Optional[torch.Tensor] = None) -> dict[str, Any]:
        """rows: optional (R,) int64 voxel rows; the heads are then evaluated there only and kept
        factored (``heads.ProjectedFeatures`` standing for (R, D)). Pretraining needs the D-dimensional
        (384-512) embeddings only at paired points, and formed on every voxel they cost more time and
        memory than the whole backbone."""
        if x.num_channels != self.config["in_channels"]:
            raise ValueError(f"model expects {self.config['in_channels']} input channels, got {x.num_channels}")
        features = self.backbone(x).feats
        heads = self.heads(features) if rows is None else self.heads.projected(features.index_select(0, rows))
        return {**heads, "features": features}


def build_model(config: Mapping[str, Any]) -> SceneNetwork:
    """The network described by ``config`` (see module docstring), randomly initialised."""
    return SceneNetwork(config)


def load_weights(model: SceneNetwork, state_dict: Mapping[str, torch.Tensor], source_backend: str) -> None:
    """Load a state dict saved by a model of backend ``source_backend`` into ``model`` (any backend).

    Sparse kernels are converted to ``model``'s layout; everything else loads as is (strict).
    """
    target = model.config["backend"]
    if source_backend != target:
        state_dict = convert_state_dict(state_dict, kernel_keys(model), source_backend, target)
    model.load_state_dict(state_dict)


def restore_model(model_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor],
                  backend: str | None = None) -> SceneNetwork:
    """The network a checkpoint describes, with its weights, run by ``backend`` (None: the one it was
    trained with). Kernels are converted when the backends differ, so a checkpoint trained with the pure
    backend runs with spconv or MinkowskiEngine, and back."""
    config = resolve_config(model_config)
    model = build_model(dict(config, backend=backend or config["backend"]))
    load_weights(model, state_dict, config["backend"])
    return model
