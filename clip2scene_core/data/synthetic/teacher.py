"""A simulated 2-D teacher that makes MaskCLIP's kinds of error on synthetic camera views.

From a view's true per-pixel labels it emits a corrupted class map (``Camera.teacher_labels``) by

1. *region confusions* (``confuse_regions``): each region - a whole object, or a world-space patch of
   a large surface such as road or facade - is relabelled to each of its class's confusable partners
   with probability ``confusion_probability`` (so it keeps its true class with probability
   ``1 - n * confusion_probability`` for n partners: at the default 0.3 the true class stays the most
   frequent teacher label of every class, as MaskCLIP's errors are biased rather than exact ties),
   decided independently per frame and per camera, so views and sweeps disagree the way separate
   MaskCLIP passes do;
2. *systematic bias* (``apply_systematic_bias``): a fixed spatial subset of some classes (default:
   30 % of the terrain, by world-space cell) is always seen as another class, in every frame and view;
   no amount of multi-view consistency can undo it;
3. *boundary bleed* (``patch_vote_labels``): labels are decided on MaskCLIP's 16 px patch grid from
   per-patch class votes, whose one-hot maps are bilinearly upsampled before the argmax, so labels
   leak across object edges and thin objects vanish;

and (4) feature noise, applied later in whichever text space training uses, by
``simulated_pixel_features``: x = normalise(t_c + sigma * n), n ~ N(0, I / D).

All knobs live in ``TeacherConfig``; the defaults give about 43 % pixel accuracy, and as much at the
LiDAR points the cameras see (see ``test/test_synthetic.py`` and ``bench/synthetic.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .scene import hash_unit


@dataclass(frozen=True)
class TeacherConfig:
    """Knobs of the simulated teacher (class names refer to the world's class list)."""

    confusion_probability: float = 0.3  # per confusable partner, region, frame and camera
    confusions: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("road", ("sidewalk",)),
        ("sidewalk", ("road", "terrain")),
        ("terrain", ("vegetation", "sidewalk")),
        ("building", ("vegetation", "truck")),
        ("vegetation", ("terrain", "building")),
        ("pole", ("pedestrian", "building")),
        ("car", ("truck",)),
        ("truck", ("car",)),
        ("pedestrian", ("pole",)),
        ("traffic cone", ("pole", "pedestrian")),
    )
    # Classes split into world-space patches for confusions (all others: one region per object).
    surface_classes: tuple[str, ...] = ("road", "sidewalk", "terrain", "building")
    surface_patch_m: float = 4.0
    systematic: tuple[tuple[str, str, float], ...] = (("terrain", "vegetation", 0.3),)
    systematic_cell_m: float = 3.0
    patch_size_px: int = 16  # 1 disables boundary bleed
    unlabelled_as: str = "building"  # the teacher's label where no patch has a vote (sky)
    # For simulated_pixel_features: 3 gives cos(x, t_c) ~ 0.3, like MaskCLIP's pixel-text
    # similarities, and flips < 1 % of argmax labels among the 10 classes' MiniLM embeddings.
    feature_noise_sigma: float = 3.0

    def __post_init__(self) -> None:
        most = max((len(partners) for _, partners in self.confusions), default=0)
        if not 0.0 <= self.confusion_probability * most <= 1.0:
            raise ValueError(f"confusion_probability {self.confusion_probability} per partner must lie in "
                             f"[0, 1/{most}]: a class has {most} confusable partners")


def _label_of(name: str, class_names: Sequence[str]) -> int:
    if name not in class_names:
        raise ValueError(f"teacher config names unknown class {name!r}; classes are {list(class_names)}")
    return list(class_names).index(name) + 1


