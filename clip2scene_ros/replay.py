"""Live replay: play an exported bag into the running segmentation node and record what it publishes.

:func:`replay_bag` publishes the bag's clouds (and any other chosen topics) as the recorded CDR bytes,
at the recorded timing divided by ``rate``, with reliable QoS once the node's subscription has matched.
Everything the node publishes on ``segmented_points``, ``class_names`` and ``segment_latency`` is
written, as received, into a new bag with ``rosbags``; the recording is then read back with
:func:`clip2scene_ros.bag.read_recording`, so evaluation always goes through the recorded file.

Class-list changes (``at frame i set class_names to [...]``, with their ``thing_classes``) go through
the node's ``rcl_interfaces/SetParametersAtomically`` service, as one change; the replay waits until the node has
announced the new list on ``class_names`` before it plays frame i, so the change takes effect exactly
there (the clock of the later frames is shifted by that wait).

:func:`running_segment_node` starts the node as a child process for a one-command evaluation.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import rclpy
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from clip2scene_ros.bag import (CLASS_NAMES_TOPIC, FLOAT64, LATENCY_TOPIC, POINT_CLOUD2, POINTS_TOPIC,
                                SEGMENTED_TOPIC, STRING, BagFile, BagWriter, Recording, read_recording, typestore)
from clip2scene_ros.bag_evaluation import ClassChange, changes_at
from clip2scene_ros.conversions import stamp_to_ns
from clip2scene_ros.topics import legacy_remappings, remap_arguments

LOGGER = logging.getLogger(__name__)

#: The segmentation node's fully qualified name (its parameter services live under it).
NODE_NAME = "/clip2scene_segment"


class ReplayError(RuntimeError):
    """The live replay could not run to the end (node missing, rejected a change, or went away)."""


@dataclass(frozen=True)
class ReplayTopics:
    """Topic names of a replay: the node's input and its three outputs."""

    points: str = POINTS_TOPIC
    segmented: str = SEGMENTED_TOPIC
    class_names: str = CLASS_NAMES_TOPIC
    latency: str = LATENCY_TOPIC


