"""Panoptic quality on hand-built clouds with known answers (Kirillov et al., 2019)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clip2scene_core.objects import PanopticQuality

# Labels: 1 road (stuff), 2 car (thing), 3 person (thing).
ROAD, CAR, PERSON = 1, 2, 3


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: 20 road points, car 7 (10 points), car 8 (6 points), person 9 (4 points)."""
    labels = np.array([ROAD] * 20 + [CAR] * 10 + [CAR] * 6 + [PERSON] * 4)
    instances = np.array([0] * 20 + [7] * 10 + [8] * 6 + [9] * 4)
    return labels, instances


def quality(pred_labels, pred_instances, labels, instances, min_points: int = 1) -> PanopticQuality:
    metric = PanopticQuality(3, (CAR, PERSON), min_points=min_points)
    metric.update(pred_labels, pred_instances, labels, instances)
    return metric


def test_a_perfect_prediction_scores_100_whatever_its_instance_numbers():
    labels, instances = scene()
    renumbered = np.select([instances == 7, instances == 8, instances == 9], [1, 2, 3], 0)
    road_ids = np.where(labels == ROAD, 55, renumbered)  # stuff instance ids are not read
    summary = quality(labels, road_ids, labels, instances).summary()
    for key in ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff"):
        assert summary[key] == pytest.approx(1.0), key


def test_one_missed_object_is_a_false_negative():
    labels, instances = scene()
    pred_labels, pred_instances = labels.copy(), instances.copy()
    pred_labels[30:36], pred_instances[30:36] = ROAD, 0  # car 8 seen as road
    metric = quality(pred_labels, pred_instances, labels, instances)
    assert (metric.true_positives.tolist(), metric.false_positives.tolist(), metric.false_negatives.tolist()) \
        == ([1, 1, 1], [0, 0, 0], [0, 1, 0])
    # car: SQ 1, RQ = 1 / (1 + 0.5) -> PQ 2/3; road: IoU 20/26 -> PQ 10/13; person perfect.
    np.testing.assert_allclose(metric.pq(), [20 / 26, 2 / 3, 1.0])
    summary = metric.summary()
    assert summary["pq_things"] == pytest.approx((2 / 3 + 1) / 2)
    assert summary["pq"] == pytest.approx((20 / 26 + 2 / 3 + 1) / 3)
    assert summary["rq_things"] == pytest.approx((2 / 3 + 1) / 2) and summary["sq_things"] == pytest.approx(1.0)


def test_one_split_object_matches_its_larger_part_and_the_rest_is_a_false_positive():
    labels, instances = scene()
    pred_instances = instances.copy()
    pred_instances[26:30] = 99  # car 7 split 6 + 4: IoU 0.6 matches, the 4 points are spurious
    metric = quality(labels, pred_instances, labels, instances)
    assert (metric.true_positives[1], metric.false_positives[1], metric.false_negatives[1]) == (2, 1, 0)
    sq, rq = (0.6 + 1.0) / 2, 2 / (2 + 0.5)
    assert metric.sq()[1] == pytest.approx(sq) and metric.rq()[1] == pytest.approx(rq)
    assert metric.pq()[1] == pytest.approx(sq * rq)


def test_an_even_split_matches_nothing():
    labels = np.array([CAR] * 10)
    metric = quality(labels, np.array([1] * 5 + [2] * 5), labels, np.full(10, 4))
    assert (metric.true_positives[1], metric.false_positives[1], metric.false_negatives[1]) == (0, 2, 1)
    assert metric.pq()[1] == 0.0 and metric.sq()[1] == 0.0


def test_ignored_points_count_for_nothing_and_absent_classes_are_left_out():
    labels, instances = scene()
    labels, instances = np.r_[labels, [0] * 30], np.r_[instances, [0] * 30]
    pred_labels = np.r_[labels[:40], [PERSON] * 30]  # a big "person" on ignored points
    pred_instances = np.r_[instances[:40], [5] * 30]
    assert quality(pred_labels, pred_instances, labels, instances).summary()["pq"] == pytest.approx(1.0)
    only_road = quality(np.full(5, ROAD), np.zeros(5, int), np.full(5, ROAD), np.zeros(5, int))
    assert math.isnan(only_road.pq()[1]) and math.isnan(only_road.summary()["pq_things"])
    assert only_road.summary()["pq"] == pytest.approx(1.0)


def test_a_match_needs_the_same_class_and_unknown_predictions_belong_to_no_segment():
    labels, instances = scene()
    pred_labels = labels.copy()
    pred_labels[36:40] = CAR  # the person predicted as a car: a car FP and a person FN
    pred_labels[:20] = 0xFFFF  # road unknown: a road FN
    metric = quality(pred_labels, instances, labels, instances)
    assert metric.false_positives.tolist() == [0, 1, 0] and metric.false_negatives.tolist() == [1, 0, 1]


def test_thing_points_without_instance_ids_belong_to_no_segment():
    labels = np.array([CAR] * 10)
    truth = np.array([3] * 8 + [0] * 2)  # 2 car points without ground-truth instance
    metric = quality(labels, np.r_[[1] * 8, [0] * 2], labels, truth)
    assert metric.pq()[1] == pytest.approx(1.0)
    metric = quality(labels, np.ones(10, int), labels, truth)  # those 2 points widen the predicted segment
    assert metric.sq()[1] == pytest.approx(0.8)


def test_segments_under_min_points_are_neither_missed_nor_spurious():
    labels, instances = scene()
    pred_labels, pred_instances = labels.copy(), instances.copy()
    pred_labels[36:40], pred_instances[36:40] = ROAD, 0  # the 4-point person missed
    pred_instances[26:30] = 99  # car 7 split: a 4-point spurious part
    metric = quality(pred_labels, pred_instances, labels, instances, min_points=5)
    assert metric.false_negatives.tolist() == [0, 0, 0] and metric.false_positives.tolist() == [0, 0, 0]
    assert math.isnan(metric.pq()[2])


def test_counts_accumulate_over_clouds():
    labels, instances = scene()
    missed = labels.copy()
    missed[30:36] = ROAD
    together = PanopticQuality(3, (CAR, PERSON))
    together.update(labels, instances, labels, instances)
    together.update(missed, instances, labels, instances)
    # A dataset-level count: car 7 matched twice, car 8 once and missed once.
    assert together.true_positives[1] == 3 and together.false_negatives[1] == 1
    assert together.pq()[1] == pytest.approx(3 / 3.5)


def test_table_lists_classes_and_the_summary():
    labels, instances = scene()
    table = quality(labels, instances, labels, instances).format_table(["road", "car", "person"])
    assert "car (thing)" in table and "road (thing)" not in table
    assert "pq_things: 100.0 %" in table
    with pytest.raises(ValueError, match="expected 3 class names"):
        quality(labels, instances, labels, instances).format_table(["road", "car"])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="thing_labels must lie in 1..3"):
        PanopticQuality(3, (0,))
    with pytest.raises(ValueError, match="min_points"):
        PanopticQuality(3, (2,), min_points=0)
    metric = PanopticQuality(3, (2,))
    with pytest.raises(ValueError, match="same size"):
        metric.update(np.ones(3, int), np.ones(3, int), np.ones(2, int), np.ones(3, int))
    with pytest.raises(ValueError, match="target labels must lie in 0..3"):
        metric.update(np.ones(2, int), np.ones(2, int), np.array([1, 4]), np.ones(2, int))
    with pytest.raises(ValueError, match="pred_instances must hold integers"):
        metric.update(np.ones(2, int), np.full(2, 0.5), np.ones(2, int), np.ones(2, int))
