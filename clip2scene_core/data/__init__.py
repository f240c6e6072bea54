"""Datasets as ``Sequence[Frame]`` with a ``class_names`` attribute, opened by kind.

Loaders are imported only when their kind is opened, so e.g. the nuScenes devkit loads only for
nuScenes. The small file readers below are shared by the loaders so every one of them names the
missing or malformed file in its error.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..frame import Frame

# kind -> (module, class); every class takes ``root`` first and keyword options after it.
DATASETS: dict[str, tuple[str, str]] = {
    "synthetic": ("clip2scene_core.data.synthetic.dataset", "SyntheticDataset"),
    "nuscenes": ("clip2scene_core.data.nuscenes", "NuScenesDataset"),
    "semantickitti": ("clip2scene_core.data.semantickitti", "SemanticKittiDataset"),
    "scannet": ("clip2scene_core.data.scannet", "ScanNetDataset"),
}


def open_dataset(kind: str, root: Optional[Union[str, Path]] = None, **options) -> Sequence[Frame]:
    """Open a dataset of ``kind`` ("synthetic", "nuscenes", "semantickitti", "scannet") at ``root``.

    ``options`` go to the loader's constructor. Only the synthetic world works without ``root``
    (it is then generated procedurally).
    """
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {sorted(DATASETS)}")
    if root is None and kind != "synthetic":
        raise ValueError(f"dataset {kind!r} needs a root folder")
    module_name, class_name = DATASETS[kind]
    loader = getattr(importlib.import_module(module_name), class_name)
    return loader(root, **options)


def require_file(path: Union[str, Path], what: str) -> Path:
    """Return ``path`` as a Path, or raise FileNotFoundError naming it and what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_records(path: Union[str, Path], dtype, width: int, what: str) -> np.ndarray:
    """Read a headerless little-endian binary file of fixed-width records -> (N, width) array.

    Raises FileNotFoundError (missing) or ValueError (size not a whole number of records), naming
    the file.
    """
    path = require_file(path, what)
    data = np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<"))
    if data.size % width:
        raise ValueError(f"{what} {path} is malformed: {data.size} values is not a multiple of {width}")
    return data.reshape(-1, width)


def load_rgb_image(path: Union[str, Path], what: str = "image") -> np.ndarray:
    """Load an image file as (H, W, 3) uint8 RGB; names the file when it is missing or unreadable."""
    path = require_file(path, what)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ValueError(f"{what} {path} is not a readable image: {error}") from error
