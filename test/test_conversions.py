"""PointCloud2 / Image / CameraInfo <-> numpy conversions, checked against hand-packed messages."""
from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 sensor_msgs is not installed")
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from clip2scene_ros.conversions import (  # noqa: E402
    MessageFormatError, array_to_cloud, camera_info_to_intrinsics, cloud_to_array, cloud_to_xyz,
    fields_to_dtype, image_to_numpy, image_to_raw, make_cloud, make_header, ns_to_stamp,
    numpy_to_image, object_markers, pack_rgb, segmented_cloud, stamp_to_ns, to_rgb, unpack_rgb)

F = PointField


def _lidar_fields() -> list[PointField]:
    """x, y, z float32, a 4-byte gap, intensity float32, ring uint16, then padding to point_step 32."""
    return [F(name="x", offset=0, datatype=F.FLOAT32, count=1),
            F(name="y", offset=4, datatype=F.FLOAT32, count=1),
            F(name="z", offset=8, datatype=F.FLOAT32, count=1),
            F(name="intensity", offset=16, datatype=F.FLOAT32, count=1),
            F(name="ring", offset=20, datatype=F.UINT16, count=1)]


LIDAR_POINTS = [(1.0, -2.0, 0.5, 7.0, 3), (10.25, 0.0, -1.5, 255.0, 31), (-3.0, 4.0, 2.0, 0.0, 0)]


def _cloud(fields, point_step, data, width, height=1, row_step=None, big=False, dense=True):
    return PointCloud2(height=height, width=width, fields=fields, is_bigendian=big,
                       point_step=point_step,
                       row_step=point_step * width if row_step is None else row_step,
                       data=bytes(data), is_dense=dense)


def _lidar_cloud(order: str) -> PointCloud2:
    data = bytearray(32 * len(LIDAR_POINTS))
    for i, (x, y, z, intensity, ring) in enumerate(LIDAR_POINTS):
        struct.pack_into(order + "fff", data, 32 * i, x, y, z)
        struct.pack_into(order + "fH", data, 32 * i + 16, intensity, ring)
    return _cloud(_lidar_fields(), 32, data, len(LIDAR_POINTS), big=order == ">")


@pytest.mark.parametrize("order", ["<", ">"])
def test_cloud_with_padding_decodes_in_either_byte_order(order):
    points = cloud_to_array(_lidar_cloud(order))
    assert points.shape == (3,) and points.dtype.itemsize == 32
    for name, column in zip(["x", "y", "z", "intensity", "ring"], zip(*LIDAR_POINTS)):
        np.testing.assert_array_equal(points[name], np.array(column))


# Every PointField datatype, with count > 1 fields, at unaligned offsets; point_step 48 leaves padding.
ALL_TYPES = [("a", F.INT8, 3, "b", [-128, 5, 127]), ("b", F.UINT8, 1, "B", [200]),
             ("c", F.INT16, 2, "h", [-30000, 12]), ("d", F.UINT16, 1, "H", [65000]),
             ("e", F.INT32, 1, "i", [-2_000_000_000]), ("f", F.UINT32, 1, "I", [4_000_000_000]),
             ("g", F.FLOAT32, 2, "f", [1.5, -0.25]), ("h", F.FLOAT64, 1, "d", [3.141592653589793])]


def _all_types_cloud(order: str) -> PointCloud2:
    fields, data, offset = [], bytearray(), 0
    point = bytearray(48)
    for name, datatype, count, code, values in ALL_TYPES:
        fields.append(F(name=name, offset=offset, datatype=datatype, count=count))
        struct.pack_into(order + code * count, point, offset, *values)
        offset += struct.calcsize("<" + code * count)
    data = point + point  # two identical points
    return _cloud(fields, 48, data, 2, big=order == ">")


@pytest.mark.parametrize("order", ["<", ">"])
def test_every_datatype_and_count_decodes(order):
    points = cloud_to_array(_all_types_cloud(order))
    for name, _, count, _, values in ALL_TYPES:
        column = points[name]
        assert column.shape == ((2, count) if count > 1 else (2,))
        np.testing.assert_array_equal(column[1], values if count > 1 else values[0])


