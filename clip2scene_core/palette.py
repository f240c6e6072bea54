"""The project's label colours, a fixed table (numpy only: the node colours its output with it, and
the pictures of `clip2scene_core.visualize` use the same colours).

Label ``c`` (1-based, 0 = ignore / unknown) is drawn in ``PALETTE_RGB[(c - 1) % 20]``; 0 is grey.
"""
from __future__ import annotations

import numpy as np

from clip2scene_core.segmenter import UNKNOWN_LABEL

#: 20 distinct colours, uint8 RGB (Sasha Trubetskoy's list of 20 simple distinct colours).
PALETTE_RGB = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
        [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
        [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [0, 0, 0],
    ],
    dtype=np.uint8,
)
#: Colour of label 0 (ignored ground truth, unknown prediction), uint8 RGB.
IGNORE_RGB = np.array([153, 153, 153], dtype=np.uint8)
#: The same colours as float RGB in [0, 1], for matplotlib.
PALETTE = PALETTE_RGB / 255.0
IGNORE_COLOR = IGNORE_RGB / 255.0


def label_colors(labels: np.ndarray) -> np.ndarray:
    """Fixed colour of each label: labels (N,) int, 1-based (0 = ignore) -> (N, 3) float RGB in [0, 1]."""
    labels = np.asarray(labels, dtype=np.int64)
    colors = PALETTE[(labels - 1) % len(PALETTE)]
    colors[labels <= 0] = IGNORE_COLOR
    return colors


def prediction_colors(labels: np.ndarray) -> np.ndarray:
    """(N,) class indices of a prediction (0-based, `UNKNOWN_LABEL` = unknown) -> (N, 3) uint8 RGB.

    Class index ``i`` gets the colour of label ``i + 1``, unknown the grey of ignored ground truth,
    so a prediction and its ground truth look alike in rviz and in the pictures.
    """
    labels = np.asarray(labels)
    colors = PALETTE_RGB[labels.astype(np.int64) % len(PALETTE_RGB)]
    colors[labels == UNKNOWN_LABEL] = IGNORE_RGB
    return colors
