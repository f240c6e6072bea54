"""What the node reads from an input PointCloud2: points, intensity on the network's scale, shape."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from clip2scene_ros.conversions import MessageFormatError, cloud_to_xyz

#: Raw intensity ranges of common drivers and the divisor that maps each onto [0, 1].
INTENSITY_RANGES = (1.0, 255.0, 65535.0)


class IntensityScale:
    """Divides raw intensities onto the network's [0, 1] scale.

    ``scale`` > 0 is fixed; 0 means auto: the first cloud whose intensities exceed 1 fixes the scale
    to the smallest of `INTENSITY_RANGES` that holds them (0..255 from most drivers), once, and
    ``log`` says so. Until then (and for drivers that already give [0, 1]) the scale is 1.
    """

    def __init__(self, scale: float, log: Callable[[str], None]) -> None:
        self.scale = float(scale) or None
        self._log = log

    def apply(self, intensity: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if intensity is None:
            return None
        if self.scale is None:
            finite = intensity[np.isfinite(intensity)]
            peak = float(finite.max()) if finite.size else 0.0
            if peak <= 1.0:
                return intensity
            self.scale = next((r for r in INTENSITY_RANGES if peak <= r), peak)
            self._log(f"intensity_scale auto: intensities reach {peak:g}, so they are divided by "
                      f"{self.scale:g} from now on (set intensity_scale to fix it)")
        return intensity / np.float32(self.scale) if self.scale != 1.0 else intensity


@dataclass(frozen=True)
class InputCloud:
    """points: (H*W, 3) float32 with NaN/Inf kept; intensity: (H*W,) float32 as sent, or None;
    network_intensity: the same on the network's [0, 1] scale; shape: (height, width) of the
    message, so the output keeps an organised layout."""

    points: np.ndarray
    intensity: Optional[np.ndarray]
    network_intensity: Optional[np.ndarray]
    shape: tuple[int, int]


def read_cloud(message: Any, max_points: int, scale: IntensityScale) -> InputCloud:
    """Decode an input cloud, or raise MessageFormatError saying why it cannot be labelled."""
    count = int(message.width) * int(message.height)
    if count > max_points:
        raise MessageFormatError(f"cloud has {count} points, more than max_points={max_points}")
    cloud = cloud_to_xyz(message, drop_invalid=False)
    if len(cloud.points) == 0:
        raise MessageFormatError("cloud is empty")
    return InputCloud(cloud.points, cloud.intensity, scale.apply(cloud.intensity),
                      (int(message.height), int(message.width)))
