"""The object stage: thing points clustered into instances on hand-built clouds and on a synthetic
scan, oriented boxes, parameter and input validation, and the vocabularies' thing classes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clip2scene_core.clip.prompts import load_thing_classes
from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.data.synthetic import SyntheticDataset
from clip2scene_core.data.synthetic.scene import THING_CLASSES
from clip2scene_core.objects import (
    ClusteringParams, PanopticQuality, box_corners, check_thing_classes, cluster_instances, extract_objects,
    object_boxes, thing_class_indices, validated_thing_names,
)

CAR, PERSON, ROAD = 1, 2, 0
THINGS = (CAR, PERSON)


def box_points(center, half, count: int = 400, yaw: float = 0.0, seed: int = 0) -> np.ndarray:
    """``count`` points filling a box (centre, half extents in metres) turned by ``yaw`` about z."""
    local = np.random.default_rng(seed).uniform(-1.0, 1.0, (count, 3)) * np.asarray(half, float)
    cos, sin = math.cos(yaw), math.sin(yaw)
    turned = local @ np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]]).T
    return (turned + np.asarray(center, float)).astype(np.float32)


def cloud(*parts: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (points, class index) parts into points (N, 3) and class indices (N,)."""
    points = np.concatenate([p for p, _ in parts]) if parts else np.zeros((0, 3), np.float32)
    classes = np.concatenate([np.full(len(p), c, np.int64) for p, c in parts]) if parts else np.zeros(0, np.int64)
    return points, classes


def test_two_separated_boxes_are_two_objects():
    points, classes = cloud((box_points((0, 0, 1), (2, 1, 0.7)), CAR), (box_points((8, 0, 1), (2, 1, 0.7), seed=1), CAR))
    instances = cluster_instances(points, classes, THINGS)
    assert instances.dtype == np.uint32
    assert set(np.unique(instances[:400])) == {1} and set(np.unique(instances[400:])) == {2}


def test_two_touching_boxes_of_one_class_are_one_object_and_of_two_classes_two():
    first, touching = box_points((0, 0, 1), (2, 1, 0.7)), box_points((4, 0, 1), (2, 1, 0.7), seed=1)
    points, classes = cloud((first, CAR), (touching, CAR))
    assert set(np.unique(cluster_instances(points, classes, THINGS))) == {1}
    points, classes = cloud((first, CAR), (touching, PERSON))
    instances = cluster_instances(points, classes, THINGS)
    assert set(np.unique(instances[:400])) == {1} and set(np.unique(instances[400:])) == {2}


def test_a_single_point_is_an_object_only_if_min_points_allows():
    points, classes = cloud((np.array([[3.0, 4.0, 0.5]], np.float32), PERSON))
    assert cluster_instances(points, classes, THINGS, ClusteringParams(min_points=1)).tolist() == [1]
    assert cluster_instances(points, classes, THINGS, ClusteringParams(min_points=2)).tolist() == [0]


def test_small_objects_are_dropped_and_the_others_numbered_without_gaps():
    points, classes = cloud((box_points((0, 0, 1), (1, 1, 1), count=3), CAR),
                            (box_points((10, 0, 1), (1, 1, 1), count=50), CAR),
                            (box_points((20, 0, 1), (0.3, 0.3, 0.9), count=50), PERSON))
    instances = cluster_instances(points, classes, THINGS, ClusteringParams(min_points=5))
    assert instances[:3].tolist() == [0, 0, 0]
    assert set(instances[3:53]) == {1} and set(instances[53:]) == {2}  # cars first, then persons


def test_empty_classes_stuff_unknown_and_non_finite_points_join_no_object():
    points, classes = cloud((box_points((0, 0, 0), (10, 10, 0.05)), ROAD), (box_points((2, 2, 1), (2, 1, 0.7)), CAR))
    classes[:5] = 0xFFFF  # unknown (below the score threshold)
    points[400] = np.nan
    instances = cluster_instances(points, classes, THINGS)
    assert not instances[:400].any() and instances[400] == 0  # road, unknown, the NaN point
    assert set(np.unique(instances[401:])) == {1}  # cars; no person points at all: no person object
    assert not cluster_instances(points, classes, (PERSON,)).any()


def test_no_points_at_all_give_empty_arrays():
    instances, objects = extract_objects(np.zeros((0, 3), np.float32), np.zeros(0, np.int64),
                                         np.zeros(0, np.float32), THINGS)
    assert instances.shape == (0,) and instances.dtype == np.uint32 and len(objects) == 0
    assert objects.center.shape == (0, 3) and objects.size.shape == (0, 3) and objects.yaw.shape == (0,)


