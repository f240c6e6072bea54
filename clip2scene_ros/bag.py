"""rosbag2 files for clip2scene, through the pure-Python ``rosbags`` library (no ROS graph needed).

* **Export** (:func:`export_frames`): dataset `Frame`s -> a rosbag2 (mcap by default, or sqlite3) of
  standard messages, stamped with the frames' own timestamps:

  ================================  ==========================  ===========================================
  topic                             type                        content
  ================================  ==========================  ===========================================
  ``/lidar/points``                 sensor_msgs/PointCloud2     x, y, z, intensity (float32), LiDAR frame
  ``/lidar/ground_truth``           sensor_msgs/PointCloud2     x, y, z (float32), label (uint16, dataset
                                                                label space, 0 = ignore), instance (uint32
                                                                object id, 0 = none; when the dataset has
                                                                them), same point order
  ``/lidar/ground_truth/classes``   std_msgs/String             JSON ``{"dataset", "classes", "things"}``:
                                                                label c is ``classes[c - 1]``; ``things``
                                                                names the classes that have instances
  ``/<camera>/image``               sensor_msgs/Image           rgb8
  ``/<camera>/camera_info``         sensor_msgs/CameraInfo      K, P, image size (rectified: zero D)
  ``/calibration``                  std_msgs/String             JSON ``{camera: {lidar_to_camera: 4x4}}``
  ================================  ==========================  ===========================================

  The dataset class list is also stored in the bag metadata (``custom_data``), and the calibration in
  ``<bag>/calibration.yaml``, the file the node's ``calibration_file`` parameter reads. The ground-truth
  class list has its own topic rather than ``/class_names`` so that playing the whole bag never talks
  over the node's own ``class_names`` announcements.
* **Reading**: :func:`read_input` (frame stamps + ground truth of an exported bag) and
  :func:`read_recording` (what the node published: labelled clouds, class-list announcements and
  latencies), with clear :class:`BagError` messages for missing topics, wrong types and damaged files.
* **Recording** (:class:`BagWriter`): raw CDR messages from a live replay go straight into a bag.
* **Offline segmentation** (:func:`segment_bag`): the node's data path (same `Segmenter`, same
  decoding) run over a bag without ROS.
* **Evaluation** (:func:`evaluate_recording`): predicted class indices -> dataset labels through class
  names (with an optional synonym mapping), per-class IoU / mIoU (overall and split at class-list
  changes), panoptic quality where the ground truth has instances and the output an ``instance``
  field, latency percentiles and dropped frames.

Live replay into a running node is in :mod:`clip2scene_ros.replay`.
"""
from __future__ import annotations

import json
import logging
import shutil
import struct
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.rosbag2.errors import ReaderError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from clip2scene_core.calibration import calibration_of, read_calibration, write_calibration
from clip2scene_core.evaluate import ConfusionMatrix, json_number
from clip2scene_core.frame import Frame
from clip2scene_core.objects import ClusteringParams, PanopticQuality, thing_class_indices
from clip2scene_ros.camera_input import CameraInput
from clip2scene_ros.conversions import (MessageFormatError, cloud_to_array, cloud_to_xyz, dtype_to_fields,
                                        make_cloud_array, stamp_to_ns)
from clip2scene_ros.sync import CollectorConfig

LOGGER = logging.getLogger(__name__)

# -- topics and types ------------------------------------------------------------------------------
POINTS_TOPIC = "/lidar/points"
GROUND_TRUTH_TOPIC = "/lidar/ground_truth"
GROUND_TRUTH_CLASSES_TOPIC = "/lidar/ground_truth/classes"
CALIBRATION_TOPIC = "/calibration"
#: The node's outputs (its relative topic names in the root namespace).
SEGMENTED_TOPIC = "/segmented_points"
CLASS_NAMES_TOPIC = "/class_names"
LATENCY_TOPIC = "/segment_latency"

POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
FLOAT64 = "std_msgs/msg/Float64"

