"""Bag evaluation: live replay into the node and offline segmentation agree, class changes split the
report, class names map through synonyms, and bad bags fail clearly without a report."""
from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from clip2scene_core import cli
from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.data.synthetic import SyntheticConfig, SyntheticDataset
from clip2scene_core.data.synthetic.render import LidarConfig
from clip2scene_core.frame import Frame
from clip2scene_core.metrics import dataset_label_table, to_dataset_labels
from clip2scene_core.segmenter import UNKNOWN_LABEL
from clip2scene_ros.bag import (CLASS_NAMES_TOPIC, GROUND_TRUTH_CLASSES_TOPIC, GROUND_TRUTH_TOPIC,
                                POINT_CLOUD2, POINTS_TOPIC, SEGMENTED_TOPIC, BagError, BagWriter,
                                GroundTruth, Prediction, Recording, read_input, read_recording, string_message)
from clip2scene_ros.bag_evaluation import ClassChange, evaluate_recording, segment_bag
from clip2scene_ros.bag_export import export_frames
from ros_harness import RosProcess

TEMPLATES = ["a photo of a {} in the scene."]  # one template keeps text encoding quick
SYNONYMS = ("automobile", "street", "tree", "house")
SYNONYM_MAP = {"automobile": "car", "street": "road", "tree": "vegetation", "house": "building"}
# The replayed run: the dataset's names first, synonyms from frame 2 on.
SCHEDULE = [ClassChange(0, SYNTHETIC_CLASSES), ClassChange(2, SYNONYMS)]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """Three synthetic LiDAR frames (8 beams) with ground truth, as an mcap bag."""
    config = SyntheticConfig(lidar=LidarConfig(beams=8, azimuth_steps=256), num_sweeps=0)
    frames = SyntheticDataset(None, num_scenes=1, frames_per_scene=3, config=config, with_cameras=False)
    path = tmp_path_factory.mktemp("bags") / "input"
    export_frames(list(frames), path, frames.class_names, dataset="synthetic")
    return path


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("text_cache")


@pytest.fixture(scope="module")
def node(ros_env, tiny_checkpoint, text_cache, tmp_path_factory):
    """The segmentation node on the tiny checkpoint, reliable input, remapped to the bag's topic."""
    from clip2scene_ros.replay import node_arguments

    parameters = {"device": "cpu", "reliability": "reliable", "depth": 10, "prompt_templates": TEMPLATES,
                  "text_cache_dir": str(text_cache)}
    with RosProcess("segment_node", node_arguments(tiny_checkpoint, parameters, POINTS_TOPIC),
                    tmp_path_factory.mktemp("node_logs")) as process:
        yield process


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint, text_cache):
    from clip2scene_core.segmenter import Segmenter

    return Segmenter(tiny_checkpoint, device="cpu", prompt_templates=TEMPLATES, text_cache_dir=text_cache)


# -- class names -> dataset labels -----------------------------------------------------------------

def test_predicted_names_map_to_dataset_labels_by_name_or_synonym():
    table = dataset_label_table(["automobile", "Traffic-Cone", "road", "sky"], SYNTHETIC_CLASSES,
                                {"automobile": "car"})
    assert table.tolist() == [7, 10, 1, 0]  # car, traffic cone (spelling-insensitive), road, no class
    labels = np.array([0, 1, 2, 3, UNKNOWN_LABEL, 4], np.uint16)
    assert to_dataset_labels(labels, table).tolist() == [7, 10, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="'lorry'.* not dataset classes"):
        dataset_label_table(["truck"], SYNTHETIC_CLASSES, {"truck": "lorry"})


def test_report_splits_miou_at_class_changes_and_counts_dropped_frames():
    truth = GroundTruth(("a", "b"), (10, 20, 30), {10: np.array([1, 2]), 20: np.array([1, 1]),
                                                   30: np.array([1, 2])})
    recording = Recording(
        predictions=[Prediction(10, np.array([0, 1], np.uint16), ("a", "b")),  # all right
                     Prediction(30, np.array([1, 0], np.uint16), ("beta", "alpha"))],  # all right via mapping
        latencies_ms=[10.0, 30.0])
    schedule = [ClassChange(1, ("beta", "alpha"))]
    evaluation = evaluate_recording(truth, recording, {"alpha": "a", "beta": "b"}, schedule)
    report = evaluation.report
    assert (report["frames"], report["evaluated"], report["dropped"]) == (3, 2, 1)
    assert report["dropped_frames"] == [1]
    assert report["miou"] == 1.0 and report["complete"] is True
    segments = [(s["first_frame"], s["last_frame"], s["miou"]) for s in report["segments"]]
    assert segments == [(0, 0, 1.0), (1, 2, 1.0)]
    assert report["segments"][1]["class_lists"] == [["beta", "alpha"]]
    assert report["latency_ms"] == {"p50": 20.0, "p95": 29.0, "count": 2}
    assert "dropped 1 (frames [1])" in evaluation.format_table()
    # Without the mapping the synonyms match no dataset class and count as wrong.
    assert evaluate_recording(truth, recording, schedule=schedule).report["segments"][1]["miou"] == 0.0