def message_class(msgtype: str) -> type:
    """rclpy message class of a type name such as ``sensor_msgs/msg/PointCloud2``."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise ReplayError(f"message type {msgtype} is not installed, so it cannot be replayed") from error


class PlaybackClock:
    """When to play each message: seconds after the first one, at ``rate`` times the recorded speed,
    with recorded pauses longer than ``max_gap`` seconds (e.g. between dataset scenes) shortened to it.
    """

    def __init__(self, rate: float, max_gap: float) -> None:
        if not rate > 0 or not max_gap > 0:
            raise ValueError(f"rate and max_gap must be > 0, got {rate} and {max_gap}")
        self.rate = rate
        self.max_gap_ns = int(max_gap * 1e9)
        self._previous: Optional[int] = None
        self._elapsed_ns = 0

    def offset(self, log_time: int) -> float:
        """Playback offset (s) of the next message, recorded at ``log_time`` ns (call in bag order)."""
        if self._previous is not None:
            self._elapsed_ns += min(max(log_time - self._previous, 0), self.max_gap_ns)
        self._previous = log_time
        return self._elapsed_ns / 1e9 / self.rate


class _Replayer:
    """One rclpy node that publishes bag messages and records the segmentation node's output."""

    def __init__(self, context: Any, recorder: BagWriter, topics: ReplayTopics, node_name: str,
                 play_types: Mapping[str, str], alive: Optional[Callable[[], bool]]) -> None:
        self.topics = topics
        self.recorder = recorder
        self.alive = alive
        self.node = rclpy.create_node("clip2scene_bag_replay", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.RELIABLE)
        outputs = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.publishers = {topic: self.node.create_publisher(message_class(msgtype), topic, reliable)
                           for topic, msgtype in play_types.items()}
        for topic, msgtype in ((topics.segmented, POINT_CLOUD2), (topics.class_names, STRING),
                               (topics.latency, FLOAT64)):
            recorder.add_topic(topic, msgtype)  # a run without any output still gives a readable bag
        pc2, string, float64 = (message_class(t) for t in (POINT_CLOUD2, STRING, FLOAT64))
        self.segmented = self.node.create_subscription(pc2, topics.segmented, self._on_segmented,
                                                       outputs, raw=True)
        self.node.create_subscription(string, topics.class_names, self._on_class_names, latched, raw=True)
        self.node.create_subscription(float64, topics.latency, self._on_latency, outputs, raw=True)
        self.parameters = self.node.create_client(SetParametersAtomically,
                                                  f"{node_name}/set_parameters_atomically")
        self.node_name = node_name
        self.output_stamps: set[int] = set()
        self.classes: Optional[tuple[str, ...]] = None
        self.things: tuple[str, ...] = ()
        self.announcements = 0
        self.latencies = 0
        self._last_log_time = 0

    # -- recording ---------------------------------------------------------------------------------
    def _log_time(self) -> int:
        """Arrival time (ns since the epoch), strictly increasing so the recording keeps arrival order."""
        self._last_log_time = max(time.time_ns(), self._last_log_time + 1)
        return self._last_log_time

    def _on_segmented(self, data: bytes) -> None:
        self.recorder.write_raw(self.topics.segmented, POINT_CLOUD2, data, self._log_time())
        header = typestore().deserialize_cdr(data, POINT_CLOUD2).header
        self.output_stamps.add(stamp_to_ns(header.stamp))

    def _on_class_names(self, data: bytes) -> None:
        self.recorder.write_raw(self.topics.class_names, STRING, data, self._log_time())
        try:
            announced = json.loads(typestore().deserialize_cdr(data, STRING).data)
            self.classes = tuple(announced["classes"])
            self.things = tuple(announced.get("things", ()))
        except (ValueError, KeyError, TypeError) as error:
            raise ReplayError(f"{self.topics.class_names} carried a malformed class list: {error}") from error
        self.announcements += 1

    def _on_latency(self, data: bytes) -> None:
        self.recorder.write_raw(self.topics.latency, FLOAT64, data, self._log_time())
        self.latencies += 1

    # -- spinning ----------------------------------------------------------------------------------
    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> bool:
        """Spin until ``predicate()``; False after ``timeout`` s. Raises if the node process died."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.alive is not None and not self.alive():
                raise ReplayError(f"the segmentation node exited while waiting for {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.executor.spin_once(timeout_sec=min(remaining, 0.05))
        return True

    def require(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """`spin_until`, raising :class:`ReplayError` naming ``what`` on timeout."""
        if not self.spin_until(predicate, timeout, what):
            raise ReplayError(f"timed out after {timeout:.0f} s waiting for {what}")

    def wait_for_node(self, timeout: float, need_parameters: bool) -> None:
        """Wait until the node has matched our publisher and subscription and announced its classes."""
        points = self.publishers[self.topics.points]
        self.require(lambda: points.get_subscription_count() > 0, timeout,
                     f"a subscriber on {self.topics.points} (is the node running and remapped?)")
        self.require(lambda: self.segmented.get_publisher_count() > 0, timeout,
                     f"a publisher on {self.topics.segmented}")
        self.require(lambda: self.classes is not None, timeout,
                     f"the node's class list on {self.topics.class_names}")
        if need_parameters:
            self.require(self.parameters.service_is_ready, timeout,
                         f"the parameter service {self.node_name}/set_parameters_atomically")

    def set_classes(self, change: ClassChange, timeout: float) -> None:
        """Set the node's ``class_names`` and ``thing_classes`` in one change (``[""]`` for things
        None: the vocabulary's), then wait for the node to announce the list."""
        before = self.announcements
        names = list(change.class_names)
        things = list(change.thing_classes) if change.thing_classes is not None else [""]
        request = SetParametersAtomically.Request(parameters=[
            Parameter("class_names", Parameter.Type.STRING_ARRAY, names).to_parameter_msg(),
            Parameter("thing_classes", Parameter.Type.STRING_ARRAY, things).to_parameter_msg()])
        future = self.parameters.call_async(request)
        self.require(future.done, timeout, f"{self.node_name} to answer set_parameters_atomically")
        result = future.result().result
        if not result.successful:
            raise ReplayError(f"the node rejected class_names {names} with thing_classes {things}: "
                              f"{result.reason}")
        wanted = tuple(names)
        self.require(lambda: self.announcements > before and self.classes == wanted
                     and (change.thing_classes is None or self.things == change.thing_classes), timeout,
                     f"the node to announce class list {names}")
        LOGGER.info("class list now %s, things %s", names, list(self.things))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def replay_bag(bag: Union[str, Path], output: Union[str, Path], *, context: Any = None, rate: float = 1.0,
               max_gap: float = 1.0, schedule: Sequence[ClassChange] = (), node_name: str = NODE_NAME,
               topics: ReplayTopics = ReplayTopics(), extra_topics: Sequence[str] = (),
               wait_for_output: bool = False, startup_timeout: float = 120.0,
               output_timeout: float = 30.0, storage: str = "mcap",
               alive: Optional[Callable[[], bool]] = None) -> Recording:
    """Play ``bag`` into the running node and record its output into the new bag ``output``.

    Args:
        bag: an exported bag (its ``topics.points`` clouds are the frames).
        output: bag folder to create for the node's output.
        context: an initialised rclpy Context; None = init (and shut down) a private one.
        rate: playback speed factor (2 = twice as fast as recorded).
        max_gap: longer pauses between two recorded messages (e.g. between the scenes of a
            dataset) are shortened to this many seconds of bag time.
        schedule: class-list changes, applied before the given frames.
        node_name: the node's fully qualified name (for its parameter service).
        topics: the node's input and output topics.
        extra_topics: further bag topics to play along (e.g. camera images), at their recorded times.
        wait_for_output: publish the next cloud only once the node has labelled the previous one (or
            ``output_timeout`` passed): a lock-step replay that never overruns a slow node.
        startup_timeout: seconds to wait for the node to appear.
        output_timeout: seconds to wait for outstanding outputs after the last cloud.
        storage: storage of the output bag, ``"mcap"`` or ``"sqlite3"``.
        alive: optional check that the node process still runs (fails fast when it died).
    Returns:
        The :class:`Recording` read back from ``output``. Input clouds the node did not label are
        missing from it (dropped frames).
    Raises:
        ReplayError: the node did not appear, rejected a class list, or left during the replay; the
            unfinished output bag is removed.
    """
    clock = PlaybackClock(rate, max_gap)
    changes = changes_at(schedule)
    own_context = context is None
    if own_context:
        context = rclpy.Context()
        rclpy.init(context=context)
    try:
        with BagFile(bag) as source, BagWriter(output, storage) as recorder:
            source.require({topics.points: POINT_CLOUD2})
            missing = [topic for topic in extra_topics if topic not in source.topics]
            if missing:
                raise ValueError(f"bag {source.path} has no topic(s) {missing} to play")
            play = {topic: source.topics[topic] for topic in (topics.points, *extra_topics)}
            replayer = _Replayer(context, recorder, topics, node_name, play, alive)
            try:
                _play(replayer, source, play, changes, clock, wait_for_output, startup_timeout,
                      output_timeout)
            finally:
                replayer.close()
    finally:
        if own_context and context.ok():
            rclpy.shutdown(context=context)
    return read_recording(output)


