"""Point-pixel pairs: a frame's K registered sweeps seen by its keyframe cameras, with teacher features.

CLIP2Scene (section 3.3) stitches the keyframe and its K-1 earlier sweeps into the keyframe's LiDAR
frame and projects the stitched cloud into the keyframe's images; every projected point gives a triple
(pixel feature x, point p, pseudo-text t^1). :func:`pair_points_with_cameras` does the geometry;
a :class:`PixelTeacher` supplies ``x`` for each pair:

* :class:`SimulatedTeacher` (synthetic world): the camera's simulated-teacher class map
  (``Camera.teacher_labels``) read at the pair's pixel, turned into a feature in the training text space
  by ``data.synthetic.teacher.simulated_pixel_features`` (``normalise(t_c + sigma * noise)``).
* :class:`MaskCLIPPixelTeacher` (real data): MaskCLIP patch-grid features read from the precomputed
  fp16 cache (``clip.feature_cache``) and sampled bilinearly at the pair's pixel.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from clip2scene_core.clip.feature_cache import DenseFeatureCache, precompute_dense_features
from clip2scene_core.clip.teacher import MaskCLIPTeacher
from clip2scene_core.frame import Frame
from clip2scene_core.geometry import project_points_to_image, register_sweeps

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairingOptions:
    """How sweeps are stitched and projected.

    num_sweeps: K, sweeps per frame counting the keyframe (paper: 3); max_sweep_seconds: S, older
    sweeps are skipped; min_depth: metres in front of the camera; occlusion: z-buffer test with
    ``occlusion_tolerance`` metres over ``occlusion_block``-pixel blocks.
    """

    num_sweeps: int = 3
    max_sweep_seconds: float = 1.0
    min_depth: float = 1.0
    occlusion: bool = True
    occlusion_tolerance: float = 0.5
    occlusion_block: int = 4

    def __post_init__(self) -> None:
        if self.num_sweeps < 1:
            raise ValueError(f"num_sweeps counts the keyframe and must be >= 1, got {self.num_sweeps}")
        if self.max_sweep_seconds < 0:
            raise ValueError(f"max_sweep_seconds must be >= 0, got {self.max_sweep_seconds}")


@dataclass
class FramePairs:
    """The stitched cloud of one frame and its point-pixel pairs.

    points: (N', 3) float32, metres, keyframe LiDAR frame (keyframe points first, then each sweep);
    source: (N',) int64, 0 = keyframe, k = ``frame.sweeps[k - 1]``;
    point_index: (M,) int64 into ``points``; camera_index: (M,) int64 into ``frame.cameras``;
    pixels: (M, 2) float32 (u = column, v = row, pixel centres at +0.5);
    cell_ids: optional (M,) int64 grid cell of each pair's point (Eq. 2-4), set by the training
    batcher's frame cache and carried through :meth:`select`.
    """

    points: np.ndarray
    source: np.ndarray
    point_index: np.ndarray
    camera_index: np.ndarray
    pixels: np.ndarray
    cell_ids: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(len(self.point_index))

    def select(self, keep: np.ndarray) -> "FramePairs":
        """The same cloud with only the pairs where ``keep`` (M,) bool (or index array) holds."""
        return FramePairs(self.points, self.source, self.point_index[keep], self.camera_index[keep],
                          self.pixels[keep], None if self.cell_ids is None else self.cell_ids[keep])

    def pixel_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer (rows, cols), each (M,) int64, of the pixels the pairs fall in."""
        return (np.floor(self.pixels[:, 1]).astype(np.int64), np.floor(self.pixels[:, 0]).astype(np.int64))


def pair_points_with_cameras(frame: Frame, options: PairingOptions = PairingOptions()) -> FramePairs:
    """Register ``options.num_sweeps`` sweeps into the keyframe and project them into its cameras.

    Every camera is tested on its own, so a point seen by two overlapping cameras gives two pairs.
    The z-buffer runs on the whole stitched cloud, so a sweep's points behind a keyframe surface drop.
    """
    points, source = register_sweeps(frame, options.num_sweeps, options.max_sweep_seconds)
    point_index, camera_index, pixels = [], [], []
    for index, camera in enumerate(frame.cameras):
        projection = project_points_to_image(
            points, camera.K, camera.lidar_to_camera, (camera.height, camera.width),
            min_depth=options.min_depth, occlusion=options.occlusion,
            occlusion_tolerance=options.occlusion_tolerance, occlusion_block=options.occlusion_block,
        )
        point_index.append(projection.indices)
        camera_index.append(np.full(len(projection), index, dtype=np.int64))
        pixels.append(projection.pixels)
    if not frame.cameras:
        return FramePairs(points, source, np.zeros(0, np.int64), np.zeros(0, np.int64),
                          np.zeros((0, 2), np.float32))
    return FramePairs(points, source, np.concatenate(point_index), np.concatenate(camera_index),
                      np.concatenate(pixels).astype(np.float32, copy=False))


class PixelTeacher(abc.ABC):
    """Supplies the CLIP pixel feature ``x`` of every point-pixel pair."""

    #: Dimension D of the features (the training text space).
    dim: int

    @abc.abstractmethod
    def pixel_features(self, frame: Frame, frame_index: int, pairs: FramePairs,
                       generator: torch.Generator) -> tuple[FramePairs, Tensor]:
        """Features of the pairs of ``frame``.

        Args:
            frame: the keyframe the pairs belong to.
            frame_index: its index in the dataset (a cache key when the frame has no ``frame_id``).
            pairs: from :func:`pair_points_with_cameras`.
            generator: CPU generator for any randomness (seeded per training step, so resumable).
        Returns:
            ``(kept pairs, (M', D) float32 features)``: pairs the teacher has no feature for are dropped.
        """

    def prepare(self, frames: Sequence[Frame], indices: Sequence[int]) -> None:
        """One-off work before training on ``frames[i] for i in indices`` (e.g. filling a feature cache)."""


class SimulatedTeacher(PixelTeacher):
    """The synthetic world's simulated 2D teacher (``data/synthetic/teacher.py`` describes its errors).

    The world renders each camera's corrupted class map (region confusions, systematic bias, patch-grid
    boundary bleed) as ``Camera.teacher_labels``; here each pair's class becomes a feature
    ``normalise(t_c + sigma * noise)`` in the training text space. Pixels whose teacher class is 0
    (nothing there) give no pair.

    Args:
        text_embeddings: (C, D) class text embeddings, label order (label c is row c - 1).
        sigma: feature noise scale.
    """

    def __init__(self, text_embeddings: Tensor, sigma: float) -> None:
        if sigma < 0:
            raise ValueError(f"simulated teacher sigma must be >= 0, got {sigma}")
        self.text_embeddings = text_embeddings.float().cpu()
        self.sigma = float(sigma)
        self.dim = int(text_embeddings.shape[1])

    def pair_classes(self, frame: Frame, pairs: FramePairs) -> np.ndarray:
        """(M,) int64 simulated-teacher class (label space, 0 = none) at each pair's pixel."""
        rows, cols = pairs.pixel_rows_cols()
        classes = np.zeros(len(pairs), dtype=np.int64)
        for index, camera in enumerate(frame.cameras):
            if camera.teacher_labels is None:
                raise ValueError(f"frame {frame.frame_id!r} camera {camera.name!r} has no teacher_labels: "
                                 "the simulated teacher needs synthetic frames")
            mine = pairs.camera_index == index
            classes[mine] = camera.teacher_labels[rows[mine], cols[mine]]
        return classes

    def pixel_features(self, frame: Frame, frame_index: int, pairs: FramePairs,
                       generator: torch.Generator) -> tuple[FramePairs, Tensor]:
        from clip2scene_core.data.synthetic.teacher import simulated_pixel_features

        classes = self.pair_classes(frame, pairs)
        if len(classes) and classes.max() > len(self.text_embeddings):
            raise ValueError(f"teacher class {int(classes.max())} exceeds the {len(self.text_embeddings)} "
                             "text embeddings: the class list does not match the dataset's")
        keep = classes > 0
        features = simulated_pixel_features(torch.from_numpy(classes[keep]), self.text_embeddings,
                                            self.sigma, generator)
        return pairs.select(keep), features.float()


def image_key(frame: Frame, frame_index: int, camera_name: str) -> str:
    """Feature-cache key of one camera image: ``"<frame_id or dataset index>/<camera name>"``."""
    return f"{frame.frame_id or frame_index}/{camera_name}"


class MaskCLIPPixelTeacher(PixelTeacher):
    """MaskCLIP pixel features read from the precomputed patch-grid cache.

    Args:
        cache: fp16 patch-grid features of this teacher configuration.
        dim: feature dimension D (CLIP's joint embedding size).
        teacher: the live teacher, used by :meth:`prepare` to fill the cache; None = cache only.
    """

    def __init__(self, cache: DenseFeatureCache, dim: int, teacher: Optional[MaskCLIPTeacher] = None) -> None:
        self.cache = cache
        self.dim = int(dim)
        self.teacher = teacher

    def prepare(self, frames: Sequence[Frame], indices: Sequence[int]) -> None:
        """Compute the features of every camera image not yet cached (one pass of the teacher)."""
        if self.teacher is None:
            raise ValueError("MaskCLIPPixelTeacher.prepare needs the live teacher to fill the cache")
        images = ((image_key(frames[i], i, camera.name), camera.image)
                  for i in indices for camera in frames[i].cameras)
        precompute_dense_features(self.teacher, images, self.cache)

    def pixel_features(self, frame: Frame, frame_index: int, pairs: FramePairs,
                       generator: torch.Generator) -> tuple[FramePairs, Tensor]:
        features = torch.zeros((len(pairs), self.dim), dtype=torch.float32)
        for index, camera in enumerate(frame.cameras):
            mine = np.flatnonzero(pairs.camera_index == index)
            if not len(mine):
                continue
            key = image_key(frame, frame_index, camera.name)
            dense = self.cache.get(key)
            if dense is None:
                raise FileNotFoundError(f"no cached MaskCLIP features for image {key!r} in {self.cache.folder}; "
                                        "run the precompute step (teacher.prepare) first")
            features[torch.from_numpy(mine)] = MaskCLIPTeacher.sample(
                dense.float(), pairs.pixels[mine], (camera.height, camera.width))
        return pairs, features
