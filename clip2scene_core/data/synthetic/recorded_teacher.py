"""The simulated teacher as an image teacher at inference: MaskCLIP's stand-in on synthetic drives.

The 2D-3D ensemble of `clip2scene_core.segmenter.Segmenter` asks an image teacher for the dense
features of a camera image (``dense_features``) and reads them at the projected points (``sample``),
the interface of `clip2scene_core.clip.teacher.MaskCLIPTeacher`. The synthetic world has no CLIP image
tower; its teacher is a corrupted class map per camera image (``Camera.teacher_labels``) turned into
noisy features in the training text space (``teacher.simulated_pixel_features``).

`RecordedTeacher` keeps those class maps keyed by a hash of the image's pixels, so a node that only
receives images can still find the teacher's view of each one. The feature noise is seeded by the
image, so a live replay and an offline run of the same bag get the same features. A file written by
:meth:`RecordedTeacher.save` is what the node's ``image_teacher`` parameter names.

File layout (numpy ``.npz``): ``format`` (str), ``sigma`` () float, ``text_embeddings`` (C, D) float32
(row c - 1 for teacher class c), ``keys`` (K,) str image hashes, ``map_<k>`` (H, W) uint8 class map of
image k (0 = no teacher class).
"""
from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import numpy as np
import torch

from ...frame import Frame
from .teacher import simulated_pixel_features

logger = logging.getLogger(__name__)

FORMAT = "clip2scene-recorded-teacher/1"


def image_hash(image: np.ndarray) -> str:
    """Hex SHA-256 of an image's shape and pixels: the same picture always gives the same key."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TeacherView:
    """What the teacher knows about one image: its class map (None = an image it never saw)."""

    key: str
    classes: Optional[np.ndarray]  # (H, W) int64 teacher classes, 0 = none


class RecordedTeacher:
    """Replays the simulated teacher's class maps as pixel features (see the module docstring).

    Args:
        maps: image hash -> (H, W) teacher class map (0 = none, c = class c).
        text_embeddings: (C, D) training-class text embeddings, row c - 1 for class c.
        sigma: feature noise scale (the world's ``teacher.feature_noise_sigma``).
    """

    def __init__(self, maps: Mapping[str, np.ndarray], text_embeddings: torch.Tensor, sigma: float) -> None:
        if sigma < 0:
            raise ValueError(f"recorded teacher sigma must be >= 0, got {sigma}")
        self.text_embeddings = torch.as_tensor(text_embeddings, dtype=torch.float32).cpu()
        if self.text_embeddings.ndim != 2:
            raise ValueError(f"text_embeddings must be (C, D), got {tuple(self.text_embeddings.shape)}")
        self.maps = {key: np.asarray(value, dtype=np.int64) for key, value in maps.items()}
        for key, value in self.maps.items():
            if value.ndim != 2 or (value.size and (value.min() < 0 or value.max() > len(self.text_embeddings))):
                raise ValueError(f"teacher map {key[:12]} must be (H, W) with classes in 0..{len(self.text_embeddings)}")
        self.sigma = float(sigma)
        self.unknown_images = 0

    @classmethod
    def from_frames(cls, frames: Iterable[Frame], text_embeddings: torch.Tensor, sigma: float) -> "RecordedTeacher":
        """The teacher maps of every camera image of ``frames`` (synthetic frames: ``teacher_labels``)."""
        maps = {}
        for frame in frames:
            for camera in frame.cameras:
                if camera.teacher_labels is None:
                    raise ValueError(f"frame {frame.frame_id!r} camera {camera.name!r} has no teacher_labels: "
                                     "only synthetic frames carry the simulated teacher")
                maps[image_hash(camera.image)] = camera.teacher_labels
        return cls(maps, text_embeddings, sigma)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the teacher to ``path`` (``.npz``); returns the path."""
        path = Path(path)
        keys = sorted(self.maps)
        arrays = {f"map_{index}": self.maps[key].astype(np.uint8) for index, key in enumerate(keys)}
        with open(path, "wb") as handle:  # a file object keeps numpy from appending ".npz"
            np.savez_compressed(handle, format=np.array(FORMAT), sigma=np.float64(self.sigma),
                                text_embeddings=self.text_embeddings.numpy(), keys=np.array(keys), **arrays)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "RecordedTeacher":
        """Read a teacher written by :meth:`save`; errors name the file and what is wrong with it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recorded teacher file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) != FORMAT:
                    raise ValueError(f"format {str(data['format'])!r}, expected {FORMAT!r}")
                keys = [str(key) for key in data["keys"]]
                maps = {key: data[f"map_{index}"] for index, key in enumerate(keys)}
                return cls(maps, torch.from_numpy(data["text_embeddings"]), float(data["sigma"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a recorded teacher file: {error}") from error

    def dense_features(self, images: np.ndarray) -> TeacherView:
        """The teacher's view of one image, given as a (1, H, W, 3) batch (the ensemble's call)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] != 1:
            raise ValueError(f"the recorded teacher takes one image as (1, H, W, 3), got {images.shape}")
        key = image_hash(images[0])
        classes = self.maps.get(key)
        if classes is None:
            self.unknown_images += 1
            if self.unknown_images == 1:
                logger.warning("recorded teacher: image %s was not recorded; it gives no 2D features "
                               "(the teacher file must come from the same drive)", key[:12])
        elif classes.shape != images.shape[1:3]:
            raise ValueError(f"teacher map of image {key[:12]} is {classes.shape}, image {images.shape[1:3]}")
        return TeacherView(key, classes)

    def sample(self, dense: TeacherView, pixels: Union[torch.Tensor, np.ndarray],
               image_size: tuple[int, int]) -> torch.Tensor:
        """(M, D) float32 features at pixels (u, v) (centres at +0.5); zero where there is no class."""
        pixels = torch.as_tensor(pixels, dtype=torch.float32)
        features = torch.zeros((len(pixels), self.text_embeddings.shape[1]), dtype=torch.float32)
        if dense.classes is None or not len(pixels):
            return features
        height, width = image_size
        rows = pixels[:, 1].floor().long().clamp(0, height - 1).numpy()
        cols = pixels[:, 0].floor().long().clamp(0, width - 1).numpy()
        classes = torch.from_numpy(dense.classes[rows, cols])
        known = classes > 0
        generator = torch.Generator().manual_seed(int(dense.key[:15], 16))
        features[known] = simulated_pixel_features(classes[known], self.text_embeddings, self.sigma, generator)
        return features
