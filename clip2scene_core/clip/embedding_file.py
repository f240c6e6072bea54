"""The class text-embedding file written by ``clip2scene encode-text``.

``{"format": "clip2scene-text/1", "embeddings": (C, D) float32, "class_names": [C names],
"text_encoder": {kind, name, weights}, "templates": [...]}``, a plain ``torch.save`` that loads with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch
from torch import Tensor

from clip2scene_core.atomic_file import torch_save_atomically

TEXT_EMBEDDING_FORMAT = "clip2scene-text/1"


def save_text_embeddings(path: Union[str, Path], embeddings: Tensor, class_names: Sequence[str],
                         text_encoder: dict, templates: Sequence[str]) -> Path:
    """Write class embeddings (C, D) with their class names, encoder spec and templates."""
    if embeddings.ndim != 2 or embeddings.shape[0] != len(class_names):
        raise ValueError(
            f"embeddings must be (C, D) with C = {len(class_names)} classes, got {tuple(embeddings.shape)}"
        )
    return torch_save_atomically({
        "format": TEXT_EMBEDDING_FORMAT,
        "embeddings": embeddings.detach().float().cpu().contiguous(),
        "class_names": list(class_names),
        "text_encoder": dict(text_encoder),
        "templates": list(templates),
    }, Path(path).expanduser())


def load_text_embeddings(path: Union[str, Path]) -> dict:
    """Read a file written by :func:`save_text_embeddings`; checks the format and shapes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"text embedding file not found: {path}")
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or content.get("format") != TEXT_EMBEDDING_FORMAT:
        raise ValueError(f"{path} is not a {TEXT_EMBEDDING_FORMAT} text embedding file")
    if content["embeddings"].shape[0] != len(content["class_names"]):
        raise ValueError(f"{path}: {content['embeddings'].shape[0]} embeddings for "
                         f"{len(content['class_names'])} class names")
    return content