@pytest.mark.parametrize("order", ["<", ">"])
def test_array_to_cloud_round_trips_bytes_exactly(order):
    hand_built = _all_types_cloud(order)
    points = cloud_to_array(hand_built)
    rebuilt = array_to_cloud(points, stamp_ns=5, frame_id="lidar")
    assert bytes(rebuilt.data) == bytes(hand_built.data)
    assert rebuilt.is_bigendian == (order == ">")
    assert (rebuilt.point_step, rebuilt.row_step, rebuilt.width, rebuilt.height) == (48, 96, 2, 1)
    assert [(f.name, f.offset, f.datatype, f.count) for f in rebuilt.fields] == \
        [(f.name, f.offset, f.datatype, f.count) for f in hand_built.fields]
    np.testing.assert_array_equal(cloud_to_array(rebuilt), points)


def test_mixed_byte_order_array_is_written_native():
    mixed = np.zeros(2, dtype=[("x", ">f4"), ("y", "<f4"), ("z", "<f4")])
    mixed["x"] = [1.0, 2.0]
    cloud = array_to_cloud(mixed)
    assert not cloud.is_bigendian
    np.testing.assert_array_equal(cloud_to_array(cloud)["x"], [1.0, 2.0])


def test_organised_cloud_with_row_padding():
    # 2 rows x 3 points of (x, y, z) float32; each row padded from 36 to 40 bytes.
    fields = _lidar_fields()[:3]
    data = bytearray(80)
    for row in range(2):
        for col in range(3):
            struct.pack_into("<fff", data, 40 * row + 12 * col, row, col, row * 10 + col)
        data[40 * row + 36:40 * row + 40] = b"\xff" * 4
    cloud = _cloud(fields, 12, data, width=3, height=2, row_step=40)
    grid = cloud_to_array(cloud, flatten=False)
    assert grid.shape == (2, 3)
    np.testing.assert_array_equal(grid["z"], [[0, 1, 2], [10, 11, 12]])
    flat = cloud_to_array(cloud)
    np.testing.assert_array_equal(flat["y"], [0, 1, 2, 0, 1, 2])


def test_decoding_is_a_view_of_the_message_buffer():
    cloud = make_cloud({"x": np.arange(4, dtype=np.float32), "y": np.zeros(4, np.float32),
                        "z": np.zeros(4, np.float32)})
    points = cloud_to_array(cloud)
    assert np.shares_memory(points, np.frombuffer(cloud.data, dtype=np.uint8))


def test_copy_gives_an_owned_array():
    cloud = _lidar_cloud("<")
    owned = cloud_to_array(cloud, copy=True)
    assert not np.shares_memory(owned, np.frombuffer(cloud.data, dtype=np.uint8))
    np.testing.assert_array_equal(owned, cloud_to_array(cloud))


def test_rosbags_style_message_with_numpy_data_decodes():
    hand_built = _lidar_cloud("<")
    duck = SimpleNamespace(**{k: getattr(hand_built, k) for k in (
        "height", "width", "fields", "is_bigendian", "point_step", "row_step", "is_dense")},
        data=np.frombuffer(bytes(hand_built.data), dtype=np.uint8))
    np.testing.assert_array_equal(cloud_to_array(duck), cloud_to_array(hand_built))


