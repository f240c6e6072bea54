"""Pictures of frames: camera images with projected points, a bird's-eye view, a class legend.

Panels are separate functions that draw on a matplotlib ``Axes`` and take per-point RGB colours, so
the same pieces show ground truth, predictions or prediction-vs-truth errors. ``save_frame_png``
puts them together for one frame. Rendering uses the Agg canvas directly (no pyplot state), so it
works headless and from any thread.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .frame import Camera, Frame
from .geometry import pinhole_pixels, project_points_to_image, transform_points
from .palette import IGNORE_COLOR, label_colors

def save_figure(figure: Figure, path: Union[str, Path], dpi: int) -> Path:
    """Write ``figure`` to a PNG at ``path``, creating its parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def height_colors(points: np.ndarray) -> np.ndarray:
    """Colours for unlabelled points by height: points (N, 3) metres -> (N, 3) float RGB."""
    z = points[:, 2]
    low, high = np.percentile(z, [2, 98]) if len(z) else (0.0, 1.0)
    return colormaps["viridis"](np.clip((z - low) / max(high - low, 1e-6), 0, 1))[:, :3]


def draw_camera_overlay(
    ax, camera: Camera, points: np.ndarray, colors: np.ndarray, point_size: float = 2.0, **projection
) -> None:
    """Draw a camera image with the points that project into it, nearer points on top.

    points: (N, 3) metres, LiDAR frame; colors: (N, 3) float RGB in [0, 1]; ``projection`` options go
    to :func:`project_points_to_image` (min_depth, occlusion, ...).
    """
    ax.imshow(camera.image, extent=(0, camera.width, camera.height, 0), interpolation="bilinear")
    size = (camera.height, camera.width)
    hit = project_points_to_image(points, camera.K, camera.lidar_to_camera, size, **projection)
    order = np.argsort(-hit.depth)
    ax.scatter(
        hit.pixels[order, 0], hit.pixels[order, 1], c=colors[hit.indices[order]], s=point_size, linewidths=0
    )
    ax.set_xlim(0, camera.width)
    ax.set_ylim(camera.height, 0)
    ax.set_title(camera.name, fontsize=9)
    ax.set_axis_off()


#: The 12 edges of a box as pairs of `clip2scene_core.objects.box_corners` indices.
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def draw_camera_boxes(ax, camera: Camera, corners: np.ndarray, colors: np.ndarray,
                      min_depth: float = 1.0) -> int:
    """Draw 3D boxes as wireframes on a camera image (drawn with `draw_camera_overlay`, whose axis
    limits clip the edges at the image border). A box is drawn when all its corners lie more than
    ``min_depth`` metres in front of the camera and at least one projects into the image. Returns
    how many were drawn.

    corners: (K, 8, 3) metres, LiDAR frame (`clip2scene_core.objects.box_corners`); colors: (K, 3)
    float RGB in [0, 1].
    """
    drawn = 0
    for box, color in zip(np.asarray(corners), np.asarray(colors)):
        camera_points = transform_points(box, camera.lidar_to_camera)
        if (camera_points[:, 2] <= min_depth).any():
            continue  # a corner behind the image plane has no meaningful projection
        pixels = pinhole_pixels(camera_points, camera.K)
        inside = ((pixels[:, 0] >= 0) & (pixels[:, 0] < camera.width)
                  & (pixels[:, 1] >= 0) & (pixels[:, 1] < camera.height))
        if not inside.any():
            continue
        for start, end in BOX_EDGES:
            ax.plot(pixels[[start, end], 0], pixels[[start, end], 1], color=color, linewidth=1.2)
        drawn += 1
    return drawn