LIDAR_FRAME_ID = "lidar"
CALIBRATION_FILE = "calibration.yaml"
METADATA_KEY = "clip2scene.dataset"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: Node label of a point under the score threshold (`clip2scene_core.segmenter.UNKNOWN_LABEL`).
UNKNOWN_INDEX = 0xFFFF
#: Gap put between two scenes whose clocks restart (the next scene's frames keep their own spacing).
SCENE_GAP_NS = 100_000_000


class BagError(ValueError):
    """A bag that cannot be used: missing topics, wrong message types, damaged or unreadable files."""


def image_topic(camera: str) -> str:
    """Topic of a camera's images: ``/<camera>/image``."""
    return f"/{camera}/image"


def camera_info_topic(camera: str) -> str:
    """Topic of a camera's intrinsics: ``/<camera>/camera_info``."""
    return f"/{camera}/camera_info"


@lru_cache(maxsize=1)
def typestore():
    """The ``rosbags`` type store of ROS 2 Kilted (the newest store this rosbags knows otherwise)."""
    store = getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST
    return get_typestore(store)


# -- typestore message builders --------------------------------------------------------------------

def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)


def cloud_message(columns: Mapping[str, np.ndarray], stamp_ns: int, frame_id: str) -> Any:
    """Unorganised PointCloud2 (rosbags type) from named per-point columns (each (N,), dtype kept).

    The point layout is :func:`clip2scene_ros.conversions.make_cloud_array`'s, i.e. the same one the
    node's own builders use.
    """
    types = typestore().types
    points = make_cloud_array(columns)
    fields = [types["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype,
                                                   count=f.count)
              for f in dtype_to_fields(points.dtype)]
    xyz = [points[axis] for axis in "xyz" if axis in points.dtype.names]
    return types[POINT_CLOUD2](
        header=_header(stamp_ns, frame_id), height=1, width=len(points), fields=fields,
        is_bigendian=sys.byteorder == "big", point_step=points.dtype.itemsize,
        row_step=points.dtype.itemsize * len(points), data=points.reshape(-1).view(np.uint8),
        is_dense=bool(all(np.isfinite(a).all() for a in xyz)))


def image_message(image: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/Image`` rgb8 (rosbags type) from ``image`` (H, W, 3) uint8 RGB."""
    height, width = image.shape[:2]
    return typestore().types[IMAGE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding="rgb8",
        is_bigendian=0, step=width * 3, data=np.ascontiguousarray(image, np.uint8).reshape(-1))


def camera_info_message(K: np.ndarray, image_size: tuple[int, int], stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/CameraInfo`` (rosbags type) of a rectified pinhole camera.

    K: (3, 3) intrinsics, pixels; image_size: (H, W) pixels. D is zero (plumb_bob), R identity and
    P = [K | 0].
    """
    types = typestore().types
    K = np.asarray(K, np.float64)
    projection = np.concatenate([K, np.zeros((3, 1))], axis=1)
    return types[CAMERA_INFO](
        header=_header(stamp_ns, frame_id), height=int(image_size[0]), width=int(image_size[1]),
        distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
        p=projection.reshape(-1), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False))


def string_message(text: str) -> Any:
    """``std_msgs/String`` (rosbags type)."""
    return typestore().types[STRING](data=text)


# -- writing ---------------------------------------------------------------------------------------