def test_real_nuscenes_sweep_bytes_decode_as_a_cloud(real_data):
    # nuScenes stores each point as 5 little-endian float32: x, y, z, intensity, ring.
    path = next((real_data / "nuscenes-mini" / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    payload = path.read_bytes()
    fields = [F(name=name, offset=4 * i, datatype=F.FLOAT32, count=1)
              for i, name in enumerate(["x", "y", "z", "intensity", "ring"])]
    cloud = _cloud(fields, 20, payload, width=len(payload) // 20)
    expected = np.frombuffer(payload, dtype="<f4").reshape(-1, 5)
    result = cloud_to_xyz(cloud)
    assert result.points.shape == (34688, 3) and result.num_dropped == 0
    np.testing.assert_array_equal(result.points, expected[:, :3])
    np.testing.assert_array_equal(result.intensity, expected[:, 3])


def test_empty_cloud_decodes_to_zero_points():
    cloud = _cloud(_lidar_fields(), 32, b"", width=0)
    assert cloud_to_array(cloud).shape == (0,)
    assert cloud_to_xyz(cloud).points.shape == (0, 3)


def test_cloud_to_xyz_drops_invalid_points_and_reports_them():
    xyz = np.array([[1, 2, 3], [np.nan, 0, 0], [4, 5, 6], [0, np.inf, 0]], dtype=np.float32)
    cloud = make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                        "intensity": np.array([10, 20, 30, 40], dtype=np.uint8)})
    assert cloud.is_dense is False
    result = cloud_to_xyz(cloud)
    np.testing.assert_array_equal(result.points, xyz[[0, 2]])
    np.testing.assert_array_equal(result.intensity, [10.0, 30.0])
    assert result.intensity.dtype == np.float32 and result.points.dtype == np.float32
    assert result.num_dropped == 2
    np.testing.assert_array_equal(result.valid, [True, False, True, False])
    kept = cloud_to_xyz(cloud, drop_invalid=False)
    assert kept.points.shape == (4, 3) and kept.num_dropped == 0


def test_cloud_to_xyz_accepts_any_numeric_layout():
    cloud = _all_types_cloud(">")
    cloud.fields[4].name, cloud.fields[5].name, cloud.fields[7].name = "x", "y", "z"  # int32/uint32/f64
    result = cloud_to_xyz(cloud, intensity_field="d")
    np.testing.assert_allclose(result.points[0], [-2e9, 4e9, 3.141592653589793], rtol=1e-6)
    np.testing.assert_array_equal(result.intensity, [65000.0, 65000.0])
    for order in "<>":  # adjacent float32 x, y, z: the block-copy path, with and without byte swap
        result = cloud_to_xyz(_lidar_cloud(order), intensity_field=None)
        np.testing.assert_array_equal(result.points, np.array(LIDAR_POINTS, np.float32)[:, :3])
        assert result.intensity is None


def test_segmented_cloud_layout_for_rviz():
    points = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    colors = np.array([[255, 0, 0], [1, 2, 3]], dtype=np.uint8)
    cloud = segmented_cloud(points, labels=np.array([0, 0xFFFF]), scores=np.array([0.5, 0.25]),
                            colors=colors, intensity=np.array([7, 8]), stamp_ns=3_000_000_001,
                            frame_id="lidar")
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "label", "score", "rgb", "instance"]
    # uint32, like PCL's PointXYZL / PointXYZRGBL label (pcl_ros, RViz colour-by-label users).
    assert {f.name: f.datatype for f in cloud.fields}["label"] == F.UINT32
    decoded = cloud_to_array(cloud)
    np.testing.assert_array_equal(decoded["label"], [0, 0xFFFF])
    np.testing.assert_array_equal(unpack_rgb(decoded["rgb"]), colors)
    assert stamp_to_ns(cloud.header.stamp) == 3_000_000_001 and cloud.header.frame_id == "lidar"
    with pytest.raises(ValueError, match="0..2"):
        segmented_cloud(points, labels=np.array([0, -1]), scores=np.zeros(2), colors=colors)


def read_points_with_struct(cloud) -> list[dict]:
    """A generic PointCloud2 reader built from the PointField list alone (what upstream
    ``sensor_msgs_py.point_cloud2.read_points`` does), point by point with ``struct``."""
    codes = {F.INT8: "b", F.UINT8: "B", F.INT16: "h", F.UINT16: "H", F.INT32: "i", F.UINT32: "I",
             F.FLOAT32: "f", F.FLOAT64: "d"}
    order = ">" if cloud.is_bigendian else "<"
    data = bytes(cloud.data)
    return [{f.name: struct.unpack_from(order + codes[f.datatype], data, i * cloud.point_step + f.offset)[0]
             for f in cloud.fields} for i in range(cloud.width * cloud.height)]


