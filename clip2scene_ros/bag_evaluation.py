"""Scoring a segmentation run on a bag against the bag's ground truth.

* **Offline segmentation** (:func:`segment_bag`): the node's data path (same `Segmenter`, same
  decoding, cameras paired as the node pairs them) run over a bag without ROS; the live counterpart
  is :mod:`clip2scene_ros.replay`.
* **Evaluation** (:func:`evaluate_recording`): the recorded class indices become dataset labels
  through class names (`clip2scene_core.metrics.dataset_label_table`, with an optional synonym
  mapping), then per-class IoU / mIoU (overall and split at class-list changes), panoptic quality
  where the ground truth has instances and the output an ``instance`` field, latency percentiles and
  dropped frames.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from clip2scene_core.calibration import read_calibration
from clip2scene_core.metrics import ConfusionMatrix, dataset_label_table, json_number, to_dataset_labels
from clip2scene_core.objects import ClusteringParams, PanopticQuality, thing_class_indices
from clip2scene_ros.bag import (CALIBRATION_FILE, CAMERA_INFO, IMAGE, POINT_CLOUD2, POINTS_TOPIC, BagError, BagFile,
                                GroundTruth, Prediction, Recording, camera_info_topic, image_topic)
from clip2scene_ros.camera_input import CameraInput
from clip2scene_ros.conversions import MessageFormatError, cloud_to_xyz, stamp_to_ns
from clip2scene_ros.sync import CollectorConfig

LOGGER = logging.getLogger(__name__)


# -- offline segmentation --------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassChange:
    """Replace the class list before frame ``frame`` (0-based index of the input clouds), with the
    thing classes ``thing_classes`` (None = the vocabulary's things in the list: the node's ``[""]``)."""

    frame: int
    class_names: tuple[str, ...]
    thing_classes: Optional[tuple[str, ...]] = None


def changes_at(schedule: Sequence[ClassChange], frames: Optional[int] = None) -> dict[int, ClassChange]:
    """frame -> change (names stripped), checked: frames in ``0..frames-1``, one change per frame,
    non-empty lists."""
    changes: dict[int, ClassChange] = {}
    for change in schedule:
        if change.frame < 0:
            raise ValueError(f"class change at frame {change.frame}: frames count from 0")
        if frames is not None and change.frame >= frames:
            raise ValueError(f"class change at frame {change.frame}, but the bag has {frames} frames")
        if change.frame in changes:
            raise ValueError(f"two class changes at frame {change.frame}")
        if not change.class_names:
            raise ValueError(f"class change at frame {change.frame} has an empty class list")
        changes[change.frame] = ClassChange(change.frame, tuple(name.strip() for name in change.class_names),
                                            None if change.thing_classes is None
                                            else tuple(name.strip() for name in change.thing_classes))
    return changes


def segment_bag(path: Union[str, Path], segmenter: Any, schedule: Sequence[ClassChange] = (),
                points_topic: str = POINTS_TOPIC, cameras: Sequence[str] = (),
                calibration_file: Optional[Union[str, Path]] = None,
                sync_tolerance_ns: int = CollectorConfig.tolerance_ns) -> Recording:
    """Label every cloud of a bag with ``segmenter`` (a `clip2scene_core.segmenter.Segmenter`), no ROS.

    Decoding and the `segment` call are the node's, so the labels match a live replay's. With
    ``cameras`` (the node's ``camera_names``; the segmenter needs an ``image_teacher``), each cloud is
    paired with the nearest image of every camera as the node pairs them (`CameraInput`, on the bag's
    log clock) and labelled by the 2D-3D ensemble; ``calibration_file`` defaults to the bag's own
    ``calibration.yaml``. Latencies are the wall time of decode + segment per cloud (ms).
    """
    changes = changes_at(schedule)
    recording = Recording()
    camera_input = None
    if cameras:
        calibration = read_calibration(calibration_file or Path(path) / CALIBRATION_FILE, cameras)
        # Every cloud waits for its cameras to settle (the end of the bag releases the rest): offline
        # nothing is late, so nothing is dropped.
        camera_input = CameraInput(cameras, calibration, CollectorConfig(
            tolerance_ns=sync_tolerance_ns, timeout_ns=2**62, image_buffer=64, max_pending=2**20,
            queue_depth=2**20), lambda text: LOGGER.warning("%s: %s", path, text))
    index = 0

    def label(message: Any, frame_cameras: Sequence) -> None:
        nonlocal index
        if index in changes:
            segmenter.set_classes(changes[index].class_names, changes[index].thing_classes)
        start = time.perf_counter()
        try:
            cloud = cloud_to_xyz(message, drop_invalid=False)
        except MessageFormatError as error:
            raise BagError(f"bag {path} {points_topic} cloud {index}: {error}") from error
        space = segmenter.class_space
        result = segmenter.segment(cloud.points, cloud.intensity, cameras=frame_cameras, class_space=space)
        recording.latencies_ms.append((time.perf_counter() - start) * 1e3)
        recording.predictions.append(
            Prediction(stamp_to_ns(message.header.stamp), result.labels, tuple(space.names), result.instances))
        index += 1

    with BagFile(path) as bag:
        images = {image_topic(name): name for name in cameras}
        infos = {camera_info_topic(name): name for name in cameras}
        bag.require({points_topic: POINT_CLOUD2, **dict.fromkeys(images, IMAGE), **dict.fromkeys(infos, CAMERA_INFO)})
        for topic, log_time, message in tqdm(bag.messages([points_topic, *images, *infos]), desc="segment",
                                             unit="message"):
            if camera_input is None:
                label(message, ())
                continue
            if topic in images:
                camera_input.add_image(images[topic], message, now=log_time)
            elif topic in infos:
                camera_input.add_camera_info(infos[topic], message)
            else:
                camera_input.add_cloud(stamp_to_ns(message.header.stamp), message, now=log_time)
            for synced in camera_input.poll(now=log_time):
                label(synced.cloud, camera_input.cameras(synced))
        if camera_input is not None:
            for synced in camera_input.poll(now=2**63 - 1):
                label(synced.cloud, camera_input.cameras(synced))
    return recording


# -- evaluation ------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """Result of :func:`evaluate_recording`.

    overall: confusion over all evaluated frames; segments: ``(first_frame, end_frame, matrix)`` per
    stretch between class-list changes (end exclusive); report: the JSON-ready summary; panoptic:
    PQ / SQ / RQ over the frames with ground-truth and predicted instances (None without any).
    """

    class_names: tuple[str, ...]
    overall: ConfusionMatrix
    segments: list[tuple[int, int, ConfusionMatrix]]
    report: dict[str, Any]
    panoptic: Optional[PanopticQuality] = None

    def format_table(self) -> str:
        """Text report: per-class table, per-segment mIoU, latency and drops."""
        report = self.report
        lines = [self.overall.format_table(self.class_names), ""]
        if len(self.segments) > 1:
            for segment in report["segments"]:
                lines.append(f"frames {segment['first_frame']:>4}..{segment['last_frame']:<4} "
                             f"mIoU {_percent(segment['miou']):>6} %   classes {segment['class_lists']}")
            lines.append("")
        if self.panoptic is not None:
            lines += [self.panoptic.format_table(self.class_names), ""]
        latency = report["latency_ms"]
        lines.append(f"latency p50 {_number(latency['p50'])} ms, p95 {_number(latency['p95'])} ms "
                     f"({latency['count']} clouds)")
        lines.append(f"frames {report['frames']}, evaluated {report['evaluated']}, "
                     f"dropped {report['dropped']}"
                     + (f" (frames {report['dropped_frames']})" if report["dropped"] else ""))
        return "\n".join(lines)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _percentile(values: np.ndarray, q: float) -> Optional[float]:
    return json_number(float(np.percentile(values, q))) if len(values) else None


def evaluate_recording(ground_truth: GroundTruth, recording: Recording,
                       mapping: Optional[Mapping[str, str]] = None,
                       schedule: Sequence[ClassChange] = ()) -> Evaluation:
    """Score a recording against an exported bag's ground truth.

    Args:
        ground_truth: from :func:`read_input`.
        recording: from :func:`read_recording` (live) or :func:`segment_bag` (offline).
        mapping: predicted class name -> dataset class (synonyms); default identity by name.
        schedule: the class-list changes of the run; the report splits mIoU at each change frame > 0.
    Returns:
        An :class:`Evaluation`. Input clouds without an output are reported as dropped; an output
        whose point count differs from the ground truth raises :class:`BagError`. Panoptic quality
        (``report["panoptic"]``, None when not measured) counts the frames whose ground truth and
        output both have instance ids; ground-truth and spurious segments under
        ``ClusteringParams.min_points`` points (the node's smallest object) are neither missed nor
        spurious.
    """
    names = ground_truth.class_names
    frame_of = {stamp: index for index, stamp in enumerate(ground_truth.stamps)}
    boundaries = sorted({0, *changes_at(schedule, len(ground_truth.stamps))})
    ends = boundaries[1:] + [len(ground_truth.stamps)]
    overall = ConfusionMatrix(len(names))
    segments = [(start, end, ConfusionMatrix(len(names))) for start, end in zip(boundaries, ends)]
    class_lists: list[list[tuple[str, ...]]] = [[] for _ in segments]
    evaluated: set[int] = set()
    tables: dict[tuple[str, ...], np.ndarray] = {}
    panoptic = PanopticQuality(len(names), [index + 1 for index in thing_class_indices(
        names, ground_truth.thing_classes)], ClusteringParams.min_points)
    panoptic_frames = 0
    for prediction in recording.predictions:
        frame = frame_of.get(prediction.stamp)
        if frame is None:
            LOGGER.warning("ignoring an output cloud with stamp %d ns: no input cloud has it",
                           prediction.stamp)
            continue
        if frame in evaluated:
            LOGGER.warning("ignoring a second output for frame %d", frame)
            continue
        truth = ground_truth.labels[prediction.stamp]
        if len(prediction.labels) != len(truth):
            raise BagError(f"output for frame {frame} has {len(prediction.labels)} points, its input "
                           f"{len(truth)}")
        if prediction.class_names not in tables:
            tables[prediction.class_names] = dataset_label_table(prediction.class_names, names, mapping)
            unmatched = [n for n, label in zip(prediction.class_names, tables[prediction.class_names])
                         if label == 0]
            if unmatched:
                LOGGER.warning("classes %s match no dataset class (%s); their points count as wrong",
                               unmatched, list(names))
        predicted = to_dataset_labels(prediction.labels, tables[prediction.class_names])
        overall.update(predicted, truth)
        segment = next(i for i, (start, end, _) in enumerate(segments) if start <= frame < end)
        segments[segment][2].update(predicted, truth)
        if prediction.instances is not None and prediction.stamp in ground_truth.instances:
            panoptic.update(predicted, prediction.instances, truth, ground_truth.instances[prediction.stamp])
            panoptic_frames += 1
        if prediction.class_names not in class_lists[segment]:
            class_lists[segment].append(prediction.class_names)
        evaluated.add(frame)
    dropped = sorted(set(range(len(ground_truth.stamps))) - evaluated)
    latencies = np.asarray(recording.latencies_ms, np.float64)
    report = {
        "complete": True,
        "class_names": list(names),
        "frames": len(ground_truth.stamps),
        "evaluated": len(evaluated),
        "dropped": len(dropped),
        "dropped_frames": dropped,
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                       "count": int(len(latencies))},
        "miou": json_number(overall.miou()),
        "overall": overall.to_dict(names),
        "segments": [
            {"first_frame": start, "last_frame": end - 1, "class_lists": [list(c) for c in lists],
             "miou": json_number(matrix.miou()), "metrics": matrix.to_dict(names)}
            for (start, end, matrix), lists in zip(segments, class_lists)
        ],
        "mapping": dict(mapping or {}),
        "panoptic": None if not panoptic_frames else {
            "frames": panoptic_frames, "thing_classes": list(ground_truth.thing_classes),
            **{key: json_number(value) for key, value in panoptic.summary().items()},
            "per_class_pq": {name: json_number(float(value)) for name, value in zip(names, panoptic.pq())},
        },
    }
    return Evaluation(names, overall, segments, report, panoptic if panoptic_frames else None)