def draw_bev(
    ax, points: np.ndarray, colors: np.ndarray, extent: Optional[float] = None, point_size: float = 0.5
) -> None:
    """Draw a bird's-eye view (x right, y up) of points, the sensor origin marked by a triangle.

    points: (N, 3) metres; colors: (N, 3) float RGB; extent: half-width of a view centred on the
    sensor, metres (None = fit the 1st..99th percentile of x and y, so a few far returns do not
    shrink the scene and indoor scans away from the origin fill the panel).
    """
    if extent is not None:
        centre, half = np.zeros(2), float(extent)
    elif len(points):
        low, high = np.percentile(points[:, :2], [1, 99], axis=0)
        centre, half = (low + high) / 2, max(float(np.max(high - low)) / 2 * 1.05, 1.0)
    else:
        centre, half = np.zeros(2), 1.0
    order = np.argsort(points[:, 2])  # higher points drawn last, as seen from above
    ax.scatter(points[order, 0], points[order, 1], c=colors[order], s=point_size, linewidths=0)
    ax.plot([0], [0], marker="^", color="black", markersize=6)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)", fontsize=8)
    ax.set_ylabel("y (m)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("bird's-eye view", fontsize=9)


def legend_handles(labels: np.ndarray, class_names: Sequence[str]) -> list[Line2D]:
    """Legend entries (coloured markers) for the labels present, named by ``class_names[c - 1]``."""
    handles = []
    for label in np.unique(np.asarray(labels, dtype=np.int64)):
        if label <= 0:
            name = "ignore"
        else:
            name = class_names[label - 1] if label <= len(class_names) else f"label {label}"
        color = label_colors(np.array([label]))[0]
        handles.append(Line2D([], [], marker="o", linestyle="", color=color, markersize=7, label=name))
    return handles


def frame_figure(
    frame: Frame,
    labels: Optional[np.ndarray] = None,
    class_names: Optional[Sequence[str]] = None,
    max_cameras: int = 6,
    title: Optional[str] = None,
) -> Figure:
    """Figure of a frame: up to ``max_cameras`` camera overlays (3 per row), a bird's-eye view and a
    legend. labels: (N,) int in the frame's label space (default ``frame.labels``); without labels
    points take ``frame.colors`` or a height colour map and the legend is left out."""
    labels = frame.labels if labels is None else np.asarray(labels)
    if labels is not None and len(labels) != frame.num_points:
        raise ValueError(f"{len(labels)} labels for a frame of {frame.num_points} points")
    class_names = tuple(frame.class_names if class_names is None else class_names)
    if labels is not None:
        colors = label_colors(labels)
    elif frame.colors is not None:
        colors = frame.colors.astype(np.float64)
    else:
        colors = height_colors(frame.points)

    cameras = frame.cameras[:max_cameras]
    columns = min(3, len(cameras))
    rows = math.ceil(len(cameras) / 3)
    cell_width = 5.0
    cell_height = max((cell_width * c.height / c.width for c in cameras), default=0.0)
    cameras_height = rows * (cell_height + 0.3)
    bev_size = max(cameras_height, 6.0)
    figure_width = columns * cell_width + bev_size
    handles = legend_handles(labels, class_names) if labels is not None else []
    legend_columns = max(1, min(len(handles), int(figure_width / 1.6)))
    legend_height = 0.3 + 0.25 * math.ceil(len(handles) / legend_columns)
    title_height = 0.35 if title else 0.0
    figure = Figure(figsize=(figure_width, title_height + bev_size + legend_height))
    FigureCanvasAgg(figure)
    header, body, footer = figure.subfigures(3, 1, height_ratios=[title_height, bev_size, legend_height])
    if title:
        header.text(0.5, 0.5, title, ha="center", va="center", fontsize=10)
    if cameras:
        left, right = body.subfigures(1, 2, width_ratios=[columns * cell_width, bev_size])
        left.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.94, wspace=0.04, hspace=0.15)
        for i, camera in enumerate(cameras):
            draw_camera_overlay(left.add_subplot(rows, columns, i + 1), camera, frame.points, colors)
    else:
        right = body
    right.subplots_adjust(left=0.14, right=0.96, bottom=0.09, top=0.94)
    draw_bev(right.add_subplot(1, 1, 1), frame.points, colors)
    if handles:
        footer.legend(handles=handles, loc="center", ncol=legend_columns, fontsize=8, frameon=False)
    return figure


def save_frame_png(
    frame: Frame,
    path: Union[str, Path],
    labels: Optional[np.ndarray] = None,
    class_names: Optional[Sequence[str]] = None,
    max_cameras: int = 6,
    dpi: int = 80,
) -> Path:
    """Write :func:`frame_figure` of ``frame`` to a PNG at ``path`` (parent folders are created)."""
    return save_figure(frame_figure(frame, labels, class_names, max_cameras, title=frame.frame_id or None),
                       path, dpi)