def test_instance_field_round_trips_as_uint32_through_a_generic_reader():
    points = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
    instances = np.array([0, 7, 0xFFFFFFFF], np.uint32)
    cloud = segmented_cloud(points, labels=np.array([0, 1, 0xFFFF]), scores=np.array([0.5, 0.25, 0.0]),
                            colors=np.zeros((3, 3), np.uint8), instances=instances)
    assert {f.name: f.datatype for f in cloud.fields}["instance"] == F.UINT32
    decoded = read_points_with_struct(cloud)
    assert [p["instance"] for p in decoded] == [0, 7, 0xFFFFFFFF]
    assert [p["label"] for p in decoded] == [0, 1, 0xFFFF] and decoded[1]["y"] == 5.0
    np.testing.assert_array_equal(cloud_to_array(cloud)["instance"], instances)
    unset = segmented_cloud(points, np.zeros(3, np.uint16), np.zeros(3), np.zeros((3, 3), np.uint8))
    assert [p["instance"] for p in read_points_with_struct(unset)] == [0, 0, 0]
    for bad, message in ((np.array([0, -1, 2]), "0..2"), (np.zeros(2, np.uint32), r"\(3,\) integers"),
                         (np.zeros(3), "integers")):
        with pytest.raises(ValueError, match=f"instances must .*{message}"):
            segmented_cloud(points, np.zeros(3, np.uint16), np.zeros(3), np.zeros((3, 3), np.uint8), instances=bad)


def test_objects_become_one_cube_marker_each_after_a_delete_all():
    from clip2scene_core.objects import extract_objects

    rng = np.random.default_rng(0)
    car = (rng.uniform(-1, 1, (300, 3)) * [2.0, 0.8, 0.7] + [10.0, 0.0, 0.7]).astype(np.float32)
    yaw = np.radians(30.0)
    car[:, :2] = (car[:, :2] - [10.0, 0.0]) @ np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]]) \
        + [10.0, 0.0]
    person = (rng.uniform(-1, 1, (50, 3)) * [0.3, 0.3, 0.9] + [0.0, 6.0, 0.9]).astype(np.float32)
    points = np.concatenate([car, person])
    classes = np.array([1] * 300 + [2] * 50)
    _, objects = extract_objects(points, classes, np.full(350, 0.5, np.float32), (1, 2))
    stamp = ns_to_stamp(5_000_000_007)
    message = object_markers(objects, ["road", "car", "pedestrian"], np.array([[255, 0, 0], [0, 0, 255]], np.uint8),
                             stamp, "lidar")
    first, *boxes = message.markers
    assert first.action == Marker.DELETEALL and len(boxes) == 2
    assert [(m.ns, m.id, m.type) for m in boxes] == [("car", 1, Marker.CUBE), ("pedestrian", 2, Marker.CUBE)]
    assert all(m.header.frame_id == "lidar" and stamp_to_ns(m.header.stamp) == 5_000_000_007 for m in message.markers)
    car_marker = boxes[0]
    q = car_marker.pose.orientation
    assert abs(np.degrees(2 * np.arctan2(q.z, q.w)) - 30.0) < 3.0 and (q.x, q.y) == (0.0, 0.0)
    assert abs(car_marker.scale.x - 4.0) < 0.2 and abs(car_marker.scale.y - 1.6) < 0.2
    assert abs(car_marker.pose.position.x - 10.0) < 0.1 and car_marker.color.r == 1.0 and car_marker.color.a == 0.5
    info = json.loads(car_marker.text)
    assert info["class"] == "car" and info["points"] == 300 and info["score"] == 0.5
    np.testing.assert_allclose(info["centroid"], car.mean(0), atol=1e-3)
    with pytest.raises(ValueError, match=r"colors must be \(2, 3\)"):
        object_markers(objects, ["road", "car", "pedestrian"], np.zeros((1, 3), np.uint8), stamp, "lidar")


