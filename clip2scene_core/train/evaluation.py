"""Evaluation over a dataset: annotation-free (class text embeddings) or fine-tuned (learned classifier).

Predictions use the Segmenter's path (``model.point_embeddings`` on the keyframe, cosine similarity
of the L2-normalised point embedding with each class vector), so a checkpoint scores the same here as
through ``Segmenter``. Prediction index ``k`` is label ``k + 1``
(``frame.py``). Results accumulate in ``metrics.ConfusionMatrix``.

Also here: the teacher's own projected pseudo-labels (on keyframe points that land in a camera), the
reference the student should beat.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from clip2scene_core.checkpoint import load_checkpoint
from clip2scene_core.clip.prompts import ClassPrompt
from clip2scene_core.device import resolve_device
from clip2scene_core.metrics import ConfusionMatrix, json_number
from clip2scene_core.frame import Frame
from clip2scene_core.inputs import frame_features
from clip2scene_core.model import restore_model
from clip2scene_core.model.point_embeddings import point_embeddings
from clip2scene_core.train.config import merge_config
from clip2scene_core.train.losses import cosine_logits
from clip2scene_core.train.pairs import PairingOptions, PixelTeacher, SimulatedTeacher, pair_points_with_cameras
from clip2scene_core.train.splits import DEFAULT_DATA_CONFIG, open_split
from clip2scene_core.train.text_space import DEFAULT_TEXT_CONFIG, class_text_embeddings, class_vocabulary

logger = logging.getLogger(__name__)

#: Keyframe-only pairing: which keyframe points a camera sees (for the "projected" subset).
KEYFRAME_PAIRING = PairingOptions(num_sweeps=1)


@torch.no_grad()
def predict_frame(model: nn.Module, frame: Frame, class_weights: Tensor, input_features: Sequence[str],
                  voxel_size: float, head: str = "semantic") -> Tensor:
    """Label every keyframe point with its most similar class.

    Args:
        model: the 3D network (in eval mode), on the device predictions run on.
        frame: keyframe with ``points`` (N, 3) float32, metres, LiDAR frame.
        class_weights: (C, D) class vectors (text embeddings or a fine-tuned classifier), any scale.
        input_features: per-point input feature names of the checkpoint.
        voxel_size: metres.
        head: ``semantic`` (inference head) or ``consistency``.
    Returns:
        (N,) int64 CPU labels in ``1..C``.
    """
    embeddings = point_embeddings(model, frame.points, frame_features(frame, input_features), voxel_size, head)
    similarity = embeddings @ F.normalize(class_weights.to(embeddings.device).float(), dim=1).T
    return similarity.argmax(dim=1).cpu() + 1


def camera_visible(frame: Frame, pairing: PairingOptions = KEYFRAME_PAIRING) -> np.ndarray:
    """(N,) bool: keyframe points that project into at least one of the frame's cameras."""
    pairs = pair_points_with_cameras(frame, dataclasses.replace(pairing, num_sweeps=1))
    visible = np.zeros(frame.num_points, dtype=bool)
    visible[pairs.point_index] = True
    return visible


@dataclass
class EvaluationResult:
    """Confusion matrices over all keyframe points and over those a camera sees."""

    all_points: ConfusionMatrix
    camera_points: ConfusionMatrix

    def metrics(self, class_names: Sequence[str]) -> dict:
        """Plain summary: mIoU / accuracy on both subsets and per-class IoU on all points."""
        summary = self.all_points.to_dict(class_names)
        return {
            "miou": summary["miou"],
            "accuracy": summary["accuracy"],
            "per_class_iou": {name: entry["iou"] for name, entry in summary["per_class"].items()},
            "camera_points_miou": json_number(self.camera_points.miou()),
        }


def _require_labels(frame: Frame, index: int) -> np.ndarray:
    if frame.labels is None:
        raise ValueError(f"frame {frame.frame_id or index!r} has no ground-truth labels to evaluate against")
    return frame.labels