class BagWriter:
    """A rosbag2 being written: topics are added on first use, messages serialised as CDR.

    Use as a context manager. An exception inside the ``with`` block removes the unfinished bag, so no
    half-written file is ever taken for a complete one.

    Args:
        path: bag folder to create (must not exist).
        storage: ``"mcap"`` or ``"sqlite3"``.
    """

    def __init__(self, path: Union[str, Path], storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} exists already; choose a new path")
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._writer.__exit__(exc_type, exc, traceback)
        if exc_type is not None and self.path.is_dir():
            shutil.rmtree(self.path)

    def set_metadata(self, key: str, value: str) -> None:
        """A ``custom_data`` entry of the bag's metadata."""
        self._writer.set_custom_data(key, value)

    def add_topic(self, topic: str, msgtype: str) -> Any:
        """Declare ``topic`` (done by the first write too); a declared topic is listed even if empty."""
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._connections[topic] = connection
            self.counts[topic] = 0
        elif connection.msgtype != msgtype:
            raise ValueError(f"topic {topic} has type {connection.msgtype}, cannot also write {msgtype}")
        return connection

    def write(self, topic: str, message: Any, log_time_ns: int) -> None:
        """Serialise a rosbags message (its ``__msgtype__`` names the type) at ``log_time_ns``."""
        msgtype = message.__msgtype__
        self.write_raw(topic, msgtype, typestore().serialize_cdr(message, msgtype), log_time_ns)

    def write_raw(self, topic: str, msgtype: str, data: Union[bytes, memoryview], log_time_ns: int) -> None:
        """Write an already CDR-serialised message (e.g. as received by an rclpy raw subscription)."""
        self._writer.write(self.add_topic(topic, msgtype), int(log_time_ns), data)
        self.counts[topic] += 1


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


# -- reading ---------------------------------------------------------------------------------------

# What a damaged storage file or message payload raises while it is read.
_DAMAGE = (ReaderError, SerdeError, struct.error, EOFError, OSError, IndexError, KeyError,
           UnicodeDecodeError, AssertionError, ValueError)