def test_segmented_cloud_keeps_an_organised_shape_and_nan_points():
    points = np.array([[1, 2, 3], [np.nan, np.nan, np.nan], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
    cloud = segmented_cloud(points, labels=np.array([0, 0xFFFF, 1, 2]), scores=np.zeros(4),
                            colors=np.zeros((4, 3), np.uint8), shape=(2, 2))
    assert (cloud.height, cloud.width, cloud.is_dense) == (2, 2, False)
    decoded = cloud_to_array(cloud, flatten=False)
    assert decoded.shape == (2, 2) and np.isnan(decoded["x"][0, 1])
    with pytest.raises(ValueError, match="does not hold"):
        segmented_cloud(points, labels=np.zeros(4), scores=np.zeros(4), colors=np.zeros((4, 3), np.uint8),
                        shape=(3, 2))


def test_pack_rgb_matches_rviz_bit_layout():
    packed = pack_rgb(np.array([[255, 128, 1]], dtype=np.uint8))
    assert packed.dtype == np.float32 and packed.view(np.uint32)[0] == 0xFF8001


def test_make_cloud_rejects_ragged_or_unsupported_columns():
    with pytest.raises(ValueError, match="one length"):
        make_cloud({"x": np.zeros(3, np.float32), "y": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="PointField cannot describe"):
        make_cloud({"x": np.zeros(3, np.int64)})


@pytest.mark.parametrize("mutate, message", [
    (lambda c: setattr(c, "data", bytes(c.data)[:-1]), "data holds 95 bytes, expected row_step"),
    (lambda c: setattr(c, "row_step", 100), "data holds 96 bytes, expected row_step \\* height"),
    (lambda c: setattr(c, "row_step", 20), "row_step 20 is smaller than width \\* point_step"),
    (lambda c: setattr(c.fields[1], "datatype", 9), "'y' has unknown datatype 9"),
    (lambda c: setattr(c.fields[1], "offset", 2), "'x' and 'y' overlap"),
    (lambda c: setattr(c.fields[4], "offset", 31), "'ring' \\(offset 31, 2 bytes\\) extends past"),
    (lambda c: setattr(c.fields[4], "count", 0), "'ring' has count 0"),
    (lambda c: setattr(c.fields[4], "name", "x"), "'x' appears more than once"),
])
def test_malformed_cloud_raises_message_format_error(mutate, message):
    cloud = _lidar_cloud("<")
    mutate(cloud)
    with pytest.raises(MessageFormatError, match=message):
        cloud_to_array(cloud)


def test_cloud_without_z_is_rejected_by_name():
    cloud = _lidar_cloud("<")
    cloud.fields = cloud.fields[:2] + cloud.fields[3:]
    with pytest.raises(MessageFormatError, match="no 'z' field"):
        cloud_to_xyz(cloud)


def test_fields_to_dtype_sets_offsets_and_itemsize():
    dtype = fields_to_dtype(_lidar_fields(), 32, is_bigendian=True)
    assert dtype.itemsize == 32 and dtype.fields["ring"] == (np.dtype(">u2"), 20)


# ------------------------------------------------------------------------------------------ images

def _image(encoding, height, width, step, data, big=0):
    return Image(height=height, width=width, encoding=encoding, is_bigendian=big, step=step,
                 data=bytes(data))


COLOUR_PIXELS = np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [100, 110, 120]]], np.uint8)


@pytest.mark.parametrize("encoding, order", [("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0]),
                                             ("rgba8", [0, 1, 2, None]), ("bgra8", [2, 1, 0, None])])
def test_colour_image_with_row_padding_becomes_rgb(encoding, order):
    channels = len(order)
    step = 2 * channels + 3  # 3 padding bytes per row
    data = bytearray(step * 2)
    for row in range(2):
        for col in range(2):
            for k, source in enumerate(order):
                data[row * step + col * channels + k] = 255 if source is None \
                    else COLOUR_PIXELS[row, col, source]
    rgb = image_to_numpy(_image(encoding, 2, 2, step, data))
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, COLOUR_PIXELS)


@pytest.mark.parametrize("encoding, code, dtype, values", [
    ("mono8", "B", np.uint8, [0, 7, 255]), ("mono16", "H", np.uint16, [1, 258, 65535]),
    ("16UC1", "H", np.uint16, [0, 1000, 40000]), ("32FC1", "f", np.float32, [0.5, -1.0, np.inf])])
