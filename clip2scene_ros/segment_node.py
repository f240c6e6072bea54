"""ROS 2 node ``clip2scene_segment``: LiDAR (+ optional cameras) in, labelled PointCloud2 out.

Thin glue over :class:`clip2scene_core.segmenter.Segmenter`:

* subscribes ``~/input/pointcloud`` (sensor_msgs/PointCloud2) and, with ``use_cameras``,
  ``~/input/<camera>/image`` + ``~/input/<camera>/camera_info`` for each of ``camera_names``
  (topic names and the remappings to the earlier ones: :mod:`clip2scene_ros.topics`);
* a worker thread processes the newest cloud only (queue depth 1; replaced clouds are counted as
  drops), so callbacks never block on the network (:class:`clip2scene_core.cloud_stream.CloudStream`);
* publishes ``~/output/pointcloud`` (x, y, z, intensity, label uint32, score float32, rgb, instance
  uint32; organised clouds keep height x width), ``~/output/objects`` (visualization_msgs/MarkerArray:
  one box per object, same stamp and frame as the cloud, see
  :func:`clip2scene_ros.conversions.object_markers`), ``~/output/class_names`` (latched
  std_msgs/String: JSON ``{"version", "classes", "things"}``), ``~/debug/latency_ms``
  (std_msgs/Float64, milliseconds from cloud arrival to publication) and ``/diagnostics``;
* ``class_names`` / ``prompt_templates`` / ``thing_classes`` may change at run time: a change is
  validated in full in the parameter callback (rejected with a reason when bad, e.g. a thing class
  that is not in the class list), encoded on a background thread (a newer change cancels an older
  one), and swapped in by the worker between two clouds, after announcing the new list on
  ``~/output/class_names`` (the ordering lives in :mod:`clip2scene_core.cloud_stream`). Every
  output cloud is therefore preceded by the announcement of the list its labels index;
* clouds that are lost in transport (best effort) are counted from the DDS "message lost" event, and
  a publisher that is matched but delivers nothing for ``input_timeout`` seconds is reported.

Parameters: see :mod:`clip2scene_ros.node_parameters` and ``config/segment.yaml``. Transport
settings: :mod:`clip2scene_ros.transport`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from typing import Any, NoReturn, Optional, Sequence

import numpy as np

import rclpy
import rclpy.utilities
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float64, String
from visualization_msgs.msg import MarkerArray

from clip2scene_core.calibration import read_calibration
from clip2scene_core.cloud_stream import CloudStream
from clip2scene_core.palette import prediction_colors
from clip2scene_core.segmenter import ClassSpace

from clip2scene_ros import topics
from clip2scene_ros.camera_input import CameraInput
from clip2scene_ros.cloud_input import IntensityScale, read_cloud
from clip2scene_ros.conversions import MessageFormatError, object_markers, segmented_cloud, stamp_to_ns
from clip2scene_ros.health import (GroupedWarnings, InputWatchdog, LatencyWindow, RateMeter,
                                   RecentEvents, SequenceGaps)
from clip2scene_ros.node_parameters import (DESCRIPTORS, check_reliability, default_parameters,
                                            non_empty, parse_intensity_scale)
from clip2scene_ros.sync import CollectorConfig
from clip2scene_ros.transport import apply_transport_profile

NODE_NAME = "clip2scene_segment"
#: Seconds between two warnings of one kind (malformed clouds of one reason, lost clouds, ...).
WARNING_PERIOD = 10.0
#: How long stopping waits for the worker to finish a cloud before the process exits without it.
STOP_WAIT = 0.3
LOST_HINT = ("best-effort clouds larger than the publisher's DDS shared-memory segment arrive in "
             "fragments and are lost with one of them: give the publisher config/fastdds.xml "
             "(README, 'Large clouds') or publish and subscribe reliable")


class SegmentNode(Node):
    """The segmentation node; see the module docstring.

    Raises on construction (caught by `main`, which prints one line): rclpy's ParameterException
    for a parameter of the wrong type or out of its range, ValueError / FileNotFoundError for a bad
    value, checkpoint or calibration file.
    """

    def __init__(self, segmenter: Any = None, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        # Set first: destroy_node() must work on a node whose construction failed half way.
        self._stream: Optional[CloudStream] = None
        # Registered before declaring, so values given at start-up are validated like later ones.
        self.add_on_set_parameters_callback(self._validate_parameters)
        for name, value in default_parameters().items():
            self.declare_parameter(name, value, DESCRIPTORS[name])
        param = lambda name: self.get_parameter(name).value  # noqa: E731
        reliability = check_reliability(str(param("reliability")))
        self.intensity_scale = IntensityScale(parse_intensity_scale(param("intensity_scale")),
                                              self.get_logger().info)
        if segmenter is None:
            segmenter = self._build_segmenter(param)
        self.segmenter = segmenter
        self.max_points = int(param("max_points"))

        # received = processed + dropped (replaced while busy) + skipped (malformed); missed: sent by a
        # publisher but never delivered to the node (lost in transport, or replaced in the DDS queue);
        # lost: what DDS itself reported lost.
        self.stats = {"received": 0, "processed": 0, "dropped": 0, "skipped": 0, "missed": 0, "lost": 0}
        self._sequence_gaps = SequenceGaps()
        self._latency = LatencyWindow()
        self._rate = RateMeter()
        window = float(param("diagnostics_window"))
        self._recent_skips, self._recent_losses = RecentEvents(window), RecentEvents(window)
        self._warnings = GroupedWarnings(self.get_logger().warning, WARNING_PERIOD, time.monotonic)
        self._watchdog = InputWatchdog(float(param("input_timeout")), time.monotonic())
        self._stalled: Optional[float] = None
        self.add_post_set_parameters_callback(self._apply_parameters)

        input_qos = QoSProfile(
            depth=int(param("depth")), history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE)
        output_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        overridable = QoSOverridingOptions.with_default_policies()
        self.cloud_publisher = self.create_publisher(PointCloud2, topics.OUTPUT_POINTCLOUD, output_qos,
                                                     qos_overriding_options=overridable)
        self.classes_publisher = self.create_publisher(String, topics.OUTPUT_CLASS_NAMES, latched,
                                                       qos_overriding_options=overridable)
        self.latency_publisher = self.create_publisher(Float64, topics.DEBUG_LATENCY, output_qos,
                                                       qos_overriding_options=overridable)
        self.objects_publisher = self.create_publisher(MarkerArray, topics.OUTPUT_OBJECTS, output_qos,
                                                       qos_overriding_options=overridable)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.cloud_subscription = self.create_subscription(
            PointCloud2, topics.INPUT_POINTCLOUD, self._on_cloud, input_qos, qos_overriding_options=overridable,
            event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_clouds_lost))
        self.camera_input: Optional[CameraInput] = None
        if bool(param("use_cameras")):
            self._setup_cameras(param, input_qos)
        self.create_timer(float(param("diagnostics_period")), self._publish_diagnostics)

        # With cameras, wake often: a cloud becomes ready when its cameras settle or time out.
        self._stream = CloudStream(
            self.segmenter, self._process, self._announce, self._on_failure, self.get_logger().error,
            ready=self._cloud_with_cameras if self.camera_input is not None else None,
            poll_period=0.01 if self.camera_input is not None else 0.5)
        self.get_logger().info(
            f"ready on {self.segmenter.device}: {len(self.segmenter.class_space.names)} classes, "
            f"text space {self.segmenter.text_spec.get('name')}, input "
            f"{self.cloud_subscription.topic_name} ({reliability})")

    # -- construction ----------------------------------------------------------------------------
    def _build_segmenter(self, param):
        from clip2scene_core.device import resolve_device
        from clip2scene_core.segmenter import Segmenter

        resolve_device(str(param("device")))  # fail on a wrong device before loading anything
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
            thing_classes=non_empty(param("thing_classes")) or None,
            text_cache_dir=str(param("text_cache_dir")) or None,
            image_teacher=image_teacher(str(param("image_teacher"))) if bool(param("use_cameras")) else None,
            max_range=float(param("max_range")),
            voxel_size=float(param("voxel_size")) or None,
        )

    def _setup_cameras(self, param, qos: QoSProfile) -> None:
        """Subscribe each camera and pair its images with clouds (LiDAR-anchored, see sync.py)."""
        names = non_empty(param("camera_names"))
        if not names:
            raise ValueError("use_cameras is true but camera_names is empty")
        self.camera_input = CameraInput(
            names, read_calibration(str(param("calibration_file")), names),
            CollectorConfig(tolerance_ns=int(float(param("sync_tolerance")) * 1e9),
                            timeout_ns=int(float(param("sync_timeout")) * 1e9)),
            lambda text: self.get_logger().warning(text, throttle_duration_sec=5.0))
        for name in names:
            self.create_subscription(Image, topics.camera_image(name),
                                     lambda message, name=name: self._on_image(name, message), qos)
            self.create_subscription(CameraInfo, topics.camera_info(name),
                                     lambda message, name=name: self.camera_input.add_camera_info(name, message),
                                     10)
        self.get_logger().info(f"2D-3D ensemble with cameras {names}")

    def _on_image(self, name: str, message: Image) -> None:
        self.camera_input.add_image(name, message)
        self._stream.wake()

    def _cloud_with_cameras(self) -> Optional[tuple[PointCloud2, float, list]]:
        """The newest cloud whose cameras have settled or timed out, with its images; or None."""
        ready = self.camera_input.poll()
        if not ready:
            return None
        self.stats["dropped"] = self.camera_input.stats().dropped
        message, arrived = ready[-1].cloud
        return message, arrived, self.camera_input.cameras(ready[-1])

    # -- parameters ------------------------------------------------------------------------------
    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Reject bad values with a reason (runs before any value changes, at start-up too)."""
        from clip2scene_core.clip.prompts import validate_prompt_templates
        from clip2scene_core.segmenter import validate_class_names

        for parameter in parameters:
            try:
                if parameter.name == "class_names":
                    if list(parameter.value or []) != [""]:  # [""] = the checkpoint's classes
                        validate_class_names(list(parameter.value or []))
                elif parameter.name == "prompt_templates":
                    templates = non_empty(parameter.value or [])
                    if templates:  # [""] = the 85-template ensemble
                        validate_prompt_templates(templates)
            except (TypeError, ValueError) as error:
                return SetParametersResult(successful=False, reason=f"{parameter.name}: {error}")
        return self._validate_things({p.name: p.value for p in parameters})

    def _validate_things(self, values: dict[str, Any]) -> SetParametersResult:
        """Thing classes must name classes of the class list, both as they will be after ``values``.

        At start-up (no segmenter yet) the `Segmenter` checks them itself.
        """
        segmenter = getattr(self, "segmenter", None)
        if segmenter is None or not {"class_names", "thing_classes"} & set(values):
            return SetParametersResult(successful=True)
        current = lambda name: values[name] if name in values else self.get_parameter(name).value  # noqa: E731
        try:
            segmenter.thing_indices(non_empty(current("class_names") or []) or segmenter.train_classes,
                                    non_empty(current("thing_classes") or []) or None)
        except ValueError as error:
            name = "thing_classes" if "thing_classes" in values else "class_names"
            hint = "" if name == "thing_classes" else \
                " (set thing_classes in the same call, or reset it to [''] first)"
            return SetParametersResult(successful=False, reason=f"{name}: {error}{hint}")
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        names = {p.name: p.value for p in parameters}
        if "score_threshold" in names:
            self.segmenter.score_threshold = float(names["score_threshold"])
        if "max_points" in names:
            self.max_points = int(names["max_points"])
        if {"class_names", "prompt_templates", "thing_classes"} & set(names):
            # A thing-only change goes the same way (the text embeddings come from the cache), so
            # every change swaps in between two clouds, in the order it was made.
            classes = non_empty(self.get_parameter("class_names").value) or list(self.segmenter.train_classes)
            templates = non_empty(self.get_parameter("prompt_templates").value) or None
            things = non_empty(self.get_parameter("thing_classes").value) or None
            preview = classes if len(classes) <= 16 else classes[:16] + [f"... ({len(classes)} in all)"]
            self.get_logger().info(f"encoding new class list {preview}, things {things or 'of the vocabulary'}")
            self._stream.request_classes(classes, templates, thing_classes=things)

    def _announce(self, space: ClassSpace) -> None:
        """Publish a class list on the latched topic (the stream calls it before any cloud labelled
        with the list, once per version)."""
        message = String(data=json.dumps({"version": space.version, "classes": list(space.names),
                                          "things": list(space.thing_names)}))
        self.classes_publisher.publish(message)
        if self._stream is not None:  # the initial list is announced while the stream starts
            self.get_logger().info(f"class list v{space.version} active: {len(space.names)} classes")

    # -- data path -------------------------------------------------------------------------------
    def _on_cloud(self, message: PointCloud2, info: Any) -> None:
        now = time.monotonic()
        self._watchdog.cloud_arrived(now)
        self.stats["missed"] += self._sequence_gaps.missed(info)
        self.stats["received"] += 1
        if self.camera_input is not None:
            self.camera_input.add_cloud(stamp_to_ns(message.header.stamp), (message, now))
            self._stream.wake()
        elif self._stream.submit((message, now, [])):
            self.stats["dropped"] += 1

    def _on_clouds_lost(self, info) -> None:
        """DDS says clouds were lost on the way (best effort: fragments missing, or overwritten)."""
        count = int(info.total_count_change)
        now = time.monotonic()
        self.stats["lost"] += count
        for _ in range(count):
            self._recent_losses.add(now)
        self._warnings.warn("", f"{count} cloud(s) lost in transport before reaching the node: {LOST_HINT}")

    def _on_failure(self, error: BaseException) -> None:
        """A cloud could not be labelled: count and warn (grouped by reason), unless shutting down."""
        if isinstance(error, MessageFormatError):
            self._skip("skipped malformed PointCloud2: ", str(error))
        elif self.context.ok():
            self._skip("failed to segment a cloud: ", repr(error))

    def _skip(self, prefix: str, reason: str) -> None:
        self.stats["skipped"] += 1
        self._recent_skips.add(time.monotonic())
        self._warnings.warn(prefix, reason)

    def _process(self, cloud_in: tuple[PointCloud2, float, Sequence], space: ClassSpace) -> None:
        """Label one cloud (arrival time, paired camera images) with class list ``space``; publish it."""
        message, arrived, cameras = cloud_in
        cloud = read_cloud(message, self.max_points, self.intensity_scale)
        # NaN points are how organised clouds mark missing returns, so only far-away finite points
        # (a driver's garbage, or a wrong unit) are worth a warning; both are labelled unknown.
        far = np.isfinite(cloud.points).all(axis=1) & ~self.segmenter.in_range(cloud.points)
        if far.any():
            self._warnings.warn("", f"{int(far.sum())} of {len(far)} points lie beyond max_range="
                                    f"{self.segmenter.max_range:g} m or the voxel grid: labelled unknown")
        result = self.segmenter.segment(cloud.points, cloud.network_intensity, cameras=cameras,
                                        class_space=space)
        output = segmented_cloud(cloud.points, result.labels, result.scores,
                                 prediction_colors(result.labels), intensity=cloud.intensity,
                                 frame_id=message.header.frame_id, shape=cloud.shape,
                                 instances=result.instances)
        output.header.stamp = message.header.stamp
        objects = object_markers(result.objects, result.class_space.names,
                                 prediction_colors(result.objects.class_index), message.header.stamp,
                                 message.header.frame_id)
        if self._stream.stopped:
            return
        self.cloud_publisher.publish(output)
        self.objects_publisher.publish(objects)
        now = time.monotonic()
        latency_ms = (now - arrived) * 1e3
        self.latency_publisher.publish(Float64(data=latency_ms))
        self._latency.add(latency_ms)
        self._rate.add(now)
        self.stats["processed"] += 1

    # -- diagnostics -----------------------------------------------------------------------------
    def _problems(self, now: float) -> list[str]:
        """What is wrong lately (within diagnostics_window), one phrase each; empty = OK."""
        problems = []
        window = self._recent_skips.window
        skipped, lost = self._recent_skips.count(now), self._recent_losses.count(now)
        if skipped:
            problems.append(f"{skipped} cloud(s) skipped in the last {window:g} s (see log)")
        if lost:
            problems.append(f"{lost} cloud(s) lost in transport in the last {window:g} s")
        publishers = self.cloud_subscription.get_publisher_count()
        self._stalled = self._watchdog.stalled(publishers, now)
        if self._stalled is not None:
            problems.append(f"{publishers} publisher(s) matched on {self.cloud_subscription.topic_name} "
                            f"but no cloud arrived for {self._stalled:.0f} s")
            self._warnings.warn("", f"{problems[-1]}: {LOST_HINT}")
        return problems

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        problems = self._problems(now)
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  hardware_id=str(self.segmenter.device))
        status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        status.message = "; ".join(problems) or "ok"
        values = {
            "rate_hz": f"{self._rate.rate(now):.3f}",
            "latency_p50_ms": f"{self._latency.percentile(50):.1f}",
            "latency_p95_ms": f"{self._latency.percentile(95):.1f}",
            "device": str(self.segmenter.device),
            "class_list_version": str(self.segmenter.class_space.version),
            "publishers": str(self.cloud_subscription.get_publisher_count()),
            "seconds_without_cloud": "" if self._stalled is None else f"{self._stalled:.1f}",
            **{key: str(value) for key, value in self.stats.items()},
        }
        if self.camera_input is not None:
            values.update({f"camera_missing_{name}": str(count)
                           for name, count in self.camera_input.stats().missing.items()})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)

    def destroy_node(self) -> None:
        """Stop the worker and the encoder; waits at most `STOP_WAIT` s for a cloud in progress."""
        if self._stream is not None:
            self._stream.stop(STOP_WAIT)
        super().destroy_node()