def _play(replayer: _Replayer, source: BagFile, play: Mapping[str, str], changes: Mapping[int, ClassChange],
          clock: PlaybackClock, wait_for_output: bool, startup_timeout: float,
          output_timeout: float) -> None:
    """The replay loop: timing, class changes, publishing, and the final wait for outputs."""
    points_topic = replayer.topics.points
    replayer.wait_for_node(startup_timeout, need_parameters=bool(changes))
    sent: list[int] = []
    start_wall: Optional[float] = None
    for topic, msgtype, log_time, data in source.raw_messages(list(play)):
        offset = clock.offset(log_time)
        if topic == points_topic and wait_for_output and sent:
            # Lock step waits for the previous cloud's labels only now, after the camera images
            # recorded before this cloud went out: they settle the previous cloud's pairing.
            _wait_for_output(replayer, sent[-1], len(sent) - 1, output_timeout)
            start_wall = time.monotonic() - offset  # playback time restarts here
        if topic == points_topic and len(sent) in changes:
            paused = time.monotonic()
            replayer.set_classes(changes[len(sent)], startup_timeout)
            if start_wall is not None:
                start_wall += time.monotonic() - paused  # later frames keep their spacing
        if start_wall is None:
            start_wall = time.monotonic()
        due = start_wall + offset
        replayer.spin_until(lambda: time.monotonic() >= due, max(due - time.monotonic(), 0.0),
                            "playback time")
        replayer.publishers[topic].publish(data)
        if topic == points_topic:
            sent.append(stamp_to_ns(typestore().deserialize_cdr(data, msgtype).header.stamp))
            LOGGER.debug("published frame %d (stamp %d ns)", len(sent) - 1, sent[-1])
    # The node labels clouds in arrival order and drops only older ones, so once the last cloud is
    # labelled no other output can follow.
    if sent:
        _wait_for_output(replayer, sent[-1], len(sent) - 1, output_timeout)
    # The latency message follows each output cloud; give the last one a moment to arrive.
    replayer.spin_until(lambda: replayer.latencies >= len(replayer.output_stamps), 1.0, "latencies")
    if replayer.segmented.get_publisher_count() == 0:
        raise ReplayError(f"the node stopped publishing {replayer.topics.segmented} during the replay")
    LOGGER.info("replayed %d clouds, %d labelled", len(sent), len(replayer.output_stamps & set(sent)))