# -- bad bags --------------------------------------------------------------------------------------

def _truncate_storage(path):
    storage = next(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    storage.write_bytes(storage.read_bytes()[: storage.stat().st_size // 2])


def _drop_ground_truth(path):
    with sqlite3.connect(next(path.glob("*.db3"))) as db:
        db.execute("DELETE FROM messages WHERE topic_id IN "
                   "(SELECT id FROM topics WHERE name LIKE '%ground_truth')")


def _frame(stamp: int) -> Frame:
    return Frame(points=np.zeros((4, 3), np.float32), timestamp=stamp, labels=np.array([0, 1, 2, 1]))


@pytest.mark.parametrize("storage, damage, error, message", [
    ("mcap", lambda p: shutil.rmtree(p), FileNotFoundError, "bag not found: .*input"),
    ("mcap", lambda p: (p / "metadata.yaml").unlink(), BagError, "not a complete rosbag2"),
    ("mcap", _truncate_storage, BagError, "cannot open bag"),
    ("sqlite3", _truncate_storage, BagError, "cannot open bag"),
    ("sqlite3", _drop_ground_truth, BagError, "has no /lidar/ground_truth message"),
])
def test_damaged_or_missing_bags_fail_clearly(tmp_path, storage, damage, error, message):
    path = tmp_path / "input"
    export_frames([_frame(1), _frame(2)], path, ["a", "b"], storage=storage)
    damage(path)
    with pytest.raises(error, match=message):
        read_input(path)


def test_bags_with_missing_topics_or_foreign_types_fail_clearly(tmp_path):
    with BagWriter(tmp_path / "strings") as writer:  # right topic names, wrong (standard) type
        writer.write(POINTS_TOPIC, string_message("not a cloud"), 1)
    with pytest.raises(BagError, match=r"lacks topic\(s\) \['/lidar/ground_truth', '/lidar/ground_truth/cl"):
        read_input(tmp_path / "strings")

    with BagWriter(tmp_path / "garbled") as writer:  # right topics and types, payload cut short
        writer.write(GROUND_TRUTH_CLASSES_TOPIC, string_message('{"classes": ["a"]}'), 1)
        writer.add_topic(GROUND_TRUTH_TOPIC, POINT_CLOUD2)
        writer.write_raw(POINTS_TOPIC, POINT_CLOUD2, b"\x00\x01\x00\x00\x05\x00", 2)
    with pytest.raises(BagError, match="PointCloud2 message on /lidar/points cannot be decoded"):
        read_input(tmp_path / "garbled")

    with Writer(tmp_path / "foreign", version=9) as writer:  # a message type no typestore knows
        connection = writer.add_connection(POINTS_TOPIC, "vendor_msgs/msg/Scan", msgdef="float32[] ranges",
                                           rihs01="RIHS01_" + "0" * 64)
        writer.write(connection, 1, b"\x00\x01\x00\x00\x00\x00\x00\x00")
    with pytest.raises(BagError, match="unexpected message type.*vendor_msgs/msg/Scan.*msg/PointCloud2"):
        segment_bag(tmp_path / "foreign", segmenter=None)


def test_cli_on_a_bad_bag_exits_with_an_error_and_writes_no_report(tmp_path, caplog):
    report = tmp_path / "report.json"
    export_frames([_frame(1)], tmp_path / "input", ["a", "b"])
    _truncate_storage(tmp_path / "input")
    for bag in (tmp_path / "missing", tmp_path / "input"):
        status = cli.main(["evaluate-bag", str(bag), "--mode", "offline", "--checkpoint", "x.pt",
                           "--report", str(report)])
        assert status == 2 and not report.exists()
    assert "bag not found" in caplog.text and "cannot open bag" in caplog.text


# -- offline and live -------------------------------------------------------------------------------

def test_offline_cli_reports_per_class_iou_split_at_the_class_change(bag, tiny_checkpoint, text_cache,
                                                                     tmp_path, capsys):
    report_path = tmp_path / "report.json"
    argv = ["evaluate-bag", str(bag), "--mode", "offline", "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--prompt-template", TEMPLATES[0], "--text-cache-dir", str(text_cache),
            "--set-classes", "2:" + ",".join(SYNONYMS), "--report", str(report_path)]
    argv += [f"--map={name}={target}" for name, target in SYNONYM_MAP.items()]
    assert cli.main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["mode"] == "offline" and report["complete"] and report["dropped"] == 0
    assert [s["class_lists"] for s in report["segments"]] == [[list(SYNTHETIC_CLASSES)], [list(SYNONYMS)]]
    assert report["latency_ms"]["count"] == 3
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "frames    2..2" in printed


def test_live_replay_gives_the_offline_labels_and_follows_class_changes(bag, node, segmenter, rclpy_context,
                                                                       tmp_path):
    from clip2scene_ros.replay import replay_bag

    live = replay_bag(bag, tmp_path / "output", context=rclpy_context, schedule=SCHEDULE,
                      wait_for_output=True, alive=lambda: node.poll() is None)
    offline = segment_bag(bag, segmenter, SCHEDULE)
    assert node.poll() is None, node.output()
    assert [p.stamp for p in live.predictions] == [p.stamp for p in offline.predictions] == \
        list(read_input(bag).stamps)
    for live_prediction, offline_prediction in zip(live.predictions, offline.predictions):
        assert live_prediction.class_names == offline_prediction.class_names
        np.testing.assert_array_equal(live_prediction.labels, offline_prediction.labels)
    assert [p.class_names for p in live.predictions] == [SYNTHETIC_CLASSES] * 2 + [SYNONYMS]
    assert len(live.latencies_ms) == 3

    truth = read_input(bag)
    live_report = evaluate_recording(truth, live, SYNONYM_MAP, SCHEDULE).report
    offline_report = evaluate_recording(truth, offline, SYNONYM_MAP, SCHEDULE).report
    assert live_report["dropped"] == 0
    assert live_report["overall"]["confusion"] == offline_report["overall"]["confusion"]
    assert [s["miou"] for s in live_report["segments"]] == [s["miou"] for s in offline_report["segments"]]
    assert len(read_recording(tmp_path / "output").predictions) == 3  # the recording is a readable bag


def test_live_cli_replays_into_the_running_node_and_writes_the_report(bag, node, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    argv = ["evaluate-bag", str(bag), "--mode", "live", "--classes", *SYNTHETIC_CLASSES, "--rate", "4",
            "--output-bag", str(tmp_path / "output"), "--storage", "sqlite3", "--report", str(report_path),
            "--extra-topic", "/lidar/ground_truth"]
    assert cli.main(argv) == 0, node.output()
    report = json.loads(report_path.read_text())
    assert report["mode"] == "live" and report["frames"] == 3
    assert report["evaluated"] + report["dropped"] == 3 and report["evaluated"] >= 1
    assert report["output_bag"] == str((tmp_path / "output").resolve())
    assert (tmp_path / "output" / "output.db3").is_file()


def test_playback_follows_recorded_timing_scaled_by_rate_and_skips_long_pauses():
    from clip2scene_ros.replay import PlaybackClock

    clock = PlaybackClock(rate=2.0, max_gap=1.0)
    seconds = [0.0, 0.1, 3600.1, 3600.2]  # two scenes an hour apart
    offsets = [clock.offset(int(s * 1e9)) for s in seconds]
    np.testing.assert_allclose(offsets, [0.0, 0.05, 0.55, 0.6])
    with pytest.raises(ValueError, match="must be > 0"):
        PlaybackClock(rate=0.0, max_gap=1.0)


def test_live_replay_without_a_reachable_node_fails_and_leaves_no_output_or_report(bag, ros_env, tmp_path,
                                                                                   caplog):
    # /nobody has no parameter service, whether or not the module's node is up yet.
    report = tmp_path / "report.json"
    argv = ["evaluate-bag", str(bag), "--mode", "live", "--node-name", "/nobody", "--set-classes", "0:car",
            "--startup-timeout", "2", "--output-bag", str(tmp_path / "output"), "--report", str(report)]
    assert cli.main(argv) == 1
    assert "live replay failed, no report written: timed out" in caplog.text
    assert not report.exists() and not (tmp_path / "output").exists()


def test_panoptic_quality_counts_the_frames_with_instances_on_both_sides():
    # Label 1 "road" (stuff), 2 "car" (thing): 10 road points, car 7 (6 points), car 8 (5 points).
    labels = np.array([1] * 10 + [2] * 11)
    instances = np.array([0] * 10 + [7] * 6 + [8] * 5, np.uint32)
    truth = GroundTruth(("road", "car"), (10, 20, 30), {10: labels, 20: labels, 30: labels}, ("car",),
                        {10: instances, 20: instances})
    merged = np.array([0] * 10 + [3] * 11, np.uint32)  # the two cars as one object: matches car 7 (IoU 6/11)
    recording = Recording(predictions=[
        Prediction(10, (labels - 1).astype(np.uint16), ("road", "car"), np.where(labels == 2, instances - 6, 0)),
        Prediction(20, (labels - 1).astype(np.uint16), ("road", "car"), merged),
        Prediction(30, (labels - 1).astype(np.uint16), ("road", "car"), merged)])  # no ground-truth instances
    evaluation = evaluate_recording(truth, recording)
    panoptic = evaluation.report["panoptic"]
    assert panoptic["frames"] == 2 and panoptic["thing_classes"] == ["car"]
    # car: 3 TP (IoU 1, 1, 6/11), car 8 of frame 20 missed (FN 1); frame 30 not counted; road perfect.
    car = (2 + 6 / 11) / 3 * 3 / 3.5
    assert panoptic["pq_things"] == pytest.approx(car) and panoptic["pq_stuff"] == pytest.approx(1.0)
    assert panoptic["per_class_pq"] == {"road": pytest.approx(1.0), "car": pytest.approx(car)}
    assert f"pq_things: {100 * car:.1f} %" in evaluation.format_table()
    without = Recording(predictions=[Prediction(10, (labels - 1).astype(np.uint16), ("road", "car"))])
    assert evaluate_recording(truth, without).report["panoptic"] is None


def test_a_recording_without_any_output_reports_every_frame_dropped(tmp_path):
    with BagWriter(tmp_path / "output") as writer:
        writer.add_topic(SEGMENTED_TOPIC, POINT_CLOUD2)
        writer.write(CLASS_NAMES_TOPIC, string_message(json.dumps({"version": 1, "classes": ["a"]})), 1)
    recording = read_recording(tmp_path / "output")
    assert recording.predictions == [] and recording.latencies_ms == []
    truth = GroundTruth(("a",), (10, 20), {10: np.array([1]), 20: np.array([1])})
    report = evaluate_recording(truth, recording).report
    assert (report["evaluated"], report["dropped_frames"]) == (0, [0, 1])
    assert report["miou"] is None  # nothing to score


def test_live_cli_with_a_node_that_dies_fails_fast_without_a_report(bag, ros_env, tmp_path, caplog,
                                                                   monkeypatch):
    # A domain of its own, so the module's healthy node cannot answer in the dying node's place.
    monkeypatch.setenv("ROS_DOMAIN_ID", str(int(ros_env["ROS_DOMAIN_ID"]) + 100))
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    report = tmp_path / "report.json"
    argv = ["evaluate-bag", str(bag), "--mode", "live", "--checkpoint", str(bogus), "--output-bag",
            str(tmp_path / "output"), "--report", str(report)]
    assert cli.main(argv) == 1
    assert "the segmentation node exited" in caplog.text
    assert not report.exists() and not (tmp_path / "output").exists()
    assert "not a readable clip2scene checkpoint" in (tmp_path / "output.node.log").read_text()


class _CameraSpy:
    """A stand-in `Segmenter` that records which camera images each cloud was labelled with."""

    def __init__(self) -> None:
        from clip2scene_core.segmenter import ClassSpace

        self.class_space = ClassSpace(("a",), None, 0)
        self.calls: list[list[tuple[str, int]]] = []

    def segment(self, points, intensity=None, cameras=(), class_space=None):
        from clip2scene_core.segmenter import Segmentation

        self.calls.append([(camera.name, camera.timestamp) for camera in cameras])
        return Segmentation(np.zeros(len(points), np.uint32), np.zeros(len(points), np.float32), class_space)


def test_offline_cameras_pair_each_cloud_with_its_nearest_images(tmp_path):
    config = SyntheticConfig(lidar=LidarConfig(beams=4, azimuth_steps=64), num_sweeps=0)
    frames = list(SyntheticDataset(None, num_scenes=1, frames_per_scene=3, config=config))
    summary = export_frames(frames, tmp_path / "bag", SYNTHETIC_CLASSES, dataset="synthetic")
    names = [camera.name for camera in frames[0].cameras]
    spy = _CameraSpy()
    recording = segment_bag(summary.path, spy, cameras=names)
    assert [p.stamp for p in recording.predictions] == list(read_input(summary.path).stamps)
    # Every cloud gets every camera, each the image taken with its own scan (+-15 ms), not a neighbour's.
    assert spy.calls == [[(camera.name, camera.timestamp) for camera in frame.cameras] for frame in frames]
    with pytest.raises(ValueError, match="no lidar_to_camera for camera 'rear'"):
        segment_bag(summary.path, spy, cameras=["rear"])