@pytest.mark.parametrize("order", ["<", ">"])
def test_single_channel_image_stays_raw(encoding, code, dtype, values, order):
    step = 3 * struct.calcsize(code) + 2
    data = bytearray(step * 2)
    for row in range(2):
        struct.pack_into(order + code * 3, data, row * step, *values)
    raw = image_to_numpy(_image(encoding, 2, 3, step, data, big=int(order == ">")))
    assert raw.shape == (2, 3) and raw.dtype == dtype and raw.dtype.isnative
    np.testing.assert_array_equal(raw, [values, values])


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", COLOUR_PIXELS), ("bgra8", np.arange(16, dtype=np.uint8).reshape(2, 2, 4)),
    ("mono16", np.array([[1, 2], [3, 65535]], dtype=">u2")),
    ("32FC1", np.array([[0.5, 2.0]], dtype=np.float32))])
def test_numpy_to_image_round_trip(encoding, pixels):
    image = numpy_to_image(pixels, encoding, stamp_ns=12, frame_id="cam")
    assert image.is_bigendian == int(pixels.dtype.byteorder == ">")
    assert image.step == pixels.shape[1] * pixels.dtype.itemsize * (pixels.shape[2]
                                                                     if pixels.ndim == 3 else 1)
    np.testing.assert_array_equal(image_to_raw(image), pixels)
    assert stamp_to_ns(image.header.stamp) == 12


def test_to_rgb_replicates_mono8_and_refuses_depth():
    gray = np.array([[1, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(gray, "mono8"), [[[1, 1, 1], [2, 2, 2]]])
    with pytest.raises(MessageFormatError, match="no RGB interpretation"):
        to_rgb(np.zeros((1, 2), np.uint16), "16UC1")
    with pytest.raises(ValueError, match="must be"):
        to_rgb(np.zeros((1, 2, 4), np.uint8), "rgb8")


@pytest.mark.parametrize("image, message", [
    (_image("yuv422", 2, 2, 4, bytes(8)), "unsupported image encoding 'yuv422'"),
    (_image("rgb8", 2, 2, 5, bytes(10)), "step 5 is smaller than width"),
    (_image("mono16", 2, 2, 4, bytes(7)), "data holds 7 bytes, expected step \\* height"),
])
def test_malformed_image_raises_message_format_error(image, message):
    with pytest.raises(MessageFormatError, match=message):
        image_to_numpy(image)


def test_numpy_to_image_rejects_wrong_dtype_or_channels():
    with pytest.raises(ValueError, match="needs dtype uint8"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ValueError, match="needs \\(H, W, 4\\)"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgba8")


# -------------------------------------------------------------------------------------- CameraInfo

def _info(**changes):
    info = CameraInfo(height=900, width=1600)
    info.k = np.array([1266.0, 0.0, 816.0, 0.0, 1266.0, 491.0, 0.0, 0.0, 1.0])
    for name, value in changes.items():
        setattr(info, name, value)
    return info


def test_camera_info_gives_k_and_size():
    intrinsics = camera_info_to_intrinsics(_info())
    assert intrinsics.image_size == (900, 1600)
    np.testing.assert_array_equal(intrinsics.K, [[1266, 0, 816], [0, 1266, 491], [0, 0, 1]])


def test_camera_info_applies_roi_then_binning():
    info = _info(binning_x=2, binning_y=2)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 16, 11, 1200, 800
    intrinsics = camera_info_to_intrinsics(info)
    assert intrinsics.image_size == (400, 600)
    np.testing.assert_allclose(intrinsics.K, [[633, 0, 400], [0, 633, 240], [0, 0, 1]])


def test_uncalibrated_camera_info_is_rejected():
    with pytest.raises(MessageFormatError, match="not a calibrated pinhole"):
        camera_info_to_intrinsics(CameraInfo(height=10, width=10))
    with pytest.raises(MessageFormatError, match="image size must be positive"):
        camera_info_to_intrinsics(_info(height=0))


def test_stamp_round_trip():
    assert stamp_to_ns(ns_to_stamp(1_700_000_000_123_456_789)) == 1_700_000_000_123_456_789
    assert make_header(5, "base").frame_id == "base"
    with pytest.raises(ValueError, match=">= 0"):
        ns_to_stamp(-1)