def _wait_for_output(replayer: _Replayer, stamp: int, frame: int, timeout: float) -> None:
    """Spin until the node's output for the cloud stamped ``stamp`` arrived (a warning after ``timeout``)."""
    if not replayer.spin_until(lambda: stamp in replayer.output_stamps, timeout, "an output cloud"):
        LOGGER.warning("no output for frame %d within %.0f s", frame, timeout)


# -- starting the node -----------------------------------------------------------------------------

def node_arguments(checkpoint: Union[str, Path], parameters: Mapping[str, Any],
                   points_topic: str = POINTS_TOPIC) -> list[str]:
    """argv that runs the segmentation node with ``checkpoint`` and ``parameters``, its input remapped
    to ``points_topic`` and its other topics to the names the bag tools read (`ReplayTopics`: the
    node's earlier names, as launch/segment.launch.py gives them)."""
    argv = [sys.executable, "-m", "clip2scene_ros.segment_node", "--ros-args",
            "-p", f"checkpoint:={Path(checkpoint).resolve()}"]
    for name, value in parameters.items():
        argv += ["-p", f"{name}:={json.dumps(value)}"]  # JSON values are valid YAML for -p
    return argv + remap_arguments(legacy_remappings(points_topic,
                                                    camera_names=parameters.get("camera_names", ())))


@contextmanager
def running_segment_node(checkpoint: Union[str, Path], parameters: Mapping[str, Any], log_path: Path,
                         points_topic: str = POINTS_TOPIC) -> Iterator[subprocess.Popen]:
    """Run the segmentation node as a child process for the duration of the ``with`` block.

    Output goes to ``log_path``. On exit the node gets SIGINT (like Ctrl-C), then SIGTERM, then SIGKILL.
    """
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint file not found: {checkpoint}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(node_arguments(checkpoint, parameters, points_topic), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
        LOGGER.info("started the segmentation node (pid %d), log %s", process.pid, log_path)
        try:
            yield process
        finally:
            for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if process.poll() is not None:
                    break
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
