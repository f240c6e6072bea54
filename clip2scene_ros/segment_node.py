"""ROS 2 node ``clip2scene_segment``: LiDAR (+ optional cameras) in, labelled PointCloud2 out.

Thin glue over :class:`clip2scene_core.segmenter.Segmenter`:

* subscribes ``points`` (sensor_msgs/PointCloud2) and, with ``use_cameras``, ``<camera>/image`` +
  ``<camera>/camera_info`` for each of ``camera_names``;
* a worker thread processes the newest cloud only (queue depth 1; replaced clouds are counted as
  drops), so callbacks never block on the network;
* publishes ``segmented_points`` (x, y, z, intensity, label uint16, score float32, rgb),
  ``class_names`` (latched std_msgs/String: JSON ``{"version", "classes"}``), ``segment_latency``
  (std_msgs/Float64, milliseconds from cloud arrival to publication) and ``/diagnostics``;
* ``class_names`` / ``prompt_templates`` may change at run time: a change is validated in the
  parameter callback (rejected with a reason when bad), encoded on a background thread, and swapped
  in by the worker between two clouds, after announcing the new list on ``class_names``. Every output
  cloud is therefore preceded by the announcement of the list its labels index.

Parameter defaults live in ``config/segment.yaml`` (the single source); descriptors here add types,
ranges and read-only flags.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import yaml

import rclpy
import rclpy.utilities
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float64, String

from clip2scene_ros.conversions import (MessageFormatError, camera_info_to_intrinsics, cloud_to_xyz,
                                       image_to_numpy, segmented_cloud, stamp_to_ns)
from clip2scene_ros.sync import CameraCollector, CollectorConfig, SyncedSet

NODE_NAME = "clip2scene_segment"
DYNAMIC_PARAMETERS = ("class_names", "prompt_templates", "score_threshold", "max_points")


def default_parameters() -> dict[str, Any]:
    """The node's parameter defaults from ``config/segment.yaml`` (installed share/ or the checkout)."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / "segment.yaml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(0, Path(get_package_share_directory("clip2scene_ros")) / "config" / "segment.yaml")
    except Exception:  # not installed in an ament prefix: use the checkout's file
        pass
    for path in candidates:
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                return yaml.safe_load(handle)[NODE_NAME]["ros__parameters"]
    raise FileNotFoundError(f"config/segment.yaml not found (looked in {[str(p) for p in candidates]})")


def non_empty(values: Sequence[str]) -> list[str]:
    """ROS parameter files cannot hold an empty list, so ``[""]`` stands for "none"."""
    return [value for value in values if value.strip()]


def descriptor(description: str, read_only: bool = False, float_range=None, int_range=None):
    result = ParameterDescriptor(description=description, read_only=read_only)
    if float_range:
        result.floating_point_range = [FloatingPointRange(from_value=float_range[0],
                                                          to_value=float_range[1], step=0.0)]
    if int_range:
        result.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return result


DESCRIPTORS = {
    "checkpoint": descriptor("clip2scene checkpoint file (.pt)", read_only=True),
    "device": descriptor("auto | cpu | cuda[:N]", read_only=True),
    "sparse_backend": descriptor("'' (the checkpoint's) | pure | spconv | minkowski", read_only=True),
    "class_names": descriptor("open-vocabulary class list ([''] = the checkpoint's classes)"),
    "prompt_templates": descriptor("prompt templates with one '{}' ([''] = 85-template ensemble)"),
    "score_threshold": descriptor("cosine score under which a point is unknown (65535)",
                                  float_range=(-1.0, 1.0)),
    "text_cache_dir": descriptor("text-embedding cache folder ('' = default)", read_only=True),
    "reliability": descriptor("input QoS reliability: best_effort | reliable", read_only=True),
    "depth": descriptor("input QoS history depth", read_only=True, int_range=(1, 100)),
    "max_points": descriptor("clouds with more points are logged and skipped", int_range=(1, 10_000_000)),
    "use_cameras": descriptor("pair clouds with camera images for the 2D-3D ensemble", read_only=True),
    "camera_names": descriptor("camera names; topics <name>/image and <name>/camera_info", read_only=True),
    "calibration_file": descriptor("YAML {camera: {lidar_to_camera: 4x4}}", read_only=True),
    "sync_tolerance": descriptor("max |cloud - image| stamp difference, s", read_only=True,
                                 float_range=(0.0, 10.0)),
    "sync_timeout": descriptor("how long a cloud waits for late cameras, s", read_only=True,
                               float_range=(0.0, 10.0)),
    "diagnostics_period": descriptor("period of /diagnostics, s", read_only=True,
                                     float_range=(0.05, 60.0)),
}


