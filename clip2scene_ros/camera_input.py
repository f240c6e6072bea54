"""The camera side of the 2D-3D ensemble: pair clouds with images and turn them into `Camera`s.

No ROS imports: messages are duck-typed, so rclpy's messages (the node) and rosbags' (the offline bag
evaluator) pair and decode the same way, and a live replay and an offline run see the same images.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from clip2scene_core.frame import Camera
from clip2scene_ros.conversions import (CameraIntrinsics, MessageFormatError, camera_info_to_intrinsics,
                                        image_to_numpy, stamp_to_ns)
from clip2scene_ros.sync import CameraCollector, CollectorConfig, CollectorStats, SyncedSet


class CameraInput:
    """Pairs each cloud with the nearest image of every camera and builds its `Camera`s.

    Args:
        names: camera names (topics ``<name>/image`` and ``<name>/camera_info``).
        extrinsics: camera name -> (4, 4) lidar_to_camera for every camera in ``names``
            (`clip2scene_core.calibration.read_calibration` checks that they are all there).
        config: the LiDAR-anchored collector's tolerance, timeout and buffers.
        warn: called with one line for each image or CameraInfo that cannot be used.
    """

    def __init__(self, names: Sequence[str], extrinsics: Mapping[str, np.ndarray], config: CollectorConfig,
                 warn: Callable[[str], None]) -> None:
        self.collector = CameraCollector(names, config)
        self.extrinsics = dict(extrinsics)
        self.intrinsics: dict[str, CameraIntrinsics] = {}
        self._warn = warn

    def add_camera_info(self, name: str, message: Any) -> None:
        """Take a camera's intrinsics (the latest valid CameraInfo wins)."""
        try:
            self.intrinsics[name] = camera_info_to_intrinsics(message)
        except MessageFormatError as error:
            self._warn(f"skipped malformed CameraInfo of {name}: {error}")

    def add_image(self, name: str, message: Any, now: Optional[int] = None) -> None:
        """Buffer an image (``now``: the collector's clock, ns; None = monotonic time)."""
        self.collector.add_image(name, stamp_to_ns(message.header.stamp), message, now=now)

    def add_cloud(self, stamp: int, cloud: Any, now: Optional[int] = None) -> None:
        """Queue a cloud (``cloud`` is handed back in the released `SyncedSet`)."""
        self.collector.add_cloud(stamp, cloud, now=now)

    def poll(self, now: Optional[int] = None) -> list[SyncedSet]:
        """The clouds whose cameras have settled or timed out, oldest first."""
        return self.collector.poll(now=now)

    def stats(self) -> CollectorStats:
        return self.collector.stats()

    def cameras(self, synced: SyncedSet) -> list[Camera]:
        """`Camera`s of the images paired with a cloud (cameras without intrinsics yet are left out)."""
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
                self._warn(f"skipped image of {name}: {error}")
        return cameras