def region_keys(labels: np.ndarray, object_ids: np.ndarray, points: np.ndarray,
                config: TeacherConfig, class_names: Sequence[str]) -> np.ndarray:
    """(H, W) int64 region id per pixel: the object id, or for ``surface_classes`` the object id and
    the ``surface_patch_m`` world cell of the pixel's surface point ``points`` (H, W, 3)."""
    surface = np.isin(labels, [_label_of(name, class_names) for name in config.surface_classes])
    cells = np.floor(points / config.surface_patch_m).astype(np.int64) & 0xFFF  # 12 bits per axis
    cells[~surface] = 0
    return (object_ids.astype(np.int64) << 36) | (cells[..., 0] << 24) | (cells[..., 1] << 12) \
        | cells[..., 2]


def _per_region_unit(regions: np.ndarray, *key: int) -> np.ndarray:
    """One uniform per pixel, ``hash_unit(region, *key, 0)``, hashing each distinct region once."""
    unique, inverse = np.unique(regions, return_inverse=True)
    return hash_unit(unique, *key, 0)[inverse].reshape(regions.shape)


def confuse_regions(labels: np.ndarray, regions: np.ndarray, config: TeacherConfig,
                    class_names: Sequence[str], view_key: Sequence[int]) -> np.ndarray:
    """Error (i): relabel whole regions to a confusable class.

    ``labels`` (H, W) int64 true labels (0 = none), ``regions`` (H, W) int64 region ids,
    ``view_key``: integers naming this view (seed, scene, scan, camera); a region becomes each of its
    class's partners with probability ``confusion_probability``, independently for every distinct key.
    Returns (H, W).
    """
    if config.confusion_probability == 0:
        return labels.copy()
    num_classes = len(class_names)
    partners = np.zeros((num_classes + 1, max(len(p) for _, p in config.confusions)), dtype=np.int64)
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    for name, confusable in config.confusions:
        source = _label_of(name, class_names)
        counts[source] = len(confusable)
        partners[source, :len(confusable)] = [_label_of(other, class_names) for other in confusable]
    draw = _per_region_unit(regions, *view_key)
    # draw in [i q, (i + 1) q) picks partner i; draws above n q keep the true class.
    choice = np.floor(draw / config.confusion_probability)
    flip = choice < counts[labels]
    return np.where(flip, partners[labels, np.where(flip, choice, 0).astype(np.int64)], labels)


def apply_systematic_bias(teacher: np.ndarray, labels: np.ndarray, points: np.ndarray,
                          config: TeacherConfig, class_names: Sequence[str],
                          scene_key: Sequence[int]) -> np.ndarray:
    """Error (ii): a fixed share of each ``systematic`` source class is always seen as its target.

    The share is a fixed set of ``systematic_cell_m`` world cells (keyed by ``scene_key``), so the
    same surface is mislabelled in every frame and camera. ``teacher`` / ``labels`` (H, W) int64,
    ``points`` (H, W, 3) street-frame surface points. Returns (H, W).
    """
    out = teacher.copy()
    for rule, (source, target, fraction) in enumerate(config.systematic):
        where = np.flatnonzero(labels == _label_of(source, class_names))
        cells = np.floor(points.reshape(-1, 3)[where] / config.systematic_cell_m).astype(np.int64)
        chosen = hash_unit(cells[:, 0], cells[:, 1], cells[:, 2], *scene_key, rule) < fraction
        out.reshape(-1)[where[chosen]] = _label_of(target, class_names)
    return out


def _bilinear_weights(size: int, patch: int, grid: int) -> np.ndarray:
    """(size, grid) weights upsampling ``grid`` patch centres to ``size`` pixels (half-pixel
    centres, edges clamped: ``torch.nn.functional.interpolate(..., align_corners=False)``)."""
    source = np.clip((np.arange(size) + 0.5) / patch - 0.5, 0.0, grid - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, grid - 1)
    weights = np.zeros((size, grid))
    np.add.at(weights, (np.arange(size), low), 1.0 - (source - low))
    np.add.at(weights, (np.arange(size), high), source - low)
    return weights