def test_far_points_neither_blow_up_the_grid_nor_break_adjacency():
    # Two cars 2 km apart and a point 100 km out: the grid stays small, each car one object.
    points, classes = cloud((box_points((0, 0, 1), (2, 1, 0.7)), CAR), (box_points((2000, 0, 1), (2, 1, 0.7)), CAR),
                            (np.array([[1e5, -1e5, 3.0]], np.float32), CAR))
    instances = cluster_instances(points, classes, THINGS, ClusteringParams(min_points=1))
    assert set(instances[:400]) == {1} and set(instances[400:800]) == {2} and instances[800] == 3


def test_a_grid_too_large_for_memory_is_refused_naming_the_radius():
    # 300 points 1 m apart on a diagonal: 300 separate cells per axis, a 599^3-cell grid at 0.5 m.
    points = np.repeat(np.arange(300, dtype=np.float32)[:, None], 3, axis=1)
    with pytest.raises(ValueError, match=r"\(599, 599, 599\) voxel grid at radius_m=0.5.*raise radius_m"):
        cluster_instances(points, np.full(len(points), CAR), THINGS, ClusteringParams(radius_m=0.5))


def test_radius_sets_which_gaps_join():
    points, classes = cloud((box_points((0, 0, 1), (1, 1, 0.5)), CAR), (box_points((3.3, 0, 1), (1, 1, 0.5)), CAR))
    # A 1.3 m gap: joined by a 1.5 m grid, kept apart by a 0.5 m one.
    assert len(np.unique(cluster_instances(points, classes, THINGS, ClusteringParams(radius_m=1.5)))) == 1
    assert len(np.unique(cluster_instances(points, classes, THINGS, ClusteringParams(radius_m=0.5)))) == 2


@pytest.mark.parametrize("yaw_deg", [30.0, 100.0, -60.0])
def test_box_yaw_size_and_centre_are_recovered_for_a_rotated_box(yaw_deg):
    center, half = (12.0, -4.0, 0.8), (2.2, 0.9, 0.75)
    points = box_points(center, half, count=4000, yaw=math.radians(yaw_deg))
    _, objects = extract_objects(points, np.full(len(points), CAR), np.full(len(points), 0.25, np.float32), THINGS)
    assert len(objects) == 1
    expected = (yaw_deg + 90.0) % 180.0 - 90.0  # an axis: yaw and yaw + 180 deg are the same box
    assert abs(math.degrees(objects.yaw[0]) - expected) < 2.0
    np.testing.assert_allclose(objects.size[0], 2 * np.asarray(half), atol=0.1)
    np.testing.assert_allclose(objects.center[0], center, atol=0.05)
    assert -math.pi / 2 < objects.yaw[0] <= math.pi / 2