def image_teacher(file: str):
    """The ensemble's image teacher: MaskCLIP (``"auto"``) or the recorded teacher in ``file``."""
    if not file:
        return "auto"
    from clip2scene_core.data.synthetic.recorded_teacher import RecordedTeacher

    return RecordedTeacher.load(file)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=NODE_NAME,
        description="clip2scene open-vocabulary LiDAR segmentation node. Parameters (set with "
                    "--ros-args -p NAME:=VALUE or --params-file config/segment.yaml): "
                    + ", ".join(f"{name} ({d.description})" for name, d in DESCRIPTORS.items()),
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a start-up failure, not only its one-line reason")
    return parser.parse_args(argv)


def startup_error(error: BaseException) -> str:
    """One line for a start-up failure: the reason, prefixed with its kind where that helps."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ParameterException):
        return f"bad parameter: {text}"
    if isinstance(error, (ValueError, FileNotFoundError)):
        return text
    return f"{type(error).__name__}: {text}"


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run the node until SIGINT / SIGTERM (exit status 0), or exit with status 2 and one line saying
    why it cannot start. Ends the process."""
    argv = list(sys.argv if argv is None else argv)
    options = parse_arguments(rclpy.utilities.remove_ros_args(argv)[1:])
    # No progress bars in a node's log (tqdm's own, and the Hugging Face ones text models load with).
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    transport = apply_transport_profile()
    rclpy.init(args=argv)
    node, code = None, 0
    try:
        node = SegmentNode()
        node.get_logger().info(transport)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as error:  # start-up failure (or a bug): one clear line, traceback on --debug
        if options.debug:
            traceback.print_exc()
        print(f"{NODE_NAME}: {startup_error(error)}", file=sys.stderr, flush=True)
        code = 2
    # Stopping takes up to STOP_WAIT s; a second Ctrl-C (ros2 launch forwards one as the terminal
    # sends its own) must not turn that into a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
    # ROS is shut down. Exit without the interpreter's teardown: it would wait for a cloud or a
    # class-list encode still running in torch (not interruptible), and torch's thread pools and the
    # C++ libraries' static destructors alone took 1.7-3 s more on a 2-core CPU (measured), for
    # nothing this process needs.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