def evaluate_model(model: nn.Module, frames: Sequence[Frame], class_weights: Tensor,
                   input_features: Sequence[str], voxel_size: float, head: str = "semantic",
                   progress: bool = True) -> EvaluationResult:
    """Confusion matrices of ``model``'s predictions against the frames' labels.

    Args:
        model: the 3D network; put in eval mode here (and restored afterwards).
        frames: labelled keyframes.
        class_weights: (C, D) class vectors, label order.
        input_features, voxel_size, head: as for :func:`predict_frame`.
        progress: show a tqdm bar.
    """
    num_classes = class_weights.shape[0]
    result = EvaluationResult(ConfusionMatrix(num_classes), ConfusionMatrix(num_classes))
    was_training = model.training
    model.eval()
    try:
        for index, frame in enumerate(tqdm(frames, desc="evaluate", unit="frame", disable=not progress)):
            labels = _require_labels(frame, index)
            predicted = predict_frame(model, frame, class_weights, input_features, voxel_size, head)
            result.all_points.update(predicted, labels)
            visible = camera_visible(frame)
            result.camera_points.update(predicted[torch.from_numpy(visible)], labels[visible])
    finally:
        model.train(was_training)
    return result


def teacher_point_labels(frame: Frame, teacher: PixelTeacher, text: Tensor,
                         generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's pseudo-label of each keyframe point a camera sees: ``argmax_c D(x, t_c)``.

    A point seen by several cameras keeps its most confident view (highest cosine).

    Returns:
        (point indices (P,) int64 into ``frame.points``, labels (P,) int64 in ``1..C``).
    """
    pairs = pair_points_with_cameras(frame, KEYFRAME_PAIRING)
    pairs, pixel = teacher.pixel_features(frame, 0, pairs, generator)
    if not len(pairs):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    score, label = cosine_logits(pixel, text).max(dim=1)
    order = np.lexsort((score.numpy(), pairs.point_index))  # by point, most confident view last
    points = pairs.point_index[order]
    last = np.r_[points[1:] != points[:-1], True]
    return points[last], label.numpy()[order][last] + 1


def evaluate_teacher(frames: Sequence[Frame], teacher: PixelTeacher, text: Tensor, seed: int = 0,
                     progress: bool = True) -> ConfusionMatrix:
    """Confusion matrix of the teacher's projected pseudo-labels vs ground truth (points in view only)."""
    matrix = ConfusionMatrix(text.shape[0])
    for index, frame in enumerate(tqdm(frames, desc="teacher", unit="frame", disable=not progress)):
        labels = _require_labels(frame, index)
        points, predicted = teacher_point_labels(frame, teacher, text, torch.Generator().manual_seed(seed + index))
        matrix.update(predicted, labels[points])
    return matrix


def write_report(matrix: ConfusionMatrix, class_names: Sequence[str], out_dir: Union[str, Path],
                 title: str = "", extra: Optional[dict] = None) -> dict[str, Path]:
    """Write the per-class IoU table (text), the metrics (JSON) and the confusion matrix (PNG).

    Returns:
        ``{"text": ..., "json": ..., "png": ...}`` paths inside ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = matrix.format_table(class_names)
    paths = {"text": out_dir / "iou.txt", "json": out_dir / "metrics.json", "png": out_dir / "confusion.png"}
    paths["text"].write_text((f"{title}\n\n" if title else "") + table + "\n", encoding="utf-8")
    summary = {**matrix.to_dict(class_names), **(extra or {})}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    matrix.save_png(paths["png"], class_names)
    logger.info("wrote %s, %s and %s", *paths.values())
    return paths


DEFAULT_EVALUATE_CONFIG: dict[str, Any] = {
    "checkpoint": None,  # a clip2scene/1 checkpoint (pretrained or fine-tuned)
    "mode": "auto",  # auto (finetuned when the checkpoint has a classifier) | annotation-free | finetuned
    "head": "semantic",
    "device": "auto",
    "backend": None,  # sparse backend to run the network with; None = the checkpoint's
    "split": "val",  # which data split to evaluate
    "out_dir": "runs/evaluate",
    "data": None,  # None = the data section the checkpoint was trained with (train/splits.py keys)
    "text": DEFAULT_TEXT_CONFIG,  # annotation-free class embeddings (in the checkpoint's text space)
    "teacher_baseline": False,  # also score the teacher's projected pseudo-labels (synthetic world)
}
MODES = ("auto", "annotation-free", "finetuned")


def checkpoint_class_vectors(checkpoint: Mapping[str, Any], classes: Sequence[ClassPrompt], mode: str,
                             text_config: Mapping[str, Any]) -> tuple[Tensor, str]:
    """The class vectors a checkpoint is scored with, and the mode actually used.

    ``finetuned``: the learned classifier (``extra["classifier"]``; its classes must be ``classes``).
    ``annotation-free``: class text embeddings in the checkpoint's text space (the stored ones when the
    classes match, else encoded). ``auto``: finetuned when the checkpoint has a classifier.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    extra = checkpoint.get("extra") or {}
    names = [c.name for c in classes]
    if mode == "auto":
        mode = "finetuned" if "classifier" in extra else "annotation-free"
    if mode == "finetuned":
        if "classifier" not in extra:
            raise ValueError("the checkpoint has no fine-tuned classifier; use mode annotation-free")
        if list(checkpoint["train_classes"]) != names:
            raise ValueError(f"the classifier was fine-tuned on {checkpoint['train_classes']}, not {names}")
        return extra["classifier"].float(), mode
    stored = (checkpoint["train_classes"], extra["class_embeddings"]) if "class_embeddings" in extra else None
    text, _ = class_text_embeddings(text_config, classes, checkpoint["text_encoder"], stored)
    return text, mode