def patch_vote_labels(labels: np.ndarray, num_classes: int, patch_size: int,
                      unlabelled: int) -> np.ndarray:
    """Error (iii): decide labels on a ``patch_size`` px grid and bilinearly upsample.

    ``labels`` (H, W) int64 in 0..C (0 casts no vote). Each patch's votes are the fractions of its
    pixels per class; the (C, h, w) vote maps are upsampled bilinearly to (H, W) and the argmax taken.
    Pixels where every upsampled vote is zero get ``unlabelled``. Returns (H, W) int64 in 1..C.
    """
    height, width = labels.shape
    grid_h, grid_w = math.ceil(height / patch_size), math.ceil(width / patch_size)
    rows, cols = np.meshgrid(np.arange(height) // patch_size, np.arange(width) // patch_size,
                             indexing="ij")
    flat = ((rows * grid_w + cols) * (num_classes + 1) + labels).ravel()
    votes = np.bincount(flat, minlength=grid_h * grid_w * (num_classes + 1))
    votes = votes.reshape(grid_h, grid_w, num_classes + 1)[..., 1:] / float(patch_size ** 2)
    up = np.einsum("Hh,hwc,Ww->cHW", _bilinear_weights(height, patch_size, grid_h), votes,
                   _bilinear_weights(width, patch_size, grid_w), optimize=True)
    # Running argmax over the few class planes (first maximum wins, as np.argmax): faster than
    # np.argmax along the class axis.
    best, winner = up[0].copy(), np.ones((height, width), dtype=np.int64)
    for label in range(2, num_classes + 1):
        better = up[label - 1] > best
        winner[better] = label
        np.maximum(best, up[label - 1], out=best)
    return np.where(best > 0.0, winner, unlabelled)


def simulate_teacher_labels(labels: np.ndarray, object_ids: np.ndarray, points: np.ndarray,
                            config: TeacherConfig, class_names: Sequence[str],
                            view_key: Sequence[int], scene_key: Sequence[int]) -> np.ndarray:
    """The simulated teacher's class map for one view: errors (i), (ii) and (iii) in that order.

    ``labels`` / ``object_ids`` (H, W) int64 and ``points`` (H, W, 3) street frame, from the render;
    ``view_key`` names the frame and camera, ``scene_key`` the scene (fixes the systematic bias).
    Returns (H, W) int64 in 1..C.
    """
    regions = region_keys(labels, object_ids, points, config, class_names)
    teacher = confuse_regions(labels, regions, config, class_names, view_key)
    teacher = apply_systematic_bias(teacher, labels, points, config, class_names, scene_key)
    if config.patch_size_px > 1:
        teacher = patch_vote_labels(teacher, len(class_names), config.patch_size_px,
                                    _label_of(config.unlabelled_as, class_names))
    else:
        teacher = np.where(teacher > 0, teacher, _label_of(config.unlabelled_as, class_names))
    return teacher


def simulated_pixel_features(classes: torch.Tensor, text_embeddings: torch.Tensor, sigma: float,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Error (iv): teacher pixel features x = normalise(t_c + sigma * n), n ~ N(0, I / D).

    ``classes`` (M,) int64 teacher labels in 1..C; ``text_embeddings`` (C, D) class text embeddings
    (row c - 1 for label c); ``sigma``: noise norm relative to a unit text vector; ``generator``
    seeds the noise. Returns (M, D) L2-normalised, dtype and device of ``text_embeddings``.
    """
    classes = torch.as_tensor(classes, dtype=torch.int64, device=text_embeddings.device)
    if classes.ndim != 1:
        raise ValueError(f"classes must have shape (M,), got {tuple(classes.shape)}")
    if text_embeddings.ndim != 2:
        raise ValueError(f"text_embeddings must have shape (C, D), got {tuple(text_embeddings.shape)}")
    num_classes, dim = text_embeddings.shape
    if len(classes) and (int(classes.min()) < 1 or int(classes.max()) > num_classes):
        raise ValueError(f"classes must lie in 1..{num_classes}, found "
                         f"{int(classes.min())}..{int(classes.max())}")
    base = text_embeddings[classes - 1]
    noise = torch.randn(base.shape, generator=generator, dtype=base.dtype, device=base.device)
    return F.normalize(base + sigma * noise / math.sqrt(dim), dim=1)
