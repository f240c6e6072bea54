"""Inference API: label every LiDAR point with a class from a list given at run time.

The ROS node, the rosbag2 evaluator and the demo all call `Segmenter`. A class list lives in a
`ClassSpace` (names + text embeddings + which of them are *thing* classes + version); changing
classes only re-encodes text, and a `segment` call uses one `ClassSpace` from start to end, so a
concurrent swap never mixes two lists in one result. After labelling, the points of the thing
classes are grouped into objects (`clip2scene_core.objects.extract_objects`).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from clip2scene_core.checkpoint import load_checkpoint
from clip2scene_core.clip.text_encoders import same_text_space
from clip2scene_core.device import resolve_device
from clip2scene_core.frame import Camera, Frame
from clip2scene_core.geometry import project_points_to_image
from clip2scene_core.inputs import point_features
from clip2scene_core.model import restore_model
from clip2scene_core.model.point_embeddings import point_embeddings
from clip2scene_core.objects import ClusteringParams, Objects, extract_objects, thing_class_indices

LOGGER = logging.getLogger(__name__)

#: Label of a point whose best score is below the threshold (or that could not be processed).
UNKNOWN_LABEL = 0xFFFF
MAX_CLASSES = 1024
MAX_CLASS_NAME_LENGTH = 128
#: Classes encoded per step of `Segmenter.encode_classes`: a cancelled encode stops within one step.
ENCODE_CHUNK = 4
#: Voxel-grid cells per axis and direction a cloud may span; farther points cannot be indexed (the
#: packed voxel keys of `clip2scene_core.voxel.voxelize` must stay below 2**62 for three axes).
MAX_GRID_CELLS = 2**19


class EncodingCancelled(Exception):
    """`Segmenter.encode_classes` stopped because its ``cancelled`` callback said so."""


def class_key(name: str) -> str:
    """How two class names are compared for duplicates: case- and whitespace-insensitive."""
    return " ".join(name.split()).casefold()


def validate_class_names(names: Sequence[str]) -> tuple[str, ...]:
    """Return the cleaned class list or raise ValueError saying what is wrong with it."""
    if isinstance(names, str):
        raise ValueError("class names must be a list of strings, not one string")
    cleaned = tuple(str(name).strip() for name in names)
    if not cleaned:
        raise ValueError("class list is empty")
    if len(cleaned) > MAX_CLASSES:
        raise ValueError(f"class list has {len(cleaned)} names; at most {MAX_CLASSES} are allowed")
    for name in cleaned:
        if not name:
            raise ValueError("class list contains an empty name")
        if len(name) > MAX_CLASS_NAME_LENGTH:
            raise ValueError(f"class name {name[:32]!r}... is longer than {MAX_CLASS_NAME_LENGTH} characters")
    keys = [class_key(name) for name in cleaned]
    duplicates = sorted({name for name, key in zip(cleaned, keys) if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"class list has duplicates (compared ignoring case and spaces): {duplicates}")
    return cleaned


@dataclass(frozen=True)
class ClassSpace:
    """A class list with its text embeddings and thing classes; immutable, swapped as a whole."""

    names: tuple[str, ...]
    embeddings: torch.Tensor  # (C, D) L2-normalised, on the segmenter's device
    version: int
    things: tuple[int, ...] = ()  # indices into names of the classes whose points form objects

    @property
    def thing_names(self) -> tuple[str, ...]:
        return tuple(self.names[index] for index in self.things)


@dataclass
class Segmentation:
    """Per-point result of `Segmenter.segment`."""

    labels: np.ndarray  # (N,) uint16: index into class_space.names, or UNKNOWN_LABEL
    scores: np.ndarray  # (N,) float32: cosine similarity of the chosen class (0 for unknown)
    class_space: ClassSpace
    embeddings: Optional[np.ndarray] = None  # (N, D) float32, L2-normalised point embeddings
    source: Optional[np.ndarray] = None  # (N,) uint8: 0 = 3D network, 1 = 2D teacher (ensemble)
    instances: Optional[np.ndarray] = None  # (N,) uint32 object id (1..K), 0 = no object
    objects: Optional[Objects] = None  # the K objects; object k is instance k + 1


class Segmenter:
    """Open-vocabulary LiDAR segmentation with a clip2scene checkpoint.

    Args:
        checkpoint: path of a ``clip2scene/1`` checkpoint, or an already loaded checkpoint dict.
        class_names: initial class list; None = the checkpoint's training classes.
        device: ``auto`` | ``cpu`` | ``cuda[:N]``.
        score_threshold: points scoring below it get `UNKNOWN_LABEL` (-1 = off: cosine >= -1).
        prompt_templates: templates with one ``{}``; None = the 85-template ensemble.
        text_cache_dir: on-disk text-embedding cache folder; None = `default_text_cache_dir()`.
        text_encoder: a `TextEncoder` to use instead of building the checkpoint's (it must be the
            same text space: its ``spec`` must match the checkpoint's).
        image_teacher: MaskCLIP teacher for the 2D-3D ensemble: a teacher object, ``"auto"`` to
            build the checkpoint's own CLIP image tower (open_clip text spaces only), or None
            (LiDAR only).
        backend: sparse convolution backend to run the network with (``pure`` | ``spconv`` |
            ``minkowski``); None = the one it was trained with (weights are converted).
        max_range: metres; points with a coordinate farther than this from the sensor (or than the
            voxel grid can index) get `UNKNOWN_LABEL` and the rest of the cloud is labelled.
        voxel_size: metres, overriding the checkpoint's; None = the checkpoint's.
        thing_classes: names in the class list whose points are grouped into objects; None = the
            `vocabulary_things` that are in the class list.
        clustering: how thing points are grouped (`clip2scene_core.objects.ClusteringParams`).

    Raises:
        FileNotFoundError / ValueError naming the checkpoint and what is wrong with it or an argument.
    """

    def __init__(self, checkpoint: Union[str, Path, dict], class_names: Optional[Sequence[str]] = None,
                 device: str = "auto", score_threshold: float = -1.0,
                 prompt_templates: Optional[Sequence[str]] = None,
                 text_cache_dir: Optional[Union[str, Path]] = None, text_encoder: Any = None,
                 image_teacher: Any = None, backend: Optional[str] = None, max_range: float = 1000.0,
                 voxel_size: Optional[float] = None, thing_classes: Optional[Sequence[str]] = None,
                 clustering: ClusteringParams = ClusteringParams()) -> None:
        if not max_range > 0:
            raise ValueError(f"max_range must be > 0 metres, got {max_range}")
        if voxel_size is not None and not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 metres, got {voxel_size}")
        self.device = resolve_device(device)
        state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        where = "checkpoint" if isinstance(checkpoint, dict) else f"checkpoint {checkpoint}"
        self.voxel_size = float(voxel_size or state["voxel_size"])
        self.max_range = float(max_range)
        self.input_features = list(state["input_features"])
        self.train_classes = tuple(state["train_classes"])
        self.text_spec = dict(state["text_encoder"])
        try:
            self.model = restore_model(state["model_config"], state["state_dict"], backend)
        except RuntimeError as error:  # load_state_dict: missing / unexpected / mis-shaped weights
            raise ValueError(f"{where}: its weights do not fit its model_config: "
                             f"{first_line(error)}") from error
        self.model.to(self.device).eval()
        if text_encoder is not None and not same_text_space(text_encoder.spec, self.text_spec):
            raise ValueError(f"text encoder {text_encoder.spec} is not the checkpoint's text space "
                             f"{self.text_spec}: embeddings from two spaces cannot be compared")
        self.text_encoder = text_encoder or load_text_encoder(self.text_spec, where)
        self.image_teacher = (build_image_teacher(self.text_spec, self.device)
                              if isinstance(image_teacher, str) and image_teacher == "auto"
                              else image_teacher)
        self.score_threshold = float(score_threshold)
        self.prompt_templates = tuple(prompt_templates) if prompt_templates else None
        self.text_cache_dir = Path(text_cache_dir) if text_cache_dir else default_text_cache_dir()
        self.clustering = clustering
        self.vocabulary_things = checkpoint_vocabulary_things(state)
        self._lock = threading.Lock()
        self._version = 0
        self._space = self.encode_classes(class_names or self.train_classes, thing_classes=thing_classes)

    # -- class lists ---------------------------------------------------------------------------
    @property
    def class_space(self) -> ClassSpace:
        with self._lock:
            return self._space

    def thing_indices(self, class_names: Sequence[str],
                      thing_classes: Optional[Sequence[str]] = None) -> tuple[int, ...]:
        """Indices into ``class_names`` of the thing classes: ``thing_classes`` (every one must be in
        the list, else ValueError naming it), or for None the `vocabulary_things` in the list."""
        names = validate_class_names(class_names)
        if thing_classes is None:
            return thing_class_indices(names, [name for name in self.vocabulary_things if name in names])
        return thing_class_indices(names, [str(name).strip() for name in thing_classes])

    def encode_classes(self, class_names: Sequence[str],
                       prompt_templates: Optional[Sequence[str]] = None,
                       cancelled: Optional[Callable[[], bool]] = None,
                       thing_classes: Optional[Sequence[str]] = None) -> ClassSpace:
        """Encode a class list without changing the active one (safe from any thread).

        ``cancelled`` is asked between steps of `ENCODE_CHUNK` classes; when it returns True the
        encode stops with `EncodingCancelled` (a newer list replaced this one, or the node stops).
        ``thing_classes``: as for `thing_indices` (checked before anything is encoded).
        """
        from clip2scene_core.clip.prompts import TEMPLATES, encode_classes

        names = validate_class_names(class_names)
        things = self.thing_indices(names, thing_classes)
        templates = prompt_templates or self.prompt_templates or TEMPLATES  # encode_classes checks them
        chunks = []
        for start in range(0, len(names), ENCODE_CHUNK):
            if cancelled is not None and cancelled():
                raise EncodingCancelled(f"encoding of {len(names)} classes cancelled")
            chunks.append(encode_classes(self.text_encoder, list(names[start:start + ENCODE_CHUNK]),
                                         templates=templates, cache_dir=self.text_cache_dir))
        embeddings = torch.cat(chunks)
        with self._lock:
            self._version += 1
            version = self._version
        return ClassSpace(names, embeddings.to(self.device, torch.float32), version, things)

    def set_class_space(self, space: ClassSpace) -> None:
        """Atomically make ``space`` the active class list."""
        with self._lock:
            self._space = space

    def set_classes(self, class_names: Sequence[str],
                    thing_classes: Optional[Sequence[str]] = None) -> ClassSpace:
        """Encode and activate a class list (things as for `thing_indices`); returns the new `ClassSpace`."""
        space = self.encode_classes(class_names, thing_classes=thing_classes)
        self.set_class_space(space)
        return space

    # -- inference -----------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, points: np.ndarray, intensity: Optional[np.ndarray] = None,
              colors: Optional[np.ndarray] = None) -> torch.Tensor:
        """Per-point L2-normalised embeddings from the 3D network (semantic head).

        Args:
            points: (N, 3) float32, metres, LiDAR frame.
        Returns:
            (N, D) float32 tensor on the segmenter's device.
        """
        features = point_features(self.input_features, len(points), intensity, colors)
        return point_embeddings(self.model, points, features, self.voxel_size)

    @torch.inference_mode()
    def segment(self, points: np.ndarray, intensity: Optional[np.ndarray] = None,
                colors: Optional[np.ndarray] = None, cameras: Sequence[Camera] = (),
                class_space: Optional[ClassSpace] = None,
                return_embeddings: bool = False) -> Segmentation:
        """Label each point, then group the points of the class space's thing classes into objects.

        Args:
            points: (N, 3) float32, metres, LiDAR frame; non-finite rows and rows out of range
                (see `in_range`) get `UNKNOWN_LABEL` with score 0.
            intensity: (N,) float32 in [0, 1] or None.
            colors: (N, 3) float32 in [0, 1] or None (indoor).
            cameras: synchronised images for the 2D-3D ensemble (used only with an image teacher).
            class_space: the class list to use; None = the active one (read once).
            return_embeddings: also return (N, D) point embeddings.
        """
        space = class_space or self.class_space
        points = np.asarray(points, np.float32)
        count = len(points)
        labels = np.full(count, UNKNOWN_LABEL, np.uint16)
        scores = np.zeros(count, np.float32)
        source = np.zeros(count, np.uint8)
        embeddings_out = np.zeros((count, space.embeddings.shape[1]), np.float32) if return_embeddings else None
        valid = self.in_range(points)
        if not valid.any():
            return self._with_objects(Segmentation(labels, scores, space, embeddings_out, source), points)
        keep = np.flatnonzero(valid)
        sub = lambda a: None if a is None else np.asarray(a)[keep]  # noqa: E731
        embeddings = self.embed(points[keep], sub(intensity), sub(colors))
        similarity = embeddings @ space.embeddings.T  # (M, C) cosine
        best_score, best = similarity.max(dim=1)
        best_score, best = best_score.cpu().numpy(), best.cpu().numpy()
        if cameras and self.image_teacher is not None:
            best, best_score, from_2d = self._ensemble_with_cameras(points[keep], cameras, space,
                                                                    best, best_score)
            source[keep] = from_2d
        confident = best_score >= self.score_threshold
        labels[keep[confident]] = best[confident].astype(np.uint16)
        scores[keep] = best_score
        if embeddings_out is not None:
            embeddings_out[keep] = embeddings.cpu().numpy()
        return self._with_objects(Segmentation(labels, scores, space, embeddings_out, source), points)

    def _with_objects(self, result: Segmentation, points: np.ndarray) -> Segmentation:
        """``result`` with its instances and objects (points of unknown label join no object)."""
        result.instances, result.objects = extract_objects(points, result.labels, result.scores,
                                                           result.class_space.things, self.clustering)
        return result

    def in_range(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: the points the network can label (finite, within `max_range` and the grid)."""
        limit = min(self.max_range, MAX_GRID_CELLS * self.voxel_size)
        with np.errstate(invalid="ignore"):  # NaN compares False, which is what is wanted
            return (np.abs(points) <= limit).all(axis=1)

    def segment_frame(self, frame: Frame, **kwargs) -> Segmentation:
        """`segment` on a `Frame` (its cameras are used when ``use_cameras=True`` is passed)."""
        use_cameras = kwargs.pop("use_cameras", False)
        return self.segment(frame.points, frame.intensity, frame.colors,
                            cameras=frame.cameras if use_cameras else (), **kwargs)

    def _ensemble_with_cameras(self, points: np.ndarray, cameras: Sequence[Camera], space: ClassSpace,
                               best: np.ndarray, best_score: np.ndarray):
        """2D-3D ensemble (OpenScene-style): per point keep the more confident of 2D and 3D.

        The 2D prediction of a point is the MaskCLIP pixel feature at its projection scored against
        the class text embeddings; a point seen by several cameras keeps its most confident view.
        """
        best, best_score = best.copy(), best_score.copy()
        from_2d = np.zeros(len(points), np.uint8)
        for camera in cameras:
            projection = project_points_to_image(points, camera.K, camera.lidar_to_camera,
                                                 (camera.height, camera.width))
            if len(projection.indices) == 0:
                continue
            dense = self.image_teacher.dense_features(camera.image[None])
            pixel = self.image_teacher.sample(dense, torch.from_numpy(projection.pixels),
                                              (camera.height, camera.width))
            pixel = torch.nn.functional.normalize(pixel.to(self.device, torch.float32), dim=1)
            score_2d, label_2d = (pixel @ space.embeddings.T).max(dim=1)
            score_2d, label_2d = score_2d.cpu().numpy(), label_2d.cpu().numpy()
            index = projection.indices
            better = score_2d > best_score[index]
            best[index[better]] = label_2d[better]
            best_score[index[better]] = score_2d[better]
            from_2d[index[better]] = 1
        return best, best_score, from_2d


