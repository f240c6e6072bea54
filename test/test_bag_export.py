"""`clip2scene export-bag` writes standard rosbag2 files (mcap and sqlite3) that other tools can read."""
from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np
import pytest
import yaml

from clip2scene_core import cli
from clip2scene_core.data.synthetic import SyntheticConfig, SyntheticDataset, write_synthetic_dataset
from clip2scene_core.data.synthetic.render import CameraConfig, LidarConfig
from clip2scene_core.frame import Frame
from clip2scene_ros.bag import GROUND_TRUTH_CLASSES_TOPIC, METADATA_KEY, BagFile, read_input
from clip2scene_ros.bag_export import SCENE_GAP_NS, BagClock, export_frames

# A small world: 8 beams, tiny images, no sweeps, so a frame takes well under a second.
TINY_WORLD = SyntheticConfig(lidar=LidarConfig(beams=8, azimuth_steps=256),
                             cameras=CameraConfig(image_size=(48, 80)), num_sweeps=0)


class Decoded(NamedTuple):
    schema: str
    log_time: int
    message: Any


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    """Two scenes of one frame each, written like `clip2scene synth` does."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_scenes=2, frames_per_scene=1,
                                   config=TINY_WORLD)


def test_cli_export_decodes_with_mcap_ros2_as_standard_messages(synthetic_folder, tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = tmp_path / "bag"
    assert cli.main(["export-bag", str(out), "--root", str(synthetic_folder)]) == 0
    frames = SyntheticDataset(synthetic_folder)
    messages: dict[str, list] = {}
    with open(out / "bag.mcap", "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            messages.setdefault(channel.topic, []).append(Decoded(schema.name, message.log_time, decoded))
    cameras = [camera.name for camera in frames[0].cameras]
    expected = {"/lidar/points", "/lidar/ground_truth", GROUND_TRUTH_CLASSES_TOPIC, "/calibration",
                *(f"/{name}/image" for name in cameras), *(f"/{name}/camera_info" for name in cameras)}
    assert set(messages) == expected
    assert {messages[t][0].schema for t in ("/lidar/points", "/lidar/ground_truth")} == \
        {"sensor_msgs/msg/PointCloud2"}
    classes = json.loads(messages[GROUND_TRUTH_CLASSES_TOPIC][0].message.data)["classes"]
    assert classes == list(frames.class_names)

    for index, frame in enumerate(frames):
        cloud = messages["/lidar/points"][index]
        stamp = cloud.message.header.stamp
        assert stamp.sec * 10**9 + stamp.nanosec == cloud.log_time == frame.timestamp
        fields = [(f.name, f.datatype) for f in cloud.message.fields]
        assert fields == [(name, 7) for name in ("x", "y", "z", "intensity")]  # 7 = FLOAT32
        data = np.frombuffer(bytes(cloud.message.data), np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(data[:, :3], frame.points)
        np.testing.assert_array_equal(data[:, 3], frame.intensity)

        truth = messages["/lidar/ground_truth"][index].message
        label_field = next(f for f in truth.fields if f.name == "label")
        assert label_field.datatype == 4  # uint16
        raw = np.frombuffer(bytes(truth.data), np.uint8).reshape(-1, truth.point_step)
        labels = raw[:, label_field.offset:label_field.offset + 2].copy().view(np.uint16)[:, 0]
        np.testing.assert_array_equal(labels, frame.labels)
        instance_field = next(f for f in truth.fields if f.name == "instance")
        assert instance_field.datatype == 6  # uint32
        instances = raw[:, instance_field.offset:instance_field.offset + 4].copy().view(np.uint32)[:, 0]
        np.testing.assert_array_equal(instances, frame.instances)

        camera = frame.cameras[0]
        image = messages[f"/{camera.name}/image"][index].message
        assert (image.encoding, image.height, image.width) == ("rgb8", camera.height, camera.width)
        np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(camera.image.shape),
                                      camera.image)
        info = messages[f"/{camera.name}/camera_info"][index].message
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), camera.K)
        assert (info.height, info.width) == (camera.height, camera.width)
        calibration = json.loads(messages["/calibration"][index].message.data)
        np.testing.assert_allclose(calibration[camera.name]["lidar_to_camera"], camera.lidar_to_camera)

    calibration_file = yaml.safe_load((out / "calibration.yaml").read_text())
    assert set(calibration_file) == set(cameras)
    np.testing.assert_allclose(calibration_file[cameras[0]]["lidar_to_camera"],
                               frames[0].cameras[0].lidar_to_camera)


def test_sqlite3_bag_reads_back_the_frames_and_ground_truth(tmp_path):
    frames = SyntheticDataset(None, num_scenes=1, frames_per_scene=2, config=TINY_WORLD, with_cameras=False)
    summary = export_frames(list(frames), tmp_path / "bag", frames.class_names, storage="sqlite3",
                            dataset="synthetic", thing_classes=("car", "pedestrian"))
    assert (tmp_path / "bag" / "bag.db3").is_file() and summary.calibration_file is None
    truth = read_input(tmp_path / "bag")
    assert truth.class_names == frames.class_names
    assert truth.stamps == tuple(frame.timestamp for frame in frames)
    assert truth.thing_classes == ("car", "pedestrian")
    for frame, stamp in zip(frames, truth.stamps):
        np.testing.assert_array_equal(truth.labels[stamp], frame.labels)
        assert truth.instances[stamp].dtype == np.uint32 and frame.instances.any()
        np.testing.assert_array_equal(truth.instances[stamp], frame.instances)
    with BagFile(tmp_path / "bag") as bag:
        assert json.loads(bag.metadata[METADATA_KEY]) == {"dataset": "synthetic", "classes": list(frames.class_names),
                                                          "things": ["car", "pedestrian"]}
        assert "/calibration" not in bag.topics


def test_thing_classes_must_be_classes_and_frames_without_instances_export_no_instance_field(tmp_path):
    frames = SyntheticDataset(None, num_scenes=1, frames_per_scene=1, config=TINY_WORLD, with_cameras=False)
    with pytest.raises(ValueError, match=r"thing classes \['lorry'\] are not in the class list"):
        export_frames(list(frames), tmp_path / "bad", frames.class_names, thing_classes=["lorry"])
    frame = frames[0]
    frame.instances = None
    export_frames([frame], tmp_path / "bag", frames.class_names, include_cameras=False)
    truth = read_input(tmp_path / "bag")
    assert truth.instances == {} and truth.thing_classes == ()


def test_restarting_scene_clocks_still_give_increasing_unique_stamps():
    clock = BagClock()
    stamps = [clock.stamp(t) for t in (1_000, 2_000, 0, 1_000)]
    assert stamps == [1_000, 2_000, 2_000 + SCENE_GAP_NS, 3_000 + SCENE_GAP_NS]
    assert clock.offset == 2_000 + SCENE_GAP_NS
    with pytest.raises(ValueError, match="timestamps must be >= 0"):
        clock.stamp(-1)


def test_a_failed_export_leaves_no_bag_and_an_existing_bag_is_never_overwritten(tmp_path):
    good = Frame(points=np.zeros((3, 3), np.float32), timestamp=10, labels=np.array([0, 1, 2]))
    bad = Frame(points=np.zeros((2, 3), np.float32), timestamp=20, labels=np.array([1, 5]))
    with pytest.raises(ValueError, match="label 5 but only 2 classes"):
        export_frames([good, bad], tmp_path / "bag", ["a", "b"])
    assert not (tmp_path / "bag").exists()
    export_frames([good], tmp_path / "bag", ["a", "b"])
    with pytest.raises(FileExistsError, match="exists already"):
        export_frames([good], tmp_path / "bag", ["a", "b"])


@pytest.mark.parametrize("kind, folder, options", [
    ("semantickitti", "semantickitti", ["cameras=false"]),
    ("nuscenes", "nuscenes-mini", ["cameras=[]"]),
])
def test_real_dataset_frames_export_with_their_labels(real_data, tmp_path, kind, folder, options):
    from clip2scene_core.data import open_dataset

    argv = ["export-bag", str(tmp_path / "bag"), "--dataset", kind, "--root", str(real_data / folder),
            "--frames", "1", "--storage", "sqlite3"] + [f"--option={option}" for option in options]
    assert cli.main(argv) == 0
    frame = open_dataset(kind, real_data / folder, **{k: yaml.safe_load(v) for k, v in
                                                      (o.split("=") for o in options)})[0]
    truth = read_input(tmp_path / "bag")
    assert len(truth.stamps) == 1 and len(truth.class_names) in (16, 19)
    np.testing.assert_array_equal(truth.labels[truth.stamps[0]], frame.labels)
    with BagFile(tmp_path / "bag") as bag:
        assert ("/calibration" in bag.topics) == bool(frame.cameras)