def test_object_summary_gives_majority_class_mean_score_count_and_centroid():
    points = np.array([[0, 0, 0], [2, 0, 0], [1, 0, 3], [9, 9, 9]], np.float32)
    objects = object_boxes(points, np.array([4, 4, 4, 0]), np.array([1, 1, 2, 1]),
                           np.array([0.1, 0.2, 0.6, 1.0], np.float32))
    assert objects.instance_id.tolist() == [4] and objects.class_index.tolist() == [1]
    assert objects.point_count.tolist() == [3]
    np.testing.assert_allclose(objects.score, [0.3], rtol=1e-6)
    np.testing.assert_allclose(objects.centroid, [[1, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(objects.size, [[2, 0, 3]], atol=1e-6)  # along x, no width, 0..3 m high
    np.testing.assert_allclose(objects.center, [[1, 0, 1.5]], atol=1e-6)


def test_extract_objects_numbers_object_k_as_instance_k_plus_one():
    points, classes = cloud((box_points((0, 0, 1), (2, 1, 0.7)), CAR), (box_points((0, 9, 1), (0.3, 0.3, 0.9)), PERSON))
    scores = np.where(classes == CAR, 0.4, 0.2).astype(np.float32)
    instances, objects = extract_objects(points, classes, scores, THINGS)
    assert objects.instance_id.tolist() == [1, 2] and objects.class_index.tolist() == [CAR, PERSON]
    np.testing.assert_allclose(objects.score, [0.4, 0.2], rtol=1e-6)
    assert objects.point_count.tolist() == [int((instances == 1).sum()), int((instances == 2).sum())]


@pytest.mark.parametrize("arguments, message", [
    ({"radius_m": 0.0}, "radius_m"), ({"radius_m": float("nan")}, "radius_m"), ({"radius_m": "1"}, "radius_m"),
    ({"min_points": 0}, "min_points"), ({"min_points": 2.5}, "min_points"), ({"min_points": True}, "min_points"),
])
def test_bad_parameters_name_the_field(arguments, message):
    with pytest.raises(ValueError, match=message):
        ClusteringParams(**arguments)


def test_bad_inputs_name_the_argument():
    points = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="points must have shape"):
        cluster_instances(np.zeros((3, 2)), np.zeros(3, np.int64), THINGS)
    with pytest.raises(ValueError, match="class_indices must have shape"):
        cluster_instances(points, np.zeros(2, np.int64), THINGS)
    with pytest.raises(ValueError, match="class_indices must be integers"):
        cluster_instances(points, np.zeros(3), THINGS)
    with pytest.raises(ValueError, match="scores must have shape"):
        extract_objects(points, np.zeros(3, np.int64), np.zeros(4, np.float32), THINGS)
    for bad in ([-1], [1, 1], "car", [1.5]):
        with pytest.raises(ValueError, match="thing_classes"):
            check_thing_classes(bad)


def test_thing_class_names_map_to_indices_of_the_active_list():
    assert thing_class_indices(["road", "car", "person"], ["person", "car"]) == (2, 1)
    with pytest.raises(ValueError, match=r"\['lorry'\] are not in the class list"):
        thing_class_indices(["road", "car"], ["car", "lorry"])
    with pytest.raises(ValueError, match=r"\['car'\] are named more than once"):
        thing_class_indices(["road", "car"], ["car", "car"])


def test_a_things_list_read_from_a_file_is_checked_and_its_source_named():
    assert validated_thing_names(["car"], ["road", "car"], "bag.mcap") == ("car",)
    for things, message in (("car", "must be a list"), (["car", 3], "must be a list"),
                            (["lorry"], r"\['lorry'\] are not in the class list"), (["car", "car"], "more than once")):
        with pytest.raises(ValueError, match=f"^bag.mcap: .*{message}"):
            validated_thing_names(things, ["road", "car"], "bag.mcap")


def test_vocabularies_name_their_thing_classes(tmp_path):
    assert load_thing_classes("synthetic") == THING_CLASSES  # what the world gives instance ids
    assert set(load_thing_classes("synthetic")) <= set(SYNTHETIC_CLASSES)
    assert "car" in load_thing_classes("semantickitti") and "road" not in load_thing_classes("semantickitti")
    assert "traffic_cone" in load_thing_classes("nuscenes") and "wall" not in load_thing_classes("scannet")
    path = tmp_path / "mine.yaml"
    path.write_text("classes:\n  - name: road\n  - name: car\n")
    assert load_thing_classes(path) == ()
    for things, message in (("[lorry]", r"thing classes \['lorry'\] are not in the class list"),
                            ("car", "must be a list"), ("[car, car]", "more than once")):
        path.write_text(f"classes:\n  - name: road\n  - name: car\nthings: {things}\n")
        with pytest.raises(ValueError, match=f"mine.yaml.*{message}"):
            load_thing_classes(path)


def test_clustering_the_true_classes_of_a_synthetic_scan_recovers_its_objects():
    frame = SyntheticDataset(seed=0, num_scenes=1, frames_per_scene=1, with_cameras=False)[0]
    things = thing_class_indices(SYNTHETIC_CLASSES, load_thing_classes("synthetic"))
    params = ClusteringParams()
    metric = PanopticQuality(len(SYNTHETIC_CLASSES), [index + 1 for index in things], params.min_points)
    metric.update(frame.labels, cluster_instances(frame.points, frame.labels - 1, things, params),
                  frame.labels, frame.instances)
    assert metric.summary()["pq_things"] > 0.7  # 0.82 at the defaults: far objects split, adjacent ones merge


def test_box_corners_span_the_box_turned_by_its_yaw():
    corners = box_corners(np.array([[10.0, -2.0, 1.0]]), np.array([[4.0, 2.0, 1.5]]), np.array([math.pi / 2]))
    assert corners.shape == (1, 8, 3)
    # Turned by 90 degrees: the 4 m length runs along y, the 2 m width along x.
    np.testing.assert_allclose(corners[0].min(0), [9.0, -4.0, 0.25], atol=1e-9)
    np.testing.assert_allclose(corners[0].max(0), [11.0, 0.0, 1.75], atol=1e-9)
    np.testing.assert_allclose(corners[0, 1] - corners[0, 0], [0.0, 4.0, 0.0], atol=1e-9)  # the length edge
    with pytest.raises(ValueError, match="same boxes"):
        box_corners(np.zeros((2, 3)), np.ones((1, 3)), np.zeros(2))