class BagFile:
    """An open rosbag2 (folder, ``.mcap`` or ``.db3``) whose read errors become clear :class:`BagError`s.

    Use as a context manager.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag not found: {self.path}")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError as error:
            raise BagError(f"{self.path} is not a complete rosbag2 (no metadata.yaml?): {error}") from error
        except _DAMAGE as error:
            raise BagError(f"cannot open bag {self.path}: {error}") from error

    def __enter__(self) -> "BagFile":
        return self

    def __exit__(self, *exc) -> None:
        self._reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type."""
        return {topic: info.msgtype or "(several types)" for topic, info in self._reader.topics.items()}

    @property
    def metadata(self) -> dict[str, str]:
        """The bag's ``custom_data``."""
        return dict(self._reader.storage.metadata.custom or {})

    def require(self, topics: Mapping[str, str]) -> None:
        """Raise :class:`BagError` unless every ``topic -> type`` of ``topics`` is in the bag."""
        present = self.topics
        missing = [topic for topic in topics if topic not in present]
        if missing:
            raise BagError(f"bag {self.path} lacks topic(s) {missing}; it has {sorted(present)}")
        wrong = {topic: present[topic] for topic, msgtype in topics.items() if present[topic] != msgtype}
        if wrong:
            expected = {topic: topics[topic] for topic in wrong}
            raise BagError(f"bag {self.path} has unexpected message type(s) {wrong}; expected {expected}")

    def raw_messages(self, topics: Sequence[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, message type, log time ns, CDR bytes)`` of ``topics`` in log-time order."""
        connections = [c for c in self._reader.connections if c.topic in topics]
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, log_time, raw = next(iterator)
            except StopIteration:
                return
            except _DAMAGE as error:
                raise BagError(f"bag {self.path} is damaged or truncated: {error!r}") from error
            yield connection.topic, connection.msgtype, log_time, bytes(raw)

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, Any]]:
        """``(topic, log time ns, deserialised rosbags message)`` of ``topics`` in log-time order."""
        for topic, msgtype, log_time, raw in self.raw_messages(topics):
            try:
                message = typestore().deserialize_cdr(raw, msgtype)
            except _DAMAGE as error:
                raise BagError(f"bag {self.path}: a {msgtype} message on {topic} cannot be decoded: "
                               f"{error!r}") from error
            yield topic, log_time, message


@dataclass(frozen=True)
class GroundTruth:
    """An exported bag's evaluation data.

    class_names: dataset classes, label order; stamps: (F,) input cloud stamps (ns) in playback order
    (frame i = ``stamps[i]``); labels: stamp -> (N,) int64 labels (0 = ignore) in the cloud's point order;
    thing_classes: the classes with instance ids; instances: stamp -> (N,) uint32 instance ids (0 =
    none) of the clouds whose ground truth has an ``instance`` field.
    """

    class_names: tuple[str, ...]
    stamps: tuple[int, ...]
    labels: dict[int, np.ndarray]
    thing_classes: tuple[str, ...] = ()
    instances: dict[int, np.ndarray] = field(default_factory=dict)


def read_input(path: Union[str, Path], points_topic: str = POINTS_TOPIC) -> GroundTruth:
    """Frame stamps and ground truth of a bag written by :func:`export_frames`.

    Raises FileNotFoundError (no bag) or :class:`BagError` (missing topic, wrong type, damaged file,
    a cloud without ground truth or with a different point count).
    """
    with BagFile(path) as bag:
        bag.require({points_topic: POINT_CLOUD2, GROUND_TRUTH_TOPIC: POINT_CLOUD2,
                     GROUND_TRUTH_CLASSES_TOPIC: STRING})
        class_names: tuple[str, ...] = ()
        things: tuple[str, ...] = ()
        sizes: dict[int, int] = {}
        labels: dict[int, np.ndarray] = {}
        instances: dict[int, np.ndarray] = {}
        stamps: list[int] = []
        for topic, _, message in bag.messages([points_topic, GROUND_TRUTH_TOPIC, GROUND_TRUTH_CLASSES_TOPIC]):
            where = f"{bag.path} {topic}"
            if topic == GROUND_TRUTH_CLASSES_TOPIC:
                class_names = _parse_class_list(message.data, where)
                things = _parse_things(message.data, class_names, where)
                continue
            stamp = stamp_to_ns(message.header.stamp)
            if topic == points_topic:
                stamps.append(stamp)
                sizes[stamp] = int(message.width) * int(message.height)
            else:
                fields = _cloud_fields(message, ("label", "instance"), where)
                labels[stamp] = fields["label"].astype(np.int64)
                if "instance" in fields:
                    instances[stamp] = fields["instance"].astype(np.uint32)
    if not class_names:
        raise BagError(f"bag {path}: {GROUND_TRUTH_CLASSES_TOPIC} holds no class list")
    if not stamps:
        raise BagError(f"bag {path}: {points_topic} holds no clouds")
    if len(set(stamps)) != len(stamps):
        raise BagError(f"bag {path}: several clouds on {points_topic} share a stamp")
    for index, stamp in enumerate(stamps):
        if stamp not in labels:
            raise BagError(f"bag {path}: cloud {index} (stamp {stamp} ns) has no {GROUND_TRUTH_TOPIC} "
                           "message")
        if len(labels[stamp]) != sizes[stamp]:
            raise BagError(f"bag {path}: cloud {index} has {sizes[stamp]} points but its ground truth "
                           f"{len(labels[stamp])}")
        top = int(labels[stamp].max(initial=0))
        if top > len(class_names):
            raise BagError(f"bag {path}: ground truth of cloud {index} has label {top} but only "
                           f"{len(class_names)} classes")
    return GroundTruth(class_names, tuple(stamps), labels, things, instances)


def _parse_class_list(text: str, where: str) -> tuple[str, ...]:
    try:
        payload = json.loads(text)
        classes = payload["classes"]
    except (ValueError, KeyError, TypeError) as error:
        raise BagError(f"{where}: expected JSON {{\"classes\": [...]}}, got {text[:80]!r}") from error
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise BagError(f"{where}: 'classes' must be a non-empty list of names, got {classes!r}")
    return tuple(classes)


def _parse_things(text: str, class_names: Sequence[str], where: str) -> tuple[str, ...]:
    """The optional ``things`` of a class-list JSON (bags written before it have none: ())."""
    things = json.loads(text).get("things", [])
    if not isinstance(things, list) or not all(isinstance(name, str) for name in things):
        raise BagError(f"{where}: 'things' must be a list of class names, got {things!r}")
    try:
        thing_class_indices(class_names, things)
    except ValueError as error:
        raise BagError(f"{where}: {error}") from error
    return tuple(things)


def _cloud_fields(message: Any, names: Sequence[str], where: str) -> dict[str, np.ndarray]:
    """Copies of the fields ``names`` of a cloud: the first is required, the others are optional."""
    try:
        points = cloud_to_array(message)
    except MessageFormatError as error:
        raise BagError(f"{where}: malformed PointCloud2: {error}") from error
    present = points.dtype.names or ()
    if names[0] not in present:
        raise BagError(f"{where}: PointCloud2 has no '{names[0]}' field (fields: {list(present)})")
    return {name: np.array(points[name]) for name in names if name in present}


@dataclass(frozen=True)
class Prediction:
    """One labelled cloud. stamp: ns (the input cloud's); labels: (N,) uint16 indices into
    ``class_names`` (`UNKNOWN_INDEX` = unknown); class_names: the list the labels index; instances:
    (N,) uint32 object ids (0 = none), None when the output had no ``instance`` field."""

    stamp: int
    labels: np.ndarray
    class_names: tuple[str, ...]
    instances: Optional[np.ndarray] = None


@dataclass
class Recording:
    """The node's output over one replay: labelled clouds (arrival order) and latencies (ms)."""

    predictions: list[Prediction] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)


def read_recording(path: Union[str, Path]) -> Recording:
    """Read a recording of the node's output (see :mod:`clip2scene_ros.replay`).

    Each ``/segmented_points`` cloud is interpreted with the class list last announced on
    ``/class_names`` before it (log-time order), as the node guarantees.
    """
    recording = Recording()
    with BagFile(path) as bag:
        bag.require({SEGMENTED_TOPIC: POINT_CLOUD2, CLASS_NAMES_TOPIC: STRING})
        topics = [SEGMENTED_TOPIC, CLASS_NAMES_TOPIC]
        if LATENCY_TOPIC in bag.topics:
            topics.append(LATENCY_TOPIC)
        classes: tuple[str, ...] = ()
        for topic, _, message in bag.messages(topics):
            where = f"{bag.path} {topic}"
            if topic == CLASS_NAMES_TOPIC:
                classes = _parse_class_list(message.data, where)
            elif topic == LATENCY_TOPIC:
                recording.latencies_ms.append(float(message.data))
            else:
                if not classes:
                    raise BagError(f"{where}: a labelled cloud came before any class list on "
                                   f"{CLASS_NAMES_TOPIC}")
                fields = _cloud_fields(message, ("label", "instance"), where)
                recording.predictions.append(Prediction(
                    stamp_to_ns(message.header.stamp), fields["label"].astype(np.uint16), classes,
                    fields["instance"].astype(np.uint32) if "instance" in fields else None))
    return recording


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

def canonical_class_name(name: str) -> str:
    """Spelling-insensitive form of a class name: lower case, ``_``/``-`` as spaces, single spaces."""
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def dataset_label_table(predicted_names: Sequence[str], dataset_names: Sequence[str],
                        mapping: Optional[Mapping[str, str]] = None) -> np.ndarray:
    """(K,) int64: dataset label (1..C) of each predicted class index, 0 where a name is no dataset class.

    A predicted name goes through ``mapping`` (predicted name -> dataset class, e.g. ``automobile ->
    car``) when listed there, else it must name a dataset class itself. Names compare by
    :func:`canonical_class_name`. Raises ValueError when ``mapping`` names a class the dataset lacks.
    """
    dataset = {canonical_class_name(name): label for label, name in enumerate(dataset_names, start=1)}
    targets = {canonical_class_name(k): canonical_class_name(v) for k, v in (mapping or {}).items()}
    unknown = sorted(v for v in targets.values() if v not in dataset)
    if unknown:
        raise ValueError(f"class mapping targets {unknown} are not dataset classes {list(dataset_names)}")
    table = np.zeros(len(predicted_names), np.int64)
    for index, name in enumerate(predicted_names):
        key = canonical_class_name(name)
        table[index] = dataset.get(targets.get(key, key), 0)
    return table


def to_dataset_labels(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(N,) predicted indices (uint16; `UNKNOWN_INDEX` = unknown) -> (N,) int64 dataset labels (0 = none)."""
    labels = np.asarray(labels).astype(np.int64)
    inside = labels < len(table)
    return np.where(inside, table[np.where(inside, labels, 0)], 0)


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