class LatencyWindow:
    """Recent latencies (ms) for diagnostics percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: list[float] = []
        self._size = size

    def add(self, value: float) -> None:
        self._values.append(value)
        del self._values[:-self._size]

    def percentile(self, q: float) -> float:
        return float(np.percentile(self._values, q)) if self._values else float("nan")


class SegmentNode(Node):
    """The segmentation node; see the module docstring."""

    def __init__(self, segmenter: Any = None, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        # Set first: destroy_node() must work on a node whose construction failed half way.
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._encoder: Optional[ThreadPoolExecutor] = None
        for name, value in default_parameters().items():
            self.declare_parameter(name, value, DESCRIPTORS[name])
        param = lambda name: self.get_parameter(name).value  # noqa: E731

        if segmenter is None:
            segmenter = self._build_segmenter(param)
        self.segmenter = segmenter
        self.max_points = int(param("max_points"))

        # Worker state: newest cloud wins (queue depth 1).
        self._condition = threading.Condition()
        self._pending_cloud: Optional[tuple[PointCloud2, float]] = None
        self._pending_space = None
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip2scene-text")
        self._encoding: Optional[Future] = None
        self.stats = {"received": 0, "processed": 0, "dropped": 0, "skipped": 0}
        self._latency = LatencyWindow()
        self._rate_mark = (time.monotonic(), 0)
        self._announced_version = -1

        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        reliability = str(param("reliability"))
        if reliability not in ("best_effort", "reliable"):
            raise ValueError(f"parameter reliability must be best_effort or reliable, got {reliability!r}")
        input_qos = QoSProfile(
            depth=int(param("depth")), history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE)
        output_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.cloud_publisher = self.create_publisher(PointCloud2, "segmented_points", output_qos)
        self.classes_publisher = self.create_publisher(String, "class_names", latched)
        self.latency_publisher = self.create_publisher(Float64, "segment_latency", output_qos)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(PointCloud2, "points", self._on_cloud, input_qos)
        self.collector: Optional[CameraCollector] = None
        if bool(param("use_cameras")):
            self._setup_cameras(param, input_qos)
        self.create_timer(float(param("diagnostics_period")), self._publish_diagnostics)

        self._announce(self.segmenter.class_space)
        self._worker = threading.Thread(target=self._work, name="clip2scene-segment", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready on {self.segmenter.device}: {len(self.segmenter.class_space.names)} classes, "
            f"text space {self.segmenter.text_spec.get('name')}")

    # -- construction ----------------------------------------------------------------------------
    def _build_segmenter(self, param):
        from clip2scene_core.segmenter import Segmenter

        checkpoint = str(param("checkpoint"))
        if not checkpoint:
            raise ValueError("parameter 'checkpoint' is empty: set it to a clip2scene checkpoint file "
                             "(e.g. --ros-args -p checkpoint:=/path/model.pt)")
        return Segmenter(
            checkpoint,
            class_names=non_empty(param("class_names")) or None,
            device=str(param("device")),
            backend=str(param("sparse_backend")) or None,
            score_threshold=float(param("score_threshold")),
            prompt_templates=non_empty(param("prompt_templates")) or None,
            text_cache_dir=str(param("text_cache_dir")) or None,
            image_teacher="auto" if bool(param("use_cameras")) else None,
        )

    def _setup_cameras(self, param, qos: QoSProfile) -> None:
        """Subscribe each camera and pair its images with clouds (LiDAR-anchored, see sync.py)."""
        names = non_empty(param("camera_names"))
        if not names:
            raise ValueError("use_cameras is true but camera_names is empty")
        self.extrinsics = load_calibration(str(param("calibration_file")), names)
        self.intrinsics: dict[str, Any] = {}
        self.collector = CameraCollector(names, CollectorConfig(
            tolerance_ns=int(float(param("sync_tolerance")) * 1e9),
            timeout_ns=int(float(param("sync_timeout")) * 1e9)))
        for name in names:
            self.create_subscription(Image, f"{name}/image",
                                     lambda message, name=name: self._on_image(name, message), qos)
            self.create_subscription(CameraInfo, f"{name}/camera_info",
                                     lambda message, name=name: self._on_camera_info(name, message), 10)
        self.get_logger().info(f"2D-3D ensemble with cameras {names}")

    def _on_image(self, name: str, message: Image) -> None:
        self.collector.add_image(name, stamp_to_ns(message.header.stamp), message)
        with self._condition:
            self._condition.notify()

    def _on_camera_info(self, name: str, message: CameraInfo) -> None:
        try:
            self.intrinsics[name] = camera_info_to_intrinsics(message)
        except MessageFormatError as error:
            self.get_logger().warning(f"skipped malformed CameraInfo of {name}: {error}",
                                      throttle_duration_sec=5.0)

    def _cameras_for(self, synced: SyncedSet) -> list:
        """`Camera`s for the images paired with a cloud (cameras without intrinsics yet are left out)."""
        from clip2scene_core.frame import Camera

        cameras = []
        for name, stamped in synced.images.items():
            intrinsics = self.intrinsics.get(name)
            if stamped is None or intrinsics is None:
                continue
            try:
                image = image_to_numpy(stamped.msg)
                if image.ndim != 3:
                    raise MessageFormatError(f"encoding {stamped.msg.encoding!r} is not a colour image")
                cameras.append(Camera(name, image, intrinsics.K, self.extrinsics[name], stamped.stamp))
            except (MessageFormatError, ValueError) as error:
                self.get_logger().warning(f"skipped image of {name}: {error}", throttle_duration_sec=5.0)
        return cameras

    # -- parameters ------------------------------------------------------------------------------
    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Reject bad values with a reason (runs before any value changes)."""
        from clip2scene_core.segmenter import validate_class_names

        for parameter in parameters:
            try:
                if parameter.name == "class_names":
                    if list(parameter.value or []) != [""]:  # [""] = the checkpoint's classes
                        validate_class_names(list(parameter.value or []))
                elif parameter.name == "prompt_templates":
                    for template in non_empty(parameter.value or []):
                        if template.count("{}") != 1:
                            raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
            except (TypeError, ValueError) as error:
                return SetParametersResult(successful=False, reason=f"{parameter.name}: {error}")
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        names = {p.name: p.value for p in parameters}
        if "score_threshold" in names:
            self.segmenter.score_threshold = float(names["score_threshold"])
        if "max_points" in names:
            self.max_points = int(names["max_points"])
        if "class_names" in names or "prompt_templates" in names:
            classes = non_empty(self.get_parameter("class_names").value) or list(self.segmenter.train_classes)
            templates = non_empty(self.get_parameter("prompt_templates").value) or None
            self.get_logger().info(f"encoding new class list {classes}")
            future = self._encoder.submit(self.segmenter.encode_classes, classes, templates)
            future.add_done_callback(self._on_classes_encoded)
            self._encoding = future

    def _on_classes_encoded(self, future: Future) -> None:
        try:
            space = future.result()
        except Exception as error:  # keep serving with the previous list
            self.get_logger().error(f"could not encode the new class list: {error}")
            return
        with self._condition:
            if self._pending_space is None or space.version > self._pending_space.version:
                self._pending_space = space
            self._condition.notify()

    def _announce(self, space) -> None:
        """Publish a class list on the latched topic (before any cloud labelled with it)."""
        if space.version == self._announced_version:
            return
        message = String(data=json.dumps({"version": space.version, "classes": list(space.names)}))
        self.classes_publisher.publish(message)
        self._announced_version = space.version

    # -- data path -------------------------------------------------------------------------------
    def _on_cloud(self, message: PointCloud2) -> None:
        if self.collector is not None:
            self.collector.add_cloud(stamp_to_ns(message.header.stamp), (message, time.monotonic()))
            with self._condition:
                self.stats["received"] += 1
                self._condition.notify()
            return
        with self._condition:
            self.stats["received"] += 1
            if self._pending_cloud is not None:
                self.stats["dropped"] += 1
            self._pending_cloud = (message, time.monotonic())
            self._condition.notify()

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._condition:
                # With cameras, wake often: a cloud becomes ready when its cameras settle or time out.
                self._condition.wait_for(
                    lambda: self._stop.is_set() or self._pending_cloud or self._pending_space,
                    timeout=0.01 if self.collector is not None else 0.5)
                cloud, space = self._pending_cloud, self._pending_space
                self._pending_cloud = self._pending_space = None
            cameras: list = []
            if self.collector is not None:
                ready = self.collector.poll()
                if ready:
                    cloud = ready[-1].cloud
                    cameras = self._cameras_for(ready[-1])
                    self.stats["dropped"] = self.collector.stats().dropped
            if space is not None and space.version > self.segmenter.class_space.version:
                self.segmenter.set_class_space(space)
                self._announce(space)
                self.get_logger().info(f"class list v{space.version} active: {list(space.names)}")
            if cloud is not None:
                try:
                    self._process(*cloud, cameras=cameras)
                except MessageFormatError as error:
                    self.stats["skipped"] += 1
                    self.get_logger().warning(f"skipped malformed PointCloud2: {error}")
                except Exception as error:  # never let one cloud stop the node
                    self.stats["skipped"] += 1
                    self.get_logger().error(f"failed to segment a cloud: {error!r}")

    def _process(self, message: PointCloud2, arrived: float, cameras: Sequence = ()) -> None:
        count = int(message.width) * int(message.height)
        if count > self.max_points:
            raise MessageFormatError(f"cloud has {count} points, more than max_points={self.max_points}")
        cloud = cloud_to_xyz(message, drop_invalid=False)
        if len(cloud.points) == 0:
            raise MessageFormatError("cloud is empty")
        finite = np.isfinite(cloud.points).all(axis=1)
        if not finite.all():
            self.get_logger().warning(
                f"{int((~finite).sum())} of {len(finite)} points have NaN/Inf coordinates: labelled unknown",
                throttle_duration_sec=5.0)
        space = self.segmenter.class_space
        self._announce(space)
        result = self.segmenter.segment(cloud.points, cloud.intensity, cameras=cameras, class_space=space)
        colors = prediction_colors(result.labels)
        output = segmented_cloud(np.nan_to_num(cloud.points), result.labels, result.scores, colors,
                                 intensity=cloud.intensity, frame_id=message.header.frame_id)
        output.header.stamp = message.header.stamp
        self.cloud_publisher.publish(output)
        latency_ms = (time.monotonic() - arrived) * 1e3
        self.latency_publisher.publish(Float64(data=latency_ms))
        self._latency.add(latency_ms)
        self.stats["processed"] += 1

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        mark_time, mark_count = self._rate_mark
        rate = (self.stats["processed"] - mark_count) / max(now - mark_time, 1e-9)
        self._rate_mark = (now, self.stats["processed"])
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  hardware_id=str(self.segmenter.device))
        level_ok = self.stats["skipped"] == 0
        status.level = DiagnosticStatus.OK if level_ok else DiagnosticStatus.WARN
        status.message = "ok" if level_ok else "some clouds were skipped (see log)"
        values = {
            "rate_hz": f"{rate:.2f}",
            "latency_p50_ms": f"{self._latency.percentile(50):.1f}",
            "latency_p95_ms": f"{self._latency.percentile(95):.1f}",
            "device": str(self.segmenter.device),
            "class_list_version": str(self.segmenter.class_space.version),
            **{key: str(value) for key, value in self.stats.items()},
        }
        if self.collector is not None:
            values.update({f"camera_missing_{name}": str(count)
                           for name, count in self.collector.stats().missing.items()})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._worker is not None:
            with self._condition:
                self._condition.notify_all()
            self._worker.join(timeout=10)
        if self._encoder is not None:
            self._encoder.shutdown(wait=False, cancel_futures=True)
        super().destroy_node()


