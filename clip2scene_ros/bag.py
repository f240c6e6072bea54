"""rosbag2 files for clip2scene, through the pure-Python ``rosbags`` library (no ROS graph needed): the
topics, message builders, writing and reading. What is done with bags lives beside it:
:mod:`clip2scene_ros.bag_export` (dataset frames -> bag), :mod:`clip2scene_ros.bag_evaluation`
(offline segmentation of a bag, scoring against its ground truth) and :mod:`clip2scene_ros.replay`
(live replay into a running node).

* **Layout** (what :func:`clip2scene_ros.bag_export.export_frames` writes: a rosbag2, mcap by default
  or sqlite3, of standard messages stamped with the frames' own timestamps):

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
* **Labels**: the ground truth holds the dataset's evaluation labels (1..C, 0 = ignore; the
  convention of ``clip2scene_core/frame.py``); the node's recorded output holds class indices into
  the class list it announced (0-based, `clip2scene_core.segmenter.UNKNOWN_LABEL` = unknown), which
  :func:`clip2scene_core.metrics.to_dataset_labels` turns into labels.
* **Reading**: :func:`read_input` (frame stamps + ground truth of an exported bag) and
  :func:`read_recording` (what the node published: labelled clouds, class-list announcements and
  latencies), with clear :class:`BagError` messages for missing topics, wrong types and damaged files.
* **Recording** (:class:`BagWriter`): raw CDR messages from a live replay go straight into a bag.
"""
from __future__ import annotations

import json
import logging
import shutil
import struct
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.rosbag2.errors import ReaderError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from clip2scene_core.objects import validated_thing_names
from clip2scene_ros.conversions import (MessageFormatError, cloud_to_array, dtype_to_fields, make_cloud_array,
                                        stamp_to_ns)

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
    try:
        return validated_thing_names(json.loads(text).get("things", []), class_names, where)
    except ValueError as error:
        raise BagError(str(error)) from error


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
    ``class_names`` (`clip2scene_core.segmenter.UNKNOWN_LABEL` = unknown); class_names: the list the
    labels index; instances: (N,) uint32 object ids (0 = none), None when the output had no
    ``instance`` field."""

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
