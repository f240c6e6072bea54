"""The 3D network: MinkUNet backbone + CLIP-space projection heads, built from a config dict."""
from clip2scene_core.model.factory import (
    DEFAULT_MODEL_CONFIG,
    TINY_MODEL_CONFIG,
    SceneNetwork,
    build_model,
    load_weights,
    resolve_config,
    restore_model,
)
from clip2scene_core.model.heads import ProjectionHeads
from clip2scene_core.model.minkunet import MinkUNet

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "TINY_MODEL_CONFIG",
    "MinkUNet",
    "ProjectionHeads",
    "SceneNetwork",
    "build_model",
    "load_weights",
    "resolve_config",
    "restore_model",
]
