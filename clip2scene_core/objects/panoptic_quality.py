"""Panoptic quality (PQ, SQ, RQ) of LiDAR instance + semantic labels, after Kirillov et al.,
"Panoptic Segmentation", CVPR 2019.

A *segment* is a set of points: for a thing class, the points of one object (one class and instance
id); for a stuff class, all points of that class in the cloud (one segment per cloud, the points'
instance ids are not read). Per class, a predicted and a ground-truth segment match when their IoU
exceeds 0.5 (such matches are unique); then

    SQ = mean IoU of the matches (TP),   RQ = TP / (TP + FP / 2 + FN / 2),   PQ = SQ * RQ,

counted over every cloud given (a dataset-level figure, not a mean of per-cloud ones). Points whose
ground-truth label is 0 are ignored in both segmentations, as in the standard LiDAR protocol
(SemanticKITTI, nuScenes); thing points without a ground-truth instance id belong to no ground-truth
segment but still count in the predicted segments that cover them. Segments smaller than
``min_points`` cannot be a false positive or a false negative (they still match), as LiDAR
benchmarks do for objects with too few points to find. Labels follow ``clip2scene_core/frame.py``:
``1..C`` name classes, ground truth 0 = ignore; a prediction outside ``1..C`` (0, ``0xFFFF``
"unknown") and a thing prediction with instance id 0 belong to no predicted segment.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: Matching threshold of Kirillov et al.: IoU > 0.5 makes a match unique.
MATCH_IOU = 0.5


def _as_ids(name: str, values: Any) -> np.ndarray:
    """Flat int64 array from any integer array (uint16 labels, uint32 instance ids)."""
    array = np.asarray(values)
    if array.size and array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.reshape(-1).astype(np.int64)


def _segments(labels: np.ndarray, instances: np.ndarray, is_thing: np.ndarray) -> np.ndarray:
    """Per point, its segment key ``label << 32 | instance`` (stuff: instance 0), or -1 for none.

    ``labels`` must already lie in ``0..C`` (0 = none); ``is_thing`` is (C + 1,) bool by label.
    """
    thing = is_thing[labels]
    keys = (labels << 32) | np.where(thing, instances, 0)
    return np.where((labels > 0) & ~(thing & (instances == 0)), keys, -1)


class PanopticQuality:
    """Accumulates panoptic matches over any number of clouds.

    Args:
        num_classes: C; labels ``1..C``.
        thing_labels: labels (``1..C``) of the thing classes; every other class is stuff.
        min_points: segments with fewer points are never counted as FP or FN (>= 1; 1 = all count).
    """

    def __init__(self, num_classes: int, thing_labels: Sequence[int], min_points: int = 1) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        things = [int(label) for label in thing_labels]
        outside = [label for label in things if not 1 <= label <= num_classes]
        if outside:
            raise ValueError(f"thing_labels must lie in 1..{num_classes}, got {outside}")
        if min_points < 1:
            raise ValueError(f"min_points must be >= 1, got {min_points}")
        self.num_classes = int(num_classes)
        self.min_points = int(min_points)
        self.is_thing = np.zeros(self.num_classes + 1, bool)
        self.is_thing[things] = True
        # Per label 1..C at index label - 1.
        self.true_positives = np.zeros(self.num_classes, np.int64)
        self.false_positives = np.zeros(self.num_classes, np.int64)
        self.false_negatives = np.zeros(self.num_classes, np.int64)
        self.iou_sum = np.zeros(self.num_classes, np.float64)

    def update(self, pred_labels: Any, pred_instances: Any, target_labels: Any, target_instances: Any) -> None:
        """Add one cloud.

        Args:
            pred_labels: (N,) predicted labels; outside ``1..C`` = no class.
            pred_instances: (N,) predicted instance ids (0 = none; only read for thing classes).
            target_labels: (N,) ground-truth labels in ``0..C`` (0 = ignore).
            target_instances: (N,) ground-truth instance ids (0 = none).
        Raises:
            ValueError: sizes differ, non-integer input, or a target label outside ``0..C``.
        """
        arrays = {name: _as_ids(name, value) for name, value in (
            ("pred_labels", pred_labels), ("pred_instances", pred_instances),
            ("target_labels", target_labels), ("target_instances", target_instances))}
        sizes = {name: len(array) for name, array in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inputs must have the same size, got {sizes}")
        pred, pred_instances, target, target_instances = arrays.values()
        if len(target) and (int(target.min()) < 0 or int(target.max()) > self.num_classes):
            raise ValueError(f"target labels must lie in 0..{self.num_classes} (0 = ignore), found "
                             f"{int(target.min())}..{int(target.max())}")
        kept = target > 0
        pred, pred_instances = pred[kept], pred_instances[kept]
        target, target_instances = target[kept], target_instances[kept]
        pred = np.where((pred >= 1) & (pred <= self.num_classes), pred, 0)
        pred_segment = _segments(pred, pred_instances, self.is_thing)
        target_segment = _segments(target, target_instances, self.is_thing)

        pred_keys, pred_sizes = np.unique(pred_segment[pred_segment >= 0], return_counts=True)
        target_keys, target_sizes = np.unique(target_segment[target_segment >= 0], return_counts=True)
        # Overlaps of segments of the same class (the label is the key's upper half).
        both = (pred_segment >= 0) & (target_segment >= 0) & (pred == target)
        pairs, overlap = np.unique(np.stack([target_segment[both], pred_segment[both]]), axis=1,
                                   return_counts=True)
        target_index = np.searchsorted(target_keys, pairs[0])
        pred_index = np.searchsorted(pred_keys, pairs[1])
        iou = overlap / (target_sizes[target_index] + pred_sizes[pred_index] - overlap)
        match = iou > MATCH_IOU
        matched_target = np.zeros(len(target_keys), bool)
        matched_pred = np.zeros(len(pred_keys), bool)
        matched_target[target_index[match]] = True
        matched_pred[pred_index[match]] = True

        classes = self.num_classes
        match_class = (pairs[0][match] >> 32) - 1
        self.true_positives += np.bincount(match_class, minlength=classes)
        self.iou_sum += np.bincount(match_class, weights=iou[match], minlength=classes)
        missed = ~matched_target & (target_sizes >= self.min_points)
        self.false_negatives += np.bincount((target_keys[missed] >> 32) - 1, minlength=classes)
        spurious = ~matched_pred & (pred_sizes >= self.min_points)
        self.false_positives += np.bincount((pred_keys[spurious] >> 32) - 1, minlength=classes)

    def counted(self) -> np.ndarray:
        """(C,) bool: classes with at least one TP, FP or FN (the others are left out of means)."""
        return self.true_positives + self.false_positives + self.false_negatives > 0

    def sq(self) -> np.ndarray:
        """(C,) float64 segmentation quality in [0, 1] (0 without a match; NaN for a class not counted)."""
        sq = np.divide(self.iou_sum, self.true_positives, out=np.zeros(self.num_classes),
                       where=self.true_positives > 0)
        return np.where(self.counted(), sq, math.nan)

    def rq(self) -> np.ndarray:
        """(C,) float64 recognition quality in [0, 1] (NaN for a class not counted)."""
        denominator = self.true_positives + 0.5 * (self.false_positives + self.false_negatives)
        rq = np.divide(self.true_positives, denominator, out=np.zeros(self.num_classes), where=denominator > 0)
        return np.where(self.counted(), rq, math.nan)

    def pq(self) -> np.ndarray:
        """(C,) float64 panoptic quality SQ * RQ in [0, 1] (NaN for a class not counted)."""
        return self.sq() * self.rq()

    def summary(self) -> dict[str, float]:
        """Means over the counted classes, in [0, 1] (NaN when none is counted): ``pq``, ``sq``,
        ``rq`` over all classes and ``pq_things``, ``sq_things``, ``rq_things``, ``pq_stuff``."""
        counted = self.counted()
        groups = {"": counted, "_things": counted & self.is_thing[1:], "_stuff": counted & ~self.is_thing[1:]}
        values = {"pq": self.pq(), "sq": self.sq(), "rq": self.rq()}
        summary = {}
        for suffix, members in groups.items():
            for name, per_class in values.items():
                if suffix != "_stuff" or name == "pq":
                    summary[name + suffix] = float(per_class[members].mean()) if members.any() else math.nan
        return summary

    def format_table(self, class_names: Sequence[str]) -> str:
        """Per-class text table: PQ, SQ, RQ (%), TP, FP, FN; then the summary lines.

        Thing classes are marked ``(thing)``; classes not counted show ``-``.
        """
        names = list(class_names)
        if len(names) != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class names, got {len(names)}")
        pq, sq, rq = self.pq(), self.sq(), self.rq()
        width = max([len(name) + len(" (thing)") for name in names] + [len("class")]) + 1
        header = f"{'class':<{width}} {'PQ %':>7} {'SQ %':>7} {'RQ %':>7} {'TP':>7} {'FP':>7} {'FN':>7}"
        lines = [header, "-" * len(header)]
        for c, name in enumerate(names):
            thing = bool(self.is_thing[c + 1])
            figures = " ".join("      -" if math.isnan(v[c]) else f"{100 * v[c]:7.1f}" for v in (pq, sq, rq))
            lines.append(f"{name + (' (thing)' if thing else ''):<{width}} {figures} "
                         f"{self.true_positives[c]:7d} {self.false_positives[c]:7d} {self.false_negatives[c]:7d}")
        lines.append("-" * len(header))
        for key, value in self.summary().items():
            lines.append(f"{key}: {'-' if math.isnan(value) else f'{100 * value:.1f} %'}")
        return "\n".join(lines)
