"""Export dataset `Frame`s to a rosbag2 of standard messages (topics and layout: :mod:`clip2scene_ros.bag`).

Labels are written as the dataset's evaluation labels (``clip2scene_core/frame.py``: 1..C, 0 = ignore),
with the class list on ``/lidar/ground_truth/classes``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from clip2scene_core.calibration import calibration_of, write_calibration
from clip2scene_core.frame import Frame
from clip2scene_core.objects import thing_class_indices
from clip2scene_ros.bag import (CALIBRATION_FILE, CALIBRATION_TOPIC, GROUND_TRUTH_CLASSES_TOPIC, GROUND_TRUTH_TOPIC,
                                LIDAR_FRAME_ID, METADATA_KEY, POINTS_TOPIC, BagWriter, camera_info_message,
                                camera_info_topic, cloud_message, image_message, image_topic, string_message)

LOGGER = logging.getLogger(__name__)

#: Gap put between two scenes whose clocks restart (the next scene's frames keep their own spacing).
SCENE_GAP_NS = 100_000_000


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_frames` wrote.

    path: bag folder; frames: clouds written; counts: messages per topic; calibration_file: the YAML
    written (None without cameras); class_names: the dataset's classes, label order.
    """

    path: Path
    frames: int
    counts: dict[str, int]
    calibration_file: Optional[Path]
    class_names: tuple[str, ...]


class BagClock:
    """Strictly increasing bag stamps (ns) from frame timestamps (ns) given in frame order.

    Frames keep their recorded spacing; where the clock does not advance (a dataset of several scenes
    whose clocks restart) the rest is shifted to start `SCENE_GAP_NS` after the previous frame, so
    replay order is frame order and every cloud has a unique stamp. ``offset`` is the current shift,
    to apply to the frame's camera stamps too.
    """

    def __init__(self) -> None:
        self.offset = 0
        self._previous: Optional[int] = None

    def stamp(self, timestamp: int) -> int:
        """The bag stamp of the next frame, recorded at ``timestamp`` ns."""
        if timestamp < 0:
            raise ValueError(f"frame timestamps must be >= 0 ns, got {timestamp}")
        stamp = int(timestamp) + self.offset
        if self._previous is not None and stamp <= self._previous:
            self.offset += self._previous + SCENE_GAP_NS - stamp
            stamp = self._previous + SCENE_GAP_NS
        self._previous = stamp
        return stamp


def export_frames(frames: Iterable[Frame], path: Union[str, Path], class_names: Sequence[str],
                  storage: str = "mcap", dataset: str = "", include_cameras: bool = True,
                  calibration_file: Optional[Union[str, Path]] = None,
                  total: Optional[int] = None, thing_classes: Sequence[str] = ()) -> ExportSummary:
    """Write frames to a new rosbag2 (topics in the module docstring).

    Args:
        frames: keyframes in playback order; ``labels`` (N,) in the dataset label space when known
            (frames without labels get no ground-truth cloud).
        path: bag folder to create (must not exist).
        class_names: the dataset's classes, label order (label c = ``class_names[c - 1]``).
        storage: ``"mcap"`` (default) or ``"sqlite3"``.
        dataset: dataset kind recorded with the class list (e.g. ``"synthetic"``).
        include_cameras: also write images, camera infos and calibration.
        calibration_file: where to write the calibration YAML; default ``<path>/calibration.yaml``.
        total: number of frames, for the progress bar only.
        thing_classes: the classes of ``class_names`` whose points have instance ids (the frames'
            ``instances``, written as the ground truth's ``instance`` field), e.g. the dataset
            vocabulary's ``things`` (`clip2scene_core.clip.prompts.load_thing_classes`).
    Returns:
        An :class:`ExportSummary`.
    Raises:
        ValueError: empty class list, a thing class not in it, a label beyond it, no frames.
    """
    class_names = tuple(str(name) for name in class_names)
    if not class_names:
        raise ValueError("class_names is empty: the bag's ground truth needs the dataset's class list")
    thing_class_indices(class_names, thing_classes)
    classes_json = json.dumps({"dataset": dataset, "classes": list(class_names), "things": list(thing_classes)})
    path = Path(path)
    calibration: Optional[dict] = None
    count = 0
    clock = BagClock()
    with BagWriter(path, storage) as bag:
        bag.set_metadata(METADATA_KEY, classes_json)
        for frame in tqdm(frames, total=total, desc="export", unit="frame"):
            stamp = clock.stamp(frame.timestamp)
            if count == 0:
                bag.write(GROUND_TRUTH_CLASSES_TOPIC, string_message(classes_json), stamp)
            _write_frame(bag, frame, stamp, clock.offset, class_names, include_cameras)
            if include_cameras and frame.cameras:
                frame_calibration = calibration_of(frame.cameras)
                bag.write(CALIBRATION_TOPIC, string_message(json.dumps(frame_calibration)), stamp)
                calibration = calibration or frame_calibration
            count += 1
        if count == 0:
            raise ValueError("no frames to export")
        counts = dict(bag.counts)
    written_calibration = None
    if calibration is not None:
        written_calibration = write_calibration(calibration_file or path / CALIBRATION_FILE, calibration)
    LOGGER.info("wrote %d frames to %s (%s)", count, path, storage)
    return ExportSummary(path, count, counts, written_calibration, class_names)


def _write_frame(bag: BagWriter, frame: Frame, stamp: int, offset: int, class_names: Sequence[str],
                 include_cameras: bool) -> None:
    """One keyframe's messages: cloud, ground truth and (optionally) camera images and intrinsics."""
    points = frame.points
    intensity = frame.intensity if frame.intensity is not None else np.zeros(len(points), np.float32)
    xyz = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
    bag.write(POINTS_TOPIC, cloud_message({**xyz, "intensity": intensity}, stamp, LIDAR_FRAME_ID), stamp)
    if frame.labels is not None:
        if len(frame.labels) and int(frame.labels.max()) > len(class_names):
            raise ValueError(f"frame {frame.frame_id!r} has label {int(frame.labels.max())} but only "
                             f"{len(class_names)} classes")
        truth = {**xyz, "label": frame.labels.astype(np.uint16)}
        if frame.instances is not None:
            truth["instance"] = frame.instances.astype(np.uint32)
        bag.write(GROUND_TRUTH_TOPIC, cloud_message(truth, stamp, LIDAR_FRAME_ID), stamp)
    if not include_cameras:
        return
    for camera in frame.cameras:
        camera_stamp = int(camera.timestamp) + offset if camera.timestamp else stamp
        bag.write(image_topic(camera.name), image_message(camera.image, camera_stamp, camera.name),
                  camera_stamp)
        bag.write(camera_info_topic(camera.name),
                  camera_info_message(camera.K, (camera.height, camera.width), camera_stamp, camera.name),
                  camera_stamp)