def checkpoint_vocabulary_things(checkpoint: dict) -> tuple[str, ...]:
    """The thing classes of the vocabulary a checkpoint was trained on (``config/classes/<kind>.yaml``
    of its recorded data kind, `clip2scene_core.clip.prompts.load_thing_classes`); () when the
    checkpoint records no data kind or its vocabulary file lists no things."""
    from clip2scene_core.clip.prompts import load_thing_classes

    kind = ((checkpoint.get("extra") or {}).get("config") or {}).get("data", {}).get("kind")
    if not kind:
        LOGGER.info("the checkpoint records no dataset kind: no default thing classes")
        return ()
    return load_thing_classes(kind)


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (torch's load errors run to hundreds of lines)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def load_text_encoder(spec: dict, where: str):
    """The checkpoint's text encoder, or ValueError naming it when its model cannot be loaded."""
    from clip2scene_core.clip.text_encoders import build_text_encoder

    try:
        return build_text_encoder(spec)
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{where}: cannot load its text encoder {spec.get('kind')} "
                         f"{spec.get('name')!r} (weights {spec.get('weights')!r}): "
                         f"{first_line(error)}") from error


def build_image_teacher(text_spec: dict, device: torch.device):
    """The MaskCLIP teacher that shares a checkpoint's CLIP text space (for the 2D-3D ensemble)."""
    if text_spec.get("kind") != "open_clip":
        raise ValueError(
            f"the 2D-3D ensemble needs a checkpoint in CLIP's text space (open_clip); this one uses "
            f"{text_spec.get('kind')} {text_spec.get('name')!r}, which has no image tower")
    from clip2scene_core.clip.teacher import MaskCLIPTeacher

    return MaskCLIPTeacher(str(text_spec["name"]), str(text_spec["weights"]), device)


def default_text_cache_dir() -> Path:
    """``$CLIP2SCENE_CACHE/text`` or ``~/.cache/clip2scene/text``."""
    import os

    return Path(os.environ.get("CLIP2SCENE_CACHE", Path.home() / ".cache" / "clip2scene")) / "text"