def save_prediction_vs_truth_png(
    points: np.ndarray,
    predicted: np.ndarray,
    truth: np.ndarray,
    class_names: Sequence[str],
    path: Union[str, Path],
    title: str = "",
    dpi: int = 80,
) -> Path:
    """Bird's-eye views of predicted and true labels side by side, plus a map of the errors.

    points: (N, 3) metres; predicted, truth: (N,) int in the dataset label space (0 = ignore /
    unknown); class_names: label order. Error panel: green = right, red = wrong, grey = ignored.
    """
    predicted, truth = np.asarray(predicted, np.int64), np.asarray(truth, np.int64)
    if not len(points) == len(predicted) == len(truth):
        raise ValueError(f"points, predicted and truth lengths differ: {len(points)}, {len(predicted)}, "
                         f"{len(truth)}")
    evaluated = truth > 0
    errors = np.tile(IGNORE_COLOR, (len(points), 1))
    errors[evaluated & (predicted == truth)] = (0.1, 0.7, 0.2)
    errors[evaluated & (predicted != truth)] = (0.85, 0.1, 0.1)
    accuracy = float((predicted == truth)[evaluated].mean()) if evaluated.any() else float("nan")
    figure = Figure(figsize=(16.5, 6.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    panels = [("prediction", label_colors(predicted)), ("ground truth", label_colors(truth)),
              (f"errors (point accuracy {100 * accuracy:.1f} %)", errors)]
    for ax, (name, colors) in zip(axes, panels):
        draw_bev(ax, points, colors)
        ax.set_title(name, fontsize=10)
    handles = legend_handles(np.union1d(predicted, truth), class_names)
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 11), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.subplots_adjust(left=0.04, right=0.99, bottom=0.16, top=0.9, wspace=0.2)
    return save_figure(figure, path, dpi)


def save_cameras_side_by_side_png(
    frame: Frame,
    labellings: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    path: Union[str, Path],
    max_cameras: int = 3,
    dpi: int = 80,
    boxes: Optional[Sequence[Optional[tuple[np.ndarray, np.ndarray]]]] = None,
) -> Path:
    """Camera overlays of several labellings of the same points, one column per labelling.

    labellings: (name, labels (N,) int in the dataset label space, 0 = none) pairs, e.g. the
    teacher's projected pseudo-labels beside the student's predictions; rows: the first
    ``max_cameras`` cameras. Points labelled 0 are left out of that panel. boxes: per labelling,
    None or (corners (K, 8, 3), labels (K,)) of its objects, drawn in their class colours
    (`draw_camera_boxes`).
    """
    cameras = frame.cameras[:max_cameras]
    if not cameras:
        raise ValueError(f"frame {frame.frame_id!r} has no cameras to draw")
    for name, labels in labellings:
        if len(labels) != frame.num_points:
            raise ValueError(f"{name}: {len(labels)} labels for a frame of {frame.num_points} points")
    cell_width = 5.0
    cell_height = max(cell_width * c.height / c.width for c in cameras) + 0.3
    figure = Figure(figsize=(cell_width * len(labellings), cell_height * len(cameras) + 0.8))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(cameras), len(labellings), squeeze=False)
    for column, (name, labels) in enumerate(labellings):
        labels = np.asarray(labels, np.int64)
        shown = labels > 0
        for row, camera in enumerate(cameras):
            ax = axes[row, column]
            draw_camera_overlay(ax, camera, frame.points[shown], label_colors(labels[shown]))
            if boxes is not None and boxes[column] is not None:
                corners, box_labels = boxes[column]
                draw_camera_boxes(ax, camera, corners, label_colors(np.asarray(box_labels, np.int64)))
            ax.set_title(f"{name}: {camera.name}", fontsize=9)
    present = np.unique(np.concatenate([np.asarray(labels, np.int64) for _, labels in labellings]))
    handles = legend_handles(present[present > 0], class_names)
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10), fontsize=8, frameon=False)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.8 / figure.get_figheight(), top=0.97,
                           wspace=0.03, hspace=0.12)
    return save_figure(figure, path, dpi)
