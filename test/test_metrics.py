"""Confusion matrix, IoU / mIoU, tables and plots against hand-computed matrices."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clip2scene_core.metrics import ConfusionMatrix, save_iou_bars_png

NAMES = ["road", "car", "tree"]

# 3 classes. Ground truth / prediction pairs (label space 1..3, 0 = ignore, 0xFFFF = unknown):
TARGET = [1, 1, 1, 1, 2, 2, 2, 0, 0, 1, 2]
PRED = [1, 1, 2, 0xFFFF, 2, 2, 1, 3, 1, 1, 0]
# Counted pairs (target != 0):    truth road: 1,1,2,unk,1 -> TP 3, ->car 1, unknown 1
#                                 truth car : 2,2,1,0    -> TP 2, ->road 1, unknown (pred 0) 1
# road: TP 3, FP 1 (car->road), FN 2 -> 3/6; car: TP 2, FP 1, FN 2 -> 2/5; tree: absent everywhere.
EXPECTED_COUNTS = [[3, 1, 0, 1], [1, 2, 0, 1], [0, 0, 0, 0]]


def filled(pred=PRED, target=TARGET):
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor(pred), torch.tensor(target))
    return matrix


def test_counts_ignore_label_zero_and_collect_unknown_predictions():
    assert filled().counts.tolist() == EXPECTED_COUNTS
    assert filled().matrix.tolist() == [row[:3] for row in EXPECTED_COUNTS]


def test_iou_and_miou_match_hand_computation():
    matrix = filled()
    iou = matrix.iou()
    assert iou[0].item() == pytest.approx(3 / 6)
    assert iou[1].item() == pytest.approx(2 / 5)
    assert math.isnan(iou[2].item())
    assert matrix.miou() == pytest.approx((3 / 6 + 2 / 5) / 2)
    assert matrix.accuracy() == pytest.approx(5 / 9)


def test_class_predicted_but_absent_in_truth_has_zero_iou_outside_the_miou():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([1, 3, 1]), torch.tensor([1, 1, 1]))
    assert math.isnan(matrix.iou()[1].item())
    assert matrix.iou()[2].item() == 0.0
    assert matrix.miou() == pytest.approx(2 / 3)  # only road is present in the ground truth


def test_updates_accumulate_and_accept_numpy_uint16_predictions():
    matrix = ConfusionMatrix(3)
    matrix.update(np.array(PRED[:5], dtype=np.uint16), np.array(TARGET[:5]))
    matrix.update(np.array(PRED[5:], dtype=np.uint16), np.array(TARGET[5:]))
    assert matrix.counts.tolist() == EXPECTED_COUNTS
    other = filled()
    other.merge(matrix)
    assert other.counts.tolist() == [[2 * v for v in row] for row in EXPECTED_COUNTS]


def test_bad_input_raises_clear_errors():
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target labels must lie in 0..3"):
        matrix.update(torch.tensor([1]), torch.tensor([4]))
    with pytest.raises(ValueError, match="same size"):
        matrix.update(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="integer"):
        matrix.update(torch.tensor([1.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="3 class names"):
        matrix.format_table(["a", "b"])


def test_empty_matrix_reports_nan():
    matrix = ConfusionMatrix(2)
    assert math.isnan(matrix.miou()) and math.isnan(matrix.accuracy())
    assert matrix.to_dict(["a", "b"])["miou"] is None


def test_format_table_lists_every_class_with_iou_percent_and_counts():
    table = filled().format_table(NAMES)
    lines = table.splitlines()
    road = next(line for line in lines if line.startswith("road "))
    assert road.split() == ["road", "50.0", "5", "4", "3", "1", "2"]
    assert next(line for line in lines if line.startswith("tree*")).split()[1] == "-"
    assert "45.0" in next(line for line in lines if line.startswith("mIoU"))


def test_to_dict_is_json_serialisable_with_hand_values():
    summary = filled().to_dict(NAMES)
    text = json.dumps(summary, allow_nan=False)
    back = json.loads(text)
    assert back["miou"] == pytest.approx(0.45)
    assert back["per_class"]["car"] == {"iou": pytest.approx(0.4), "present": True, "tp": 2, "fp": 1, "fn": 2}
    assert back["per_class"]["tree"]["iou"] is None
    assert back["unknown_predictions"] == 2
    assert back["confusion"] == EXPECTED_COUNTS


def test_png_outputs_are_written(tmp_path):
    matrix = filled()
    heat = matrix.save_png(tmp_path / "plots" / "confusion.png", NAMES)
    bars = matrix.save_iou_bars_png(tmp_path / "bars.png", NAMES, compare=filled(PRED[::-1]))
    single = save_iou_bars_png(tmp_path / "one.png", NAMES, {"run": [0.5, math.nan, 0.1]})
    for path in (heat, bars, single):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2 IoU values for 3 classes"):
        save_iou_bars_png(tmp_path / "bad.png", NAMES, {"run": [0.5, 0.1]})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_predictions_are_counted_on_the_cpu():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor(PRED).cuda(), torch.tensor(TARGET).cuda())
    assert matrix.counts.device.type == "cpu"
    assert matrix.counts.tolist() == EXPECTED_COUNTS