def load_calibration(path: str, cameras: Sequence[str]) -> dict[str, np.ndarray]:
    """Read ``{camera: {lidar_to_camera: 4x4}}`` from a YAML file; every camera must be present."""
    if not path:
        raise ValueError("use_cameras is true but calibration_file is empty")
    if not Path(path).is_file():
        raise FileNotFoundError(f"calibration_file {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    extrinsics = {}
    for name in cameras:
        try:
            matrix = np.asarray(data[name]["lidar_to_camera"], dtype=np.float64)
        except (KeyError, TypeError) as error:
            raise ValueError(f"calibration_file {path} has no lidar_to_camera for camera {name!r}") from error
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ValueError(f"calibration_file {path}: {name}.lidar_to_camera must be a finite 4x4 matrix")
        extrinsics[name] = matrix
    return extrinsics


def prediction_colors(labels: np.ndarray) -> np.ndarray:
    """(N,) class indices (65535 = unknown) -> (N, 3) uint8 RGB in the project's label palette."""
    from clip2scene_core.segmenter import UNKNOWN_LABEL
    from clip2scene_core.visualize import label_colors

    one_based = labels.astype(np.int64) + 1
    one_based[labels == UNKNOWN_LABEL] = 0  # drawn grey, like ignored ground truth
    return (label_colors(one_based) * 255).round().astype(np.uint8)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=NODE_NAME,
        description="clip2scene open-vocabulary LiDAR segmentation node. Parameters (set with "
                    "--ros-args -p NAME:=VALUE or --params-file config/segment.yaml): "
                    + ", ".join(f"{name} ({d.description})" for name, d in DESCRIPTORS.items()),
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parse_arguments(rclpy.utilities.remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    node = None
    try:
        node = SegmentNode()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (FileNotFoundError, ValueError) as error:
        print(f"{NODE_NAME}: {error}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
