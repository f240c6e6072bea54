"""Frames -> training batches: network input (each sweep its own sample), point-pixel pairs, labels.

The 3D network sees every sweep as its own sample in its own LiDAR frame, exactly as at inference
(``inputs.point_features`` + ``inputs.sparse_input``); the pairs index those points and carry the
teacher's pixel features and the grid cell of the point in the *stitched* cloud (Eq. 2-4).

Reproducibility: an epoch's batch order depends only on ``(seed, epoch)`` (``DistributedSampler``), and
all randomness inside a batch (augmentation, pair subsampling, teacher noise) on a generator seeded by
``(seed, epoch, step, rank)`` (:func:`step_generator`). A run resumed at any step therefore sees exactly
the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Callable, Generic, Optional, Sequence, TypeVar, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from clip2scene_core.frame import Frame
from clip2scene_core.inputs import point_features
from clip2scene_core.train.losses import grid_cell_ids
from clip2scene_core.train.pairs import FramePairs, PairingOptions, PixelTeacher, pair_points_with_cameras

BatchT = TypeVar("BatchT")


@dataclass(frozen=True)
class AugmentOptions:
    """Random rigid + scale augmentation of each network sample (pairs are unaffected: they are
    computed on the original coordinates). rotate: uniform yaw; flip: mirror x and/or y with p = 0.5;
    scale: (low, high) uniform factor."""

    rotate: bool = True
    flip: bool = True
    scale: tuple[float, float] = (0.95, 1.05)

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"augment scale must be (low, high) with 0 < low <= high, got {self.scale}")


def augment_points(points: np.ndarray, options: Optional[AugmentOptions], generator: torch.Generator) -> np.ndarray:
    """Rotate about z, mirror and scale one sample's points.

    Args:
        points: (N, 3) float32, metres, the sample's own LiDAR frame.
        options: None = no augmentation.
        generator: CPU torch generator (the step's).
    Returns:
        (N, 3) float32.
    """
    if options is None:
        return points
    draws = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    angle = 2.0 * math.pi * draws[0] if options.rotate else 0.0
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    if options.flip:
        matrix = matrix @ np.diag([-1.0 if draws[1] < 0.5 else 1.0, -1.0 if draws[2] < 0.5 else 1.0, 1.0])
    low, high = options.scale
    matrix = matrix * (low + (high - low) * draws[3])
    return (points.astype(np.float64) @ matrix.T).astype(np.float32)


def batch_to(batch: BatchT, device: torch.device) -> BatchT:
    """A copy of a batch dataclass with every tensor field moved to ``device``."""
    values = {f.name: getattr(batch, f.name) for f in fields(batch)}
    return type(batch)(**{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
                          for k, v in values.items()})


@dataclass
class PretrainBatch:
    """One pretraining step's data.

    points: (N, 3) float32 network-input coordinates (each sweep in its own LiDAR frame, augmented);
    features: (N, F) float32 per-point input features; sample: (N,) int64 network sample of each point
    (frame b, sweep k); labels: (N,) int64 ground truth where known (0 = ignore), for diagnostics only;
    pair_point: (M,) int64 index into the N points; pixel_features: (M, D) float32 teacher features;
    cell_ids: (M,) int64 grid cell of the pair's point in its frame's stitched cloud;
    pair_source: (M,) int64 sweep of the pair's point (0 = keyframe); num_frames: B.
    """

    points: Tensor
    features: Tensor
    sample: Tensor
    labels: Tensor
    pair_point: Tensor
    pixel_features: Tensor
    cell_ids: Tensor
    pair_source: Tensor
    num_frames: int


@dataclass
class LabelledBatch:
    """One fine-tuning step's data: keyframes only, one network sample per frame.

    points: (N, 3) float32 (augmented); features: (N, F) float32; sample: (N,) int64; labels: (N,) int64
    (0 = ignore).
    """

    points: Tensor
    features: Tensor
    sample: Tensor
    labels: Tensor


def sweep_samples(frame: Frame, num_sweeps: int) -> list[tuple[np.ndarray, Optional[np.ndarray],
                                                               Optional[np.ndarray], Optional[np.ndarray]]]:
    """(points, intensity, colors, labels) of the keyframe and its first ``num_sweeps - 1`` sweeps,
    each in its own LiDAR frame (the order ``geometry.register_sweeps`` stitches them in)."""
    samples = [(frame.points, frame.intensity, frame.colors, frame.labels)]
    for sweep in frame.sweeps[: num_sweeps - 1]:
        samples.append((sweep.points, sweep.intensity, None, sweep.labels))
    return samples


@dataclass(frozen=True)
class PreparedFrame:
    """What a pretraining sample keeps between epochs: its frame, its point-pixel pairs (with each
    pair's grid cell, ``FramePairs.cell_ids``) and each sweep's network input features.

    Pairing registers the sweeps and z-buffers them into every camera; the grid cells need a
    ``unique`` over the stitched points: both are deterministic, so an in-memory training split
    computes them once (:meth:`PretrainCollator.prepare`) instead of once per epoch.
    """

    frame: Frame
    pairs: FramePairs
    features: tuple[np.ndarray, ...]


def dense_cell_ids(frame_cells: Sequence[np.ndarray]) -> Tensor:
    """Batch-wide dense cell ids from per-frame cell ids (each ordered like the cells they name).

    Equals ``grid_cell_ids(points, cell_size, frame_of_pair)`` over the batch's pairs: cells are
    ordered by frame first, then by the frame's own order, and numbered densely.
    """
    offset, shifted = 0, []
    for cells in frame_cells:
        shifted.append(cells + offset)
        offset += int(cells.max(initial=-1)) + 1
    return torch.unique(torch.from_numpy(np.concatenate(shifted)), return_inverse=True)[1]


@dataclass(frozen=True)
class PretrainCollator:
    """Builds a :class:`PretrainBatch` from frames (runs in DataLoader workers; picklable).

    Args:
        teacher: supplies pixel features of the pairs.
        pairing: sweep stitching and projection options.
        input_features: per-point network input feature names (``inputs.FEATURE_WIDTHS``).
        cell_size: grid cell edge of Eq. 2-4, metres.
        augment: network-input augmentation (None = off).
        max_pairs_per_frame: random subset of at most this many pairs per frame (None = all).
    """

    teacher: PixelTeacher
    pairing: PairingOptions
    input_features: tuple[str, ...]
    cell_size: float = 0.1
    augment: Optional[AugmentOptions] = None
    max_pairs_per_frame: Optional[int] = None

    def prepare(self, frame: Frame) -> PreparedFrame:
        """The epoch-independent part of a sample (see :class:`PreparedFrame`)."""
        pairs = pair_points_with_cameras(frame, self.pairing)
        cells = grid_cell_ids(torch.from_numpy(pairs.points[pairs.point_index]), self.cell_size).numpy()
        pairs = dataclasses.replace(pairs, cell_ids=cells)
        features = tuple(point_features(self.input_features, len(xyz), intensity, colors)
                         for xyz, intensity, colors, _ in sweep_samples(frame, self.pairing.num_sweeps))
        return PreparedFrame(frame, pairs, features)

    def __call__(self, frames: Sequence[Union[Frame, PreparedFrame]], frame_indices: Sequence[int],
                 generator: torch.Generator) -> PretrainBatch:
        points, features, sample, labels = [], [], [], []
        pair_point, frame_cells, pair_source, pixel_features = [], [], [], []
        offset = 0
        for item, frame_index in zip(frames, frame_indices):
            prepared = item if isinstance(item, PreparedFrame) else self.prepare(item)
            frame, pairs = prepared.frame, prepared.pairs
            if self.max_pairs_per_frame is not None and len(pairs) > self.max_pairs_per_frame:
                chosen = torch.randperm(len(pairs), generator=generator)[: self.max_pairs_per_frame]
                pairs = pairs.select(np.sort(chosen.numpy()))
            pairs, pixel = self.teacher.pixel_features(frame, frame_index, pairs, generator)
            used_sweeps = int(pairs.source.max(initial=0)) + 1  # register_sweeps may skip sweeps older than S
            for (xyz, _, _, truth), sweep_features in zip(sweep_samples(frame, used_sweeps), prepared.features):
                points.append(augment_points(xyz, self.augment, generator))
                features.append(sweep_features)
                sample.append(np.full(len(xyz), len(sample), dtype=np.int64))
                labels.append(np.zeros(len(xyz), np.int64) if truth is None else truth)
            pair_point.append(pairs.point_index + offset)
            frame_cells.append(pairs.cell_ids)
            pair_source.append(pairs.source[pairs.point_index])
            pixel_features.append(pixel)
            offset += len(pairs.points)
        return PretrainBatch(
            points=torch.from_numpy(np.concatenate(points)),
            features=torch.from_numpy(np.concatenate(features)),
            sample=torch.from_numpy(np.concatenate(sample)),
            labels=torch.from_numpy(np.concatenate(labels)),
            pair_point=torch.from_numpy(np.concatenate(pair_point)),
            pixel_features=torch.cat(pixel_features).float(),
            cell_ids=dense_cell_ids(frame_cells),
            pair_source=torch.from_numpy(np.concatenate(pair_source)),
            num_frames=len(frames),
        )


@dataclass(frozen=True)
class LabelledCollator:
    """Builds a :class:`LabelledBatch` from labelled keyframes (fine-tuning)."""

    input_features: tuple[str, ...]
    augment: Optional[AugmentOptions] = None

    def __call__(self, frames: Sequence[Frame], frame_indices: Sequence[int],
                 generator: torch.Generator) -> LabelledBatch:
        points, features, sample, labels = [], [], [], []
        for b, frame in enumerate(frames):
            if frame.labels is None:
                raise ValueError(f"frame {frame.frame_id or frame_indices[b]!r} has no labels to fine-tune on")
            points.append(augment_points(frame.points, self.augment, generator))
            features.append(point_features(self.input_features, frame.num_points, frame.intensity, frame.colors))
            sample.append(np.full(frame.num_points, b, dtype=np.int64))
            labels.append(frame.labels)
        return LabelledBatch(*(torch.from_numpy(np.concatenate(parts)) for parts in (points, features, sample, labels)))


#: Independent random streams of one step: batch preparation (per rank) and the S3 coin (shared).
DATA_STREAM, S3_STREAM = 0, 1


def step_seed(seed: int, epoch: int, step: int, rank: int = 0, stream: int = DATA_STREAM) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, step, rank, stream)``."""
    state = np.random.SeedSequence([seed, epoch, step, rank, stream]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def step_generator(seed: int, epoch: int, step: int, rank: int = 0, stream: int = DATA_STREAM) -> torch.Generator:
    """CPU generator seeded by :func:`step_seed`."""
    return torch.Generator().manual_seed(step_seed(seed, epoch, step, rank, stream))


def epoch_batches(num_frames: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, shuffle: bool = True) -> list[list[int]]:
    """This process's batches of dataset positions for one epoch.

    The order comes from ``DistributedSampler`` (shuffled by ``seed + epoch``, split across ranks);
    incomplete final batches are dropped so every rank takes the same number of steps.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sampler = DistributedSampler(range(num_frames), num_replicas=world_size, rank=rank, shuffle=shuffle,
                                 seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    order = list(sampler)
    steps = len(order) // batch_size
    if steps == 0:
        raise ValueError(f"{num_frames} frames give no full batch of {batch_size} per process "
                         f"({world_size} processes); lower batch_size")
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


class EpochBatches(Dataset, Generic[BatchT]):
    """The batches of one epoch from ``first_step`` on, built on demand (DataLoader workers run it).

    Item ``i`` is ``collate(frames, positions, step_generator(seed, epoch, first_step + i, rank))`` for
    the ``first_step + i``-th batch of :func:`epoch_batches` (lists of positions in ``frames``).
    """

    def __init__(self, frames: Sequence[Frame], batches: Sequence[Sequence[int]],
                 collate: Callable[[Sequence[Frame], Sequence[int], torch.Generator], BatchT],
                 seed: int, epoch: int, rank: int = 0, first_step: int = 0) -> None:
        self.frames = frames
        self.batches = list(batches)
        self.collate = collate
        self.seed, self.epoch, self.rank, self.first_step = seed, epoch, rank, first_step

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.first_step)

    def __getitem__(self, item: int) -> BatchT:
        step = self.first_step + item
        positions = list(self.batches[step])
        return self.collate([self.frames[i] for i in positions], positions,
                            step_generator(self.seed, self.epoch, step, self.rank))


def _as_is(item):
    return item


def batch_loader(batches: EpochBatches, workers: int) -> DataLoader:
    """Iterate ``batches`` in order, prepared by ``workers`` background processes (0 = inline)."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is,
                      persistent_workers=False, prefetch_factor=2 if workers else None)