def evaluation_data_config(checkpoint: Mapping[str, Any], given: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``data`` section to evaluate on: ``given`` overrides merged over the checkpoint's own data
    section (when it records one and ``given`` names no other dataset kind), else over the defaults."""
    recorded = ((checkpoint.get("extra") or {}).get("config") or {}).get("data")
    given = dict(given or {})
    same_kind = recorded is not None and given.get("kind", recorded["kind"]) == recorded["kind"]
    base = merge_config(DEFAULT_DATA_CONFIG, recorded if same_kind else None, "data.")
    return merge_config(base, given, "data.")


def evaluate_checkpoint(config: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split and write the report (``write_report``) to ``out_dir``.

    Args:
        config: overrides of :data:`DEFAULT_EVALUATE_CONFIG`.
    Returns:
        ``{"mode", "metrics" (EvaluationResult.metrics), "table" (text), "paths", "teacher_miou"}``.
    """
    cfg = merge_config(DEFAULT_EVALUATE_CONFIG, config)
    if not cfg["checkpoint"]:
        raise ValueError("evaluate needs a checkpoint")
    checkpoint = load_checkpoint(cfg["checkpoint"])
    data = evaluation_data_config(checkpoint, cfg["data"])
    split = open_split(data, cfg["split"])
    classes = class_vocabulary(cfg["text"], data["kind"], split.class_names)
    vectors, mode = checkpoint_class_vectors(checkpoint, classes, cfg["mode"], cfg["text"])
    model = restore_model(checkpoint["model_config"], checkpoint["state_dict"], cfg["backend"])
    model.to(resolve_device(cfg["device"]))
    result = evaluate_model(model, split.frames, vectors, checkpoint["input_features"],
                            checkpoint["voxel_size"], cfg["head"])
    names = [c.name for c in classes]
    metrics = result.metrics(names)
    teacher_miou = None
    if cfg["teacher_baseline"]:
        world = getattr(split.dataset, "config", None)
        if world is None:
            raise ValueError("teacher_baseline needs the synthetic world (its simulated teacher)")
        text, _ = checkpoint_class_vectors(checkpoint, classes, "annotation-free", cfg["text"])
        teacher = SimulatedTeacher(text, world.teacher.feature_noise_sigma)
        teacher_miou = json_number(evaluate_teacher(split.frames, teacher, text).miou())
    title = f"{cfg['checkpoint']} ({mode}) on {data['kind']} {cfg['split']}: {len(split.frames)} frames"
    paths = write_report(result.all_points, names, cfg["out_dir"], title,
                         {"mode": mode, "camera_points_miou": metrics["camera_points_miou"],
                          "teacher_miou": teacher_miou, "checkpoint": str(cfg["checkpoint"])})
    return {"mode": mode, "metrics": metrics, "table": result.all_points.format_table(names), "paths": paths,
            "teacher_miou": teacher_miou}
