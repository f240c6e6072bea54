"""Frame pictures: fixed label colours, camera overlays that put points where they project, and the
``clip2scene show`` command writing a real, non-blank PNG."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from clip2scene_core.cli import main
from clip2scene_core.frame import Camera, Frame
from clip2scene_core.palette import IGNORE_COLOR, PALETTE, label_colors
from clip2scene_core.objects import box_corners
from clip2scene_core.visualize import draw_camera_boxes, draw_camera_overlay, frame_figure, save_frame_png


def assert_sane_picture(path, min_size=(300, 300)):
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1]
    assert image.shape[0] <= 4000 and image.shape[1] <= 6000
    assert image.std() > 10  # not blank
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    return image


def test_label_colours_are_fixed_and_ignore_is_grey():
    colors = label_colors(np.array([0, 1, 2, len(PALETTE) + 1]))
    np.testing.assert_allclose(colors[0], IGNORE_COLOR)
    np.testing.assert_allclose(colors[1], PALETTE[0])
    np.testing.assert_allclose(colors[2], PALETTE[1])
    np.testing.assert_allclose(colors[3], PALETTE[0])  # the palette repeats past its end


def test_camera_overlay_draws_labelled_points_where_they_project(tmp_path):
    # A black image; a wall of label-1 points 5 m ahead fills the view's left half.
    K = np.array([[50.0, 0.0, 40.0], [0.0, 50.0, 30.0], [0.0, 0.0, 1.0]])
    lidar_to_camera = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    camera = Camera("front", np.zeros((60, 80, 3), np.uint8), K, lidar_to_camera)
    y, z = np.meshgrid(np.linspace(0.1, 4.0, 40), np.linspace(-3.0, 3.0, 40))
    points = np.stack([np.full(y.size, 5.0), y.ravel(), z.ravel()], axis=1)
    labels = np.ones(len(points), np.int64)
    frame = Frame(points=points, labels=labels, class_names=("wall",), cameras=[camera])
    figure = frame_figure(frame)
    camera_axes = next(ax for ax in figure.get_axes() if ax.get_title() == "front")
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(int)
    box = camera_axes.get_window_extent()
    height = pixels.shape[0]
    inside = pixels[int(height - box.y1) + 2:int(height - box.y0) - 2, int(box.x0) + 2:int(box.x1) - 2]
    left, right = np.array_split(inside, 2, axis=1)
    label_rgb = (PALETTE[0] * 255).astype(int)
    is_label = np.all(np.abs(left - label_rgb) < 40, axis=-1)
    assert is_label.mean() > 0.01  # points coloured as label 1 on the left
    assert not np.all(np.abs(right - label_rgb) < 40, axis=-1).any()  # nothing projects to the right
    with pytest.raises(ValueError, match="labels for a frame"):
        frame_figure(frame, labels=np.zeros(3, np.int64))
    assert_sane_picture(save_frame_png(frame, tmp_path / "wall.png"), min_size=(200, 200))


def test_camera_boxes_are_drawn_when_in_front_and_partly_in_view_and_clipped_at_the_border():
    from matplotlib.figure import Figure

    K = np.array([[50.0, 0.0, 40.0], [0.0, 50.0, 30.0], [0.0, 0.0, 1.0]])
    lidar_to_camera = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    camera = Camera("front", np.zeros((60, 80, 3), np.uint8), K, lidar_to_camera)
    # (x, y, z, length, width, height, yaw): ahead in the middle; 10 m ahead straddling the left
    # border (u = 40 - 50 y / x = 0 at y = 8); wholly outside on the left; behind the camera.
    boxes = np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0], [10.0, 8.0, 0.0, 2.0, 2.0, 2.0, 0.0],
                      [10.0, 20.0, 0.0, 2.0, 2.0, 2.0, 0.0], [-10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    corners = box_corners(boxes[:, :3], boxes[:, 3:6], boxes[:, 6])
    colors = np.tile([1.0, 0.0, 0.0], (len(boxes), 1))
    for selection, expected in (([0], 1), ([1], 1), ([2], 0), ([3], 0), ([0, 1, 2, 3], 2)):
        ax = Figure().add_subplot()
        draw_camera_overlay(ax, camera, np.zeros((0, 3)), np.zeros((0, 3)))
        assert draw_camera_boxes(ax, camera, corners[selection], colors[selection]) == expected
        assert ax.get_xlim() == (0.0, 80.0) and ax.get_ylim() == (60.0, 0.0)  # edges clipped, view kept
        assert len(ax.lines) == 12 * expected


def test_show_command_writes_a_picture_of_a_real_scan(real_data, tmp_path, capsys):
    out = tmp_path / "kitti.png"
    code = main(["show", "--dataset", "semantickitti", "--root", str(real_data / "semantickitti"),
                 "--index", "0", "--out", str(out)])
    assert code == 0 and "123389 points" in capsys.readouterr().out
    assert_sane_picture(out)


def test_show_command_reports_bad_input(tmp_path, real_data):
    out = str(tmp_path / "x.png")
    missing = str(tmp_path / "none")
    assert main(["show", "--dataset", "semantickitti", "--root", missing, "--out", out]) == 2
    root = str(real_data / "semantickitti")
    assert main(["show", "--dataset", "semantickitti", "--root", root, "--index", "5", "--out", out]) == 2


@pytest.mark.skipif(
    importlib.util.find_spec("clip2scene_core.data.synthetic") is None, reason="synthetic world not present"
)
def test_show_command_draws_the_synthetic_world(tmp_path):
    out = tmp_path / "synthetic.png"
    assert main(["show", "--dataset", "synthetic", "--index", "0", "--out", str(out)]) == 0
    assert_sane_picture(out)


def test_prediction_colours_match_the_picture_palette_without_matplotlib():
    import subprocess
    import sys

    from clip2scene_core.palette import prediction_colors
    from clip2scene_core.segmenter import UNKNOWN_LABEL

    indices = np.array([0, 1, 5, 19, 20, 41, UNKNOWN_LABEL], np.uint16)
    colors = prediction_colors(indices)
    assert colors.dtype == np.uint8
    # Class index k is drawn as label k + 1 in the pictures; unknown as ignored ground truth.
    expected = (label_colors(np.where(indices == UNKNOWN_LABEL, 0, indices.astype(np.int64) + 1)) * 255).round()
    np.testing.assert_array_equal(colors, expected.astype(np.uint8))
    # The node colours its output with this table only: matplotlib stays unloaded.
    code = ("import sys, numpy as np; from clip2scene_core.palette import prediction_colors; "
            "prediction_colors(np.array([0, 65535], np.uint16)); print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
