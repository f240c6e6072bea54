"""Precomputed MaskCLIP patch-grid features on disk, so pretraining epochs do not re-run CLIP.

A ViT-B-16 dense pass costs ~60 GFLOP per 224x416 image; on real datasets the
features are computed once per image and stored as fp16 ``(D, h, w)`` patch grids (about 0.4 MB for
512 x 14 x 26). Sampling the cached grid with :meth:`MaskCLIPTeacher.sample` gives the same pixel
features as a live teacher, up to fp16 rounding.

Layout: ``<root>/<teacher hash>/teacher.json`` (the teacher spec) and one ``<key hash>.pt`` per image.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from clip2scene_core.atomic_file import torch_save_atomically
from clip2scene_core.clip.teacher import MaskCLIPTeacher
from clip2scene_core.frame import Frame

logger = logging.getLogger(__name__)


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


class DenseFeatureCache:
    """fp16 patch-grid features of one teacher configuration, keyed by an image key string.

    Args:
        root: cache folder (shared by teachers; each spec gets its own sub-folder).
        teacher_spec: :attr:`MaskCLIPTeacher.spec` of the teacher whose features are stored.
    """

    def __init__(self, root: Union[str, Path], teacher_spec: dict) -> None:
        spec_text = json.dumps(teacher_spec, sort_keys=True)
        self.folder = Path(root).expanduser() / _digest(spec_text, 16)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "teacher.json").write_text(spec_text + "\n", encoding="utf-8")

    def path(self, key: str) -> Path:
        """File holding the features of image ``key`` (e.g. ``"<frame_id>/<camera>"``)."""
        return self.folder / f"{_digest(key, 32)}.pt"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> Optional[Tensor]:
        """(D, h, w) float16 features of ``key``, or None when not cached."""
        path = self.path(key)
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)["features"]

    def put(self, key: str, features: Tensor) -> None:
        """Store (D, h, w) features of ``key`` as fp16."""
        if features.ndim != 3:
            raise ValueError(f"features must be (D, h, w), got {tuple(features.shape)}")
        torch_save_atomically(
            {"key": key, "features": features.detach().to("cpu", torch.float16).contiguous()}, self.path(key))


def camera_images(frames: Iterable[Frame]) -> Iterator[tuple[str, np.ndarray]]:
    """(key, image) for every camera of every frame; key = ``"<frame_id>/<camera name>"``."""
    for index, frame in enumerate(frames):
        frame_key = frame.frame_id or str(index)
        for camera in frame.cameras:
            yield f"{frame_key}/{camera.name}", camera.image


def precompute_dense_features(teacher: MaskCLIPTeacher, images: Iterable[tuple[str, np.ndarray]],
                              cache: DenseFeatureCache, batch_size: int = 8) -> int:
    """Compute and store dense features of every (key, (H, W, 3) uint8 image) not yet cached.

    Images of the same size are batched ``batch_size`` at a time. Returns how many were computed.
    """
    pending: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = defaultdict(list)
    computed = 0

    def flush(shape: tuple[int, ...]) -> int:
        batch = pending.pop(shape)
        dense = teacher.dense_features([image for _, image in batch])
        for (key, _), features in zip(batch, dense):
            cache.put(key, features)
        return len(batch)

    for key, image in tqdm(images, desc="MaskCLIP features", unit="image"):
        if key in cache:
            continue
        shape = tuple(np.shape(image))
        pending[shape].append((key, image))
        if len(pending[shape]) >= batch_size:
            computed += flush(shape)
    for shape in list(pending):
        computed += flush(shape)
    logger.info("precomputed dense features of %d images into %s", computed, cache.folder)
    return computed
