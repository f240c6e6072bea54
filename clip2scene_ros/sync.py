"""LiDAR-anchored camera collector: pair each point cloud with the nearest image of every camera.

Unlike message_filters' ApproximateTime, which drops the whole set when one camera is late, the cloud
is the anchor: a cloud is released once every camera is *settled* for it (an image stamped at or after
the cloud has arrived, so no nearer one can still come) or once it has waited ``timeout_ns`` on the
supplied clock; a camera without an image within ``tolerance_ns`` is then reported missing and the
cloud goes ahead without it.

Pure Python, no ROS imports: stamps are integer nanoseconds and messages are opaque objects. Memory is
bounded (a ring buffer per camera, at most ``max_pending`` waiting clouds) and the newest cloud wins when
the consumer lags: ``poll`` hands out at most ``queue_depth`` sets and counts the older ones as dropped.
All methods take one lock, so a node may feed it from several callback threads; given the same calls
(and ``now`` values) it always produces the same output.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stamped:
    """A message with its stamp (integer nanoseconds)."""

    stamp: int
    msg: Any


@dataclass(frozen=True)
class SyncedSet:
    """One released cloud with its images.

    images: camera name -> nearest image within the tolerance, or None when that camera is missing.
    waited_ns: time from the cloud's arrival to its release, on the collector's clock.
    """

    stamp: int
    cloud: Any
    images: Mapping[str, Optional[Stamped]]
    waited_ns: int

    @property
    def missing(self) -> tuple[str, ...]:
        """Cameras without an image for this cloud."""
        return tuple(name for name, image in self.images.items() if image is None)


@dataclass(frozen=True)
class CollectorConfig:
    """Knobs of :class:`CameraCollector` (durations in nanoseconds).

    tolerance_ns: largest |image stamp - cloud stamp| that still pairs.
    timeout_ns: how long a cloud waits (on the clock) for unsettled cameras after it arrives.
    image_buffer: images kept per camera (ring buffer); must cover the cloud's arrival delay plus the
        tolerance at the camera's rate, or the nearest image may already be gone.
    max_pending: clouds waiting for cameras at once; a new cloud beyond it drops the oldest.
    queue_depth: sets one ``poll`` may return (1 = process the newest cloud only).
    reset_jump_ns: a stamp this far behind the newest one of its stream, or any backwards step of the
        clock, is taken as a time jump (bag loop, simulation restart) and resets the collector.
    """

    tolerance_ns: int = 50_000_000
    timeout_ns: int = 100_000_000
    image_buffer: int = 16
    max_pending: int = 4
    queue_depth: int = 1
    reset_jump_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        for name in ("tolerance_ns", "timeout_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"CollectorConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("image_buffer", "max_pending", "queue_depth", "reset_jump_ns"):
            if getattr(self, name) < 1:
                raise ValueError(f"CollectorConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class CollectorStats:
    """Counters since construction (they survive resets).

    Every received cloud ends up exactly once in ``released``, one of the ``dropped_*`` counters, or
    ``pending``.
    """

    clouds: int
    released: int
    pending: int
    dropped_superseded: int  # a newer cloud was released first, or the pending queue overflowed
    dropped_out_of_order: int  # stamped at or before the last released cloud
    dropped_on_reset: int  # pending when a time jump reset the collector
    resets: int
    images: Mapping[str, int]  # received per camera
    missing: Mapping[str, int]  # released sets without this camera

    @property
    def dropped(self) -> int:
        """All dropped clouds."""
        return self.dropped_superseded + self.dropped_out_of_order + self.dropped_on_reset


@dataclass
class _PendingCloud:
    stamp: int
    msg: Any
    arrival: int  # clock ns


class CameraCollector:
    """Pairs clouds with the nearest image per camera; see the module docstring for the policy.

    cameras: names used with :meth:`add_image`; clock: integer nanoseconds (e.g. ``time.monotonic_ns``
    or the node clock) used whenever a method is called without ``now``.

    Node wiring (stamps from the message headers)::

        collector = CameraCollector(["front", "left"], CollectorConfig(tolerance_ns=50_000_000))
        collector.add_cloud(stamp_ns, cloud_msg)          # PointCloud2 callback
        collector.add_image("front", stamp_ns, image_msg)  # Image callbacks
        for synced in collector.poll():                    # worker, whenever it is free
            process(synced.cloud, synced.images)           # images[name] is None when missing
    """

    def __init__(self, cameras: Sequence[str], config: CollectorConfig = CollectorConfig(),
                 clock: Callable[[], int] = time.monotonic_ns):
        names = [str(name) for name in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        self._cameras = tuple(names)
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._images: dict[str, list[Stamped]] = {name: [] for name in names}
        self._pending: list[_PendingCloud] = []
        self._last_released: Optional[int] = None
        self._last_now: Optional[int] = None
        self._counts = dict(clouds=0, released=0, dropped_superseded=0, dropped_out_of_order=0,
                            dropped_on_reset=0, resets=0)
        self._image_counts = {name: 0 for name in names}
        self._missing_counts = {name: 0 for name in names}

    @property
    def cameras(self) -> tuple[str, ...]:
        """Camera names, in the order given."""
        return self._cameras

    @property
    def config(self) -> CollectorConfig:
        return self._config

    def add_cloud(self, stamp: int, msg: Any, now: Optional[int] = None) -> None:
        """Queue a cloud stamped ``stamp`` ns; it waits for cameras from ``now`` (default: the clock)."""
        with self._lock:
            now = self._observe_clock(now)
            self._counts["clouds"] += 1
            newest = self._pending[-1].stamp if self._pending else self._last_released
            if newest is not None and stamp < newest - self._config.reset_jump_ns:
                self._reset(f"cloud stamp {stamp} jumped back from {newest}")
            elif self._last_released is not None and stamp <= self._last_released:
                self._counts["dropped_out_of_order"] += 1
                return
            index = bisect.bisect_left(self._pending, stamp, key=lambda p: p.stamp)
            if index < len(self._pending) and self._pending[index].stamp == stamp:
                self._pending[index] = _PendingCloud(stamp, msg, now)  # same stamp again: newest wins
                self._counts["dropped_superseded"] += 1
                return
            self._pending.insert(index, _PendingCloud(stamp, msg, now))
            if len(self._pending) > self._config.max_pending:
                self._pending.pop(0)
                self._counts["dropped_superseded"] += 1

    def add_image(self, camera: str, stamp: int, msg: Any, now: Optional[int] = None) -> None:
        """Buffer an image of ``camera`` stamped ``stamp`` ns (kept sorted; the oldest falls out)."""
        with self._lock:
            buffer = self._images.get(camera)
            if buffer is None:
                raise ValueError(f"unknown camera '{camera}' (known: {list(self._cameras)})")
            self._observe_clock(now)
            self._image_counts[camera] += 1
            if buffer and stamp < buffer[-1].stamp - self._config.reset_jump_ns:
                self._reset(f"camera '{camera}' stamp {stamp} jumped back from {buffer[-1].stamp}")
            index = bisect.bisect_left(buffer, stamp, key=lambda s: s.stamp)
            if index < len(buffer) and buffer[index].stamp == stamp:
                buffer[index] = Stamped(stamp, msg)
                return
            buffer.insert(index, Stamped(stamp, msg))
            if len(buffer) > self._config.image_buffer:
                buffer.pop(0)

    def poll(self, now: Optional[int] = None) -> list[SyncedSet]:
        """Release ready clouds, oldest first: at most ``queue_depth`` of the newest ready ones.

        A cloud is ready when every camera is settled for it or it has waited ``timeout_ns``. Clouds
        older than the newest ready one are not kept waiting (time only moves forward): those beyond
        the queue depth, ready or not, are dropped and counted in ``dropped_superseded``.
        """
        with self._lock:
            now = self._observe_clock(now)
            ready = [self._is_ready(cloud, now) for cloud in self._pending]
            if not any(ready):
                return []
            last = max(i for i, flag in enumerate(ready) if flag)
            candidates = [c for c, flag in zip(self._pending[:last + 1], ready) if flag]
            released = candidates[-self._config.queue_depth:]
            self._counts["dropped_superseded"] += last + 1 - len(released)
            self._pending = self._pending[last + 1:]
            self._counts["released"] += len(released)
            self._last_released = released[-1].stamp
            return [self._assemble(cloud, now) for cloud in released]

    def reset(self) -> None:
        """Forget buffered images and waiting clouds (counted in ``dropped_on_reset``)."""
        with self._lock:
            self._reset("requested")

    def stats(self) -> CollectorStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return CollectorStats(pending=len(self._pending), images=dict(self._image_counts),
                                  missing=dict(self._missing_counts), **self._counts)

    # -------------------------------------------------------------------------------- internals
    def _observe_clock(self, now: Optional[int]) -> int:
        """The current clock reading; a backwards step resets (waits measured before it are void)."""
        now = int(self._clock() if now is None else now)
        if self._last_now is not None and now < self._last_now:
            self._reset(f"clock went back from {self._last_now} to {now}")
        self._last_now = now
        return now

    def _reset(self, reason: str) -> None:
        logger.warning("camera collector reset: %s", reason)
        self._counts["dropped_on_reset"] += len(self._pending)
        self._counts["resets"] += 1
        self._pending = []
        self._last_released = None
        for buffer in self._images.values():
            buffer.clear()

    def _is_ready(self, cloud: _PendingCloud, now: int) -> bool:
        if now - cloud.arrival >= self._config.timeout_ns:
            return True
        # Settled: an image at or after the cloud's stamp exists, so later images are only farther.
        return all(buffer and buffer[-1].stamp >= cloud.stamp for buffer in self._images.values())

    def _nearest(self, camera: str, stamp: int) -> Optional[Stamped]:
        """Image of ``camera`` nearest to ``stamp`` within the tolerance (ties: the earlier one)."""
        buffer = self._images[camera]
        index = bisect.bisect_left(buffer, stamp, key=lambda s: s.stamp)
        best = min(buffer[max(index - 1, 0):index + 1], key=lambda s: abs(s.stamp - stamp),
                   default=None)
        if best is None or abs(best.stamp - stamp) > self._config.tolerance_ns:
            return None
        return best

    def _assemble(self, cloud: _PendingCloud, now: int) -> SyncedSet:
        images = {name: self._nearest(name, cloud.stamp) for name in self._cameras}
        for name, image in images.items():
            if image is None:
                self._missing_counts[name] += 1
        return SyncedSet(stamp=cloud.stamp, cloud=cloud.msg, images=images,
                         waited_ns=now - cloud.arrival)
