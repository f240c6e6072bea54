"""Conversions between ROS 2 sensor messages and numpy arrays (our own ``sensor_msgs_py``/``cv_bridge``).

Readers duck-type their input, so they accept rclpy messages (``data`` is an ``array.array``) as well as
``rosbags`` messages (``data`` is a numpy uint8 array). They decode without per-point Python loops: a
numpy structured dtype with explicit offsets and ``itemsize = point_step`` is laid over the message
buffer, so reading a cloud is a zero-copy view. Builders return rclpy messages and copy the payload once.

Every malformed message raises :class:`MessageFormatError` with a message naming the problem.
"""
from __future__ import annotations

import array
import functools
import json
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray


class MessageFormatError(ValueError):
    """A ROS message whose layout is inconsistent or unsupported (the text says what is wrong)."""


# PointField datatype constant -> numpy base type (byte order is applied per message).
POINT_FIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}
_DATATYPE_OF: dict[tuple[str, int], int] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in POINT_FIELD_DTYPES.items()
}

# Image encoding -> (numpy base type, channels).
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")

# Field layout of the node's output cloud, in this order (names the rviz PointCloud2 display knows).
SEGMENTED_FIELDS = ("x", "y", "z", "intensity", "label", "score", "rgb", "instance")


# ----------------------------------------------------------------------------------------- stamps

def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    if stamp_ns < 0:
        raise ValueError(f"stamp must be >= 0 ns, got {stamp_ns}")
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """A ``std_msgs/Header`` for ``stamp_ns`` (integer nanoseconds) in ``frame_id``."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=str(frame_id))


# ----------------------------------------------------------------------------------------- buffers

def _message_rows(data: Any, height: int, row_step: int, row_bytes: int, copy: bool,
                  what: str, step_name: str) -> np.ndarray:
    """``(height, row_bytes)`` uint8 view of a message payload laid out in rows of ``row_step`` bytes.

    Checks the payload size (``row_step * height``); ``copy`` compacts the rows into a new buffer with
    one row-wise memcpy (the padding at the end of each row is left out).
    """
    if not isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        data = np.asarray(data, dtype=np.uint8)  # a hand-built message may carry a list of ints
    size = memoryview(data).nbytes
    if size != row_step * height:
        raise MessageFormatError(
            f"{what} data holds {size} bytes, expected {step_name} * height = {row_step} * {height}"
            f" = {row_step * height}")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, row_step)[:, :row_bytes]
    return np.array(rows) if copy else rows


def _set_payload(message: Any, values: np.ndarray) -> Any:
    """Copy an array's bytes (C order) once into ``message.data``; returns the message.

    The message must be built with ``check_fields=True``: its ``data`` setter then keeps our
    ``array.array('B')`` as is, where the constructor and the unchecked setter copy it again.
    """
    payload = array.array("B")
    payload.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8))
    message.data = payload
    return message


def _byte_order(is_bigendian: Any) -> str:
    return ">" if bool(is_bigendian) else "<"


def _is_big_endian(dtype: np.dtype) -> bool:
    return dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")


# ------------------------------------------------------------------------------------- PointCloud2

def fields_to_dtype(fields: Sequence[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """Structured dtype for one point of a cloud: explicit offsets, ``itemsize == point_step``.

    Fields with ``count > 1`` become sub-array fields of shape ``(count,)``. Raises
    :class:`MessageFormatError` for an unknown datatype, an empty or repeated name, ``count == 0``, or
    fields that overlap or extend past ``point_step``.
    """
    layout = tuple((str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in fields)
    return _layout_dtype(layout, int(point_step), bool(is_bigendian))


@functools.lru_cache(maxsize=64)  # a topic keeps one layout, so decoding each message skips this
def _layout_dtype(layout: tuple[tuple[str, int, int, int], ...], point_step: int,
                  is_bigendian: bool) -> np.dtype:
    order = _byte_order(is_bigendian)
    names, formats, offsets, spans = [], [], [], []
    for name, offset, datatype, count in layout:
        if not name:
            raise MessageFormatError("PointCloud2 has a field with an empty name")
        if name in names:
            raise MessageFormatError(f"PointCloud2 field '{name}' appears more than once")
        base = POINT_FIELD_DTYPES.get(datatype)
        if base is None:
            raise MessageFormatError(
                f"PointCloud2 field '{name}' has unknown datatype {datatype} (expected 1..8)")
        if count < 1:
            raise MessageFormatError(f"PointCloud2 field '{name}' has count {count} (must be >= 1)")
        size = base.itemsize * count
        if offset + size > point_step:
            raise MessageFormatError(
                f"PointCloud2 field '{name}' (offset {offset}, {size} bytes) extends past "
                f"point_step {point_step}")
        base = base.newbyteorder(order)
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
        spans.append((offset, offset + size, name))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise MessageFormatError(f"PointCloud2 fields '{first}' and '{second}' overlap")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


@functools.lru_cache(maxsize=64)
def _dtype_layout(dtype: np.dtype) -> tuple[tuple[tuple[str, int, int, int], ...], Optional[bool]]:
    """(name, offset, datatype, count) per field sorted by offset, and whether the multi-byte fields
    are big-endian (None when they mix byte orders)."""
    if dtype.names is None:
        raise ValueError(f"expected a structured dtype with named fields, got {dtype}")
    layout, bigs = [], set()
    for name in dtype.names:
        field_dtype, offset = dtype.fields[name][:2]
        base, shape = field_dtype.base, field_dtype.shape
        code = _DATATYPE_OF.get((base.kind, base.itemsize))
        if code is None or base.names is not None:
            raise ValueError(f"field '{name}' has type {field_dtype}, which PointField cannot describe")
        if len(shape) > 1:
            raise ValueError(f"field '{name}' has shape {shape}; only 1-D sub-arrays are supported")
        layout.append((name, int(offset), code, int(shape[0]) if shape else 1))
        if base.itemsize > 1:
            bigs.add(_is_big_endian(base))
    big = (bigs.pop() if bigs else False) if len(bigs) < 2 else None
    return tuple(sorted(layout, key=lambda field: field[1])), big


def dtype_to_fields(dtype: np.dtype) -> list[PointField]:
    """``PointField`` list (sorted by offset) describing a structured dtype.

    Each field must be a scalar of a PointField datatype or a 1-D sub-array of one (-> ``count``).
    """
    layout, _ = _dtype_layout(dtype)
    return [PointField(name=name, offset=offset, datatype=code, count=count)
            for name, offset, code, count in layout]


def cloud_to_array(cloud: Any, flatten: bool = True, copy: bool = False) -> np.ndarray:
    """Decode a ``sensor_msgs/PointCloud2`` into a numpy structured array, one element per point.

    Returns ``(height * width,)`` if ``flatten`` else ``(height, width)``; field names, types, counts
    and byte order are the cloud's. Zero-copy unless ``copy`` is set: the result is then a view of
    ``cloud.data`` (read-only when the message holds immutable bytes). Flattening a cloud whose rows
    are padded (``row_step > width * point_step``) compacts it with one copy.
    """
    height, width = int(cloud.height), int(cloud.width)
    point_step, row_step = int(cloud.point_step), int(cloud.row_step)
    dtype = fields_to_dtype(cloud.fields, point_step, cloud.is_bigendian)
    if row_step < width * point_step:
        raise MessageFormatError(
            f"PointCloud2 row_step {row_step} is smaller than width * point_step = "
            f"{width} * {point_step}")
    padded = row_step > width * point_step and height > 1
    rows = _message_rows(cloud.data, height, row_step, width * point_step,
                         copy or (flatten and padded), "PointCloud2", "row_step")
    points = rows.view(dtype) if point_step else np.zeros((height, width), dtype=dtype)
    return points.reshape(-1) if flatten else points


def array_to_cloud(points: np.ndarray, stamp_ns: int = 0, frame_id: str = "",
                   is_dense: Optional[bool] = None) -> PointCloud2:
    """Encode a structured array ``(N,)`` (unorganised) or ``(H, W)`` (organised) as a PointCloud2.

    The layout (offsets, padding, ``point_step = itemsize``) is the dtype's. Fields that are all
    big-endian give ``is_bigendian = True``; a mix is converted to native order. ``is_dense`` defaults
    to "x, y, z all finite" (True when the cloud has no x/y/z). Copies the payload once.
    """
    points = np.asarray(points)
    if points.ndim not in (1, 2):
        raise ValueError(f"points must be (N,) or (H, W), got shape {points.shape}")
    _, big = _dtype_layout(points.dtype)
    if big is None:
        points = points.astype(points.dtype.newbyteorder("="))
        big = sys.byteorder == "big"
    fields = dtype_to_fields(points.dtype)
    if is_dense is None:
        has_xyz = all(name in points.dtype.names for name in "xyz")
        is_dense = not has_xyz or bool(np.isfinite(_xyz_float32(points.reshape(-1))).all())
    height, width = (1, points.shape[0]) if points.ndim == 1 else points.shape
    point_step = points.dtype.itemsize
    cloud = PointCloud2(
        check_fields=True, header=make_header(stamp_ns, frame_id),
        height=int(height), width=int(width), fields=fields, is_bigendian=big,
        point_step=int(point_step), row_step=int(point_step * width), is_dense=bool(is_dense))
    return _set_payload(cloud, points)


def make_cloud_array(columns: Mapping[str, Any]) -> np.ndarray:
    """Structured ``(N,)`` array from named per-point columns, C-struct aligned (``align=True``).

    Each column is ``(N,)`` (-> ``count`` 1) or ``(N, k)`` (-> ``count`` k) of any PointField type; its
    dtype is kept, so cast first (e.g. ``label`` to uint16, ``score`` to float32).
    """
    if not columns:
        raise ValueError("columns is empty: a cloud needs at least one field")
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    lengths = {name: a.shape[0] if a.ndim else None for name, a in arrays.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1:
        raise ValueError(f"columns must all be arrays of one length N, got lengths {lengths}")
    spec = []
    for name, values in arrays.items():
        if values.ndim > 2:
            raise ValueError(f"column '{name}' must be (N,) or (N, k), got {values.shape}")
        spec.append((name, values.dtype.newbyteorder("=")) if values.ndim == 1
                    else (name, values.dtype.newbyteorder("="), (values.shape[1],)))
    points = np.zeros(next(iter(lengths.values())), dtype=np.dtype(spec, align=True))
    for name, values in arrays.items():
        points[name] = values
    return points


def make_cloud(columns: Mapping[str, Any], stamp_ns: int = 0, frame_id: str = "") -> PointCloud2:
    """PointCloud2 from named per-point columns (see :func:`make_cloud_array` for the layout).

    ``is_dense`` is "x, y, z all finite", checked on the columns (cheaper than on the packed points).
    """
    points = make_cloud_array(columns)
    is_dense = not all(name in columns for name in "xyz") or all(
        np.isfinite(np.asarray(columns[name])).all() for name in "xyz")
    return array_to_cloud(points, stamp_ns=stamp_ns, frame_id=frame_id, is_dense=is_dense)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """Pack colours for rviz: ``colors (N, 3) uint8 RGB`` -> ``(N,) float32`` holding 0x00RRGGBB bits."""
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3 or colors.dtype != np.uint8:
        raise ValueError(f"colors must be (N, 3) uint8, got {colors.shape} {colors.dtype}")
    c = colors.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: ``(N,) float32`` (or uint32) packed rgb -> ``(N, 3) uint8``."""
    bits = np.ascontiguousarray(rgb).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=1).astype(np.uint8)


def segmented_cloud(points: np.ndarray, labels: np.ndarray, scores: np.ndarray, colors: np.ndarray,
                    intensity: Optional[np.ndarray] = None, stamp_ns: int = 0,
                    frame_id: str = "", shape: Optional[tuple[int, int]] = None,
                    instances: Optional[np.ndarray] = None) -> PointCloud2:
    """The node's output cloud with fields :data:`SEGMENTED_FIELDS`.

    points: (N, 3) float32, metres (NaN rows stay NaN); labels: (N,) class index (0xFFFF = unknown)
    stored as uint32, the type of PCL's ``PointXYZL`` label; scores: (N,) float32; colors: (N, 3)
    uint8 RGB packed into a float32 ``rgb`` for rviz; intensity: (N,) float32 (zeros when None);
    shape: (height, width) with height * width = N for an organised cloud; None = (1, N);
    instances: (N,) object ids stored as uint32 ``instance``, 0 = no object (zeros when None).
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 0xFFFFFFFF):
        raise ValueError("labels must lie in 0..2**32-1 to be stored as uint32")
    n = points.shape[0]
    if shape is not None and (len(shape) != 2 or shape[0] * shape[1] != n):
        raise ValueError(f"shape {shape} does not hold {n} points")
    columns = {
        "x": points[:, 0], "y": points[:, 1], "z": points[:, 2],
        "intensity": np.zeros(n, np.float32) if intensity is None
        else np.asarray(intensity, dtype=np.float32),
        "label": labels.astype(np.uint32), "score": np.asarray(scores, dtype=np.float32),
        "rgb": pack_rgb(colors),
        "instance": np.zeros(n, np.uint32) if instances is None else _as_uint32("instances", instances, n),
    }
    cloud = make_cloud_array(columns)
    return array_to_cloud(cloud.reshape(shape) if shape is not None else cloud, stamp_ns=stamp_ns,
                          frame_id=frame_id, is_dense=bool(np.isfinite(points).all()))


def _as_uint32(name: str, values: Any, count: int) -> np.ndarray:
    """(count,) integers in 0..2**32-1 as uint32, or ValueError naming ``name``."""
    values = np.asarray(values)
    if values.shape != (count,) or (values.size and values.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be ({count},) integers, got {values.shape} {values.dtype}")
    if values.size and (values.min() < 0 or values.max() > 0xFFFFFFFF):
        raise ValueError(f"{name} must lie in 0..2**32-1 to be stored as uint32")
    return values.astype(np.uint32)


def yaw_quaternion(yaw: np.ndarray) -> np.ndarray:
    """(K,) radians about z -> (K, 4) quaternions x, y, z, w."""
    half = np.asarray(yaw, np.float64) / 2
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=1)


def object_markers(objects: Any, class_names: Sequence[str], colors: np.ndarray, stamp: Any,
                   frame_id: str) -> MarkerArray:
    """The node's ``objects`` message: a ``visualization_msgs/MarkerArray`` with one CUBE per object.

    The array opens with a DELETEALL marker (RViz then drops the previous cloud's boxes), then per
    object k: ``ns`` = its class name, ``id`` = its instance id (the ``instance`` field of the
    labelled cloud), ``pose`` = box centre and yaw (quaternion about z), ``scale`` = box length
    (along the yaw), width and height in metres, ``color`` = the class colour (alpha 0.5), and ``text``
    = JSON ``{"class", "score", "points", "centroid"}`` (mean cosine score, point count, mean of its
    points in metres). Every marker has the cloud's ``stamp`` and ``frame_id``.

    Args:
        objects: `clip2scene_core.objects.Objects` (K objects).
        class_names: the class list the objects' ``class_index`` indexes.
        colors: (K, 3) uint8 RGB per object.
    """
    header = Header(stamp=stamp, frame_id=str(frame_id))
    count = len(objects)
    colors = np.asarray(colors)
    if colors.shape != (count, 3):
        raise ValueError(f"colors must be ({count}, 3), got {colors.shape}")
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    quaternions = yaw_quaternion(objects.yaw)
    for k in range(count):
        center, size, centroid = (getattr(objects, name)[k].tolist() for name in ("center", "size", "centroid"))
        x, y, z, w = quaternions[k].tolist()
        red, green, blue = (colors[k] / 255.0).tolist()
        name = class_names[int(objects.class_index[k])]
        text = json.dumps({"class": name, "score": round(float(objects.score[k]), 4),
                           "points": int(objects.point_count[k]), "centroid": [round(v, 3) for v in centroid]})
        markers.append(Marker(
            header=header, ns=name, id=int(objects.instance_id[k]), type=Marker.CUBE, action=Marker.ADD,
            pose=Pose(position=Point(x=center[0], y=center[1], z=center[2]),
                      orientation=Quaternion(x=x, y=y, z=z, w=w)),
            scale=Vector3(x=size[0], y=size[1], z=size[2]),
            color=ColorRGBA(r=red, g=green, b=blue, a=0.5), text=text))
    return MarkerArray(markers=markers)


@dataclass(frozen=True)
class CloudPoints:
    """Geometry pulled out of a PointCloud2 by :func:`cloud_to_xyz`.

    points: (N, 3) float32, metres, in the cloud's frame; intensity: (N,) float32 or None when the cloud
    has no such field; valid: (height * width,) bool, which cloud points were kept; num_dropped: how
    many were dropped for a NaN/Inf coordinate.
    """

    points: np.ndarray
    intensity: Optional[np.ndarray]
    valid: np.ndarray
    num_dropped: int


def _scalar_field(points: np.ndarray, name: str) -> np.ndarray:
    if points.dtype.names is None or name not in points.dtype.names:
        raise MessageFormatError(
            f"PointCloud2 has no '{name}' field (fields: {list(points.dtype.names or ())})")
    if points.dtype.fields[name][0].shape:
        raise MessageFormatError(f"PointCloud2 field '{name}' must have count 1")
    return points[name]


def _xyz_float32(points: np.ndarray) -> np.ndarray:
    """(N, 3) float32 copy of the x, y, z fields of a 1-D structured array."""
    columns = [_scalar_field(points, name) for name in "xyz"]
    (base, x_at), (_, y_at), (_, z_at) = (points.dtype.fields[n][:2] for n in "xyz")
    size = base.itemsize
    if all(c.dtype == base for c in columns) and (y_at, z_at) == (x_at + size, x_at + 2 * size):
        # x, y, z adjacent and of one type (the usual layout): copy them as one 3-value block per
        # point, which runs at memcpy speed where three strided column copies do not.
        block = np.dtype({"names": ["xyz"], "formats": [f"V{3 * size}"], "offsets": [x_at],
                          "itemsize": points.dtype.itemsize})
        packed = np.ascontiguousarray(points.view(block)["xyz"]).view(base).reshape(-1, 3)
        return packed.astype(np.float32, copy=False)
    xyz = np.empty((points.shape[0], 3), dtype=np.float32)
    for axis, column in enumerate(columns):
        xyz[:, axis] = column
    return xyz


def cloud_to_xyz(cloud: Any, intensity_field: Optional[str] = "intensity",
                 drop_invalid: bool = True) -> CloudPoints:
    """(N, 3) float32 xyz and optional (N,) float32 intensity from any PointCloud2 layout.

    x, y, z may be any numeric PointField type; a missing one raises :class:`MessageFormatError`.
    With ``drop_invalid`` points with a NaN/Inf coordinate are removed (``num_dropped`` counts them;
    ``is_dense`` is not trusted). ``intensity_field=None`` skips intensity.
    """
    points = cloud_to_array(cloud)
    xyz = _xyz_float32(points)
    intensity = None
    if intensity_field is not None and intensity_field in (points.dtype.names or ()):
        intensity = _scalar_field(points, intensity_field).astype(np.float32)
    finite = np.isfinite(xyz)
    if not drop_invalid or finite.all():  # the common dense case skips the slower per-row reduction
        valid = np.ones(len(xyz), dtype=bool)
    else:
        valid = finite[:, 0] & finite[:, 1] & finite[:, 2]
    num_dropped = int(len(valid) - np.count_nonzero(valid))
    if num_dropped:
        xyz = xyz[valid]
        intensity = None if intensity is None else intensity[valid]
    return CloudPoints(points=xyz, intensity=intensity, valid=valid, num_dropped=num_dropped)


# ------------------------------------------------------------------------------------------- Image

def _encoding(name: str) -> tuple[np.dtype, int]:
    spec = IMAGE_ENCODINGS.get(name)
    if spec is None:
        raise MessageFormatError(
            f"unsupported image encoding '{name}' (supported: {', '.join(IMAGE_ENCODINGS)})")
    return spec


def image_to_raw(image: Any) -> np.ndarray:
    """Decode ``sensor_msgs/Image`` pixels as stored: ``(H, W, C)`` for multi-channel encodings, else
    ``(H, W)``, in native byte order. Honours row ``step`` padding and ``is_bigendian``; a view of
    ``image.data`` when no byte swap is needed.
    """
    base, channels = _encoding(str(image.encoding))
    height, width, step = int(image.height), int(image.width), int(image.step)
    row_bytes = width * channels * base.itemsize
    if step < row_bytes:
        raise MessageFormatError(
            f"Image step {step} is smaller than width * bytes per pixel = {width} * "
            f"{channels * base.itemsize} for '{image.encoding}'")
    rows = _message_rows(image.data, height, step, row_bytes, False, "Image", "step")
    pixels = rows.view(base.newbyteorder(_byte_order(image.is_bigendian)))
    pixels = pixels.reshape(height, width, channels)
    if not pixels.dtype.isnative:
        pixels = pixels.astype(base)
    return pixels if channels > 1 else pixels[:, :, 0]


def to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB (C-contiguous) from raw pixels of a colour encoding or ``mono8``.

    pixels: ``(H, W, C)`` uint8 with C the encoding's channels (``(H, W)`` for mono8), e.g. from
    :func:`image_to_raw`.
    """
    base, channels = _encoding(encoding)
    expected = (channels,) if channels > 1 else ()
    if pixels.ndim != 2 + len(expected) or pixels.shape[2:] != expected or pixels.dtype != base:
        raise ValueError(f"'{encoding}' pixels must be (H, W{', ' + str(channels) if expected else ''})"
                         f" {base}, got {pixels.shape} {pixels.dtype}")
    if encoding == "rgb8":
        rgb = pixels
    elif encoding == "rgba8":
        rgb = pixels[:, :, :3]
    elif encoding in ("bgr8", "bgra8"):
        rgb = pixels[:, :, 2::-1]
    elif encoding == "mono8":
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    else:
        raise MessageFormatError(f"image encoding '{encoding}' has no RGB interpretation")
    return np.ascontiguousarray(rgb)


def image_to_numpy(image: Any) -> np.ndarray:
    """``sensor_msgs/Image`` -> numpy: ``(H, W, 3)`` uint8 RGB for colour encodings (rgb8, bgr8, rgba8,
    bgra8), the raw ``(H, W)`` array otherwise (mono8/mono16/16UC1 integers, 32FC1 float32)."""
    pixels = image_to_raw(image)
    encoding = str(image.encoding)
    return to_rgb(pixels, encoding) if encoding in COLOUR_ENCODINGS else pixels


def numpy_to_image(pixels: np.ndarray, encoding: str, stamp_ns: int = 0,
                   frame_id: str = "") -> Image:
    """numpy -> ``sensor_msgs/Image`` (tightly packed rows; ``is_bigendian`` from the array's dtype).

    pixels: ``(H, W, C)`` with C the encoding's channels, or ``(H, W)`` for one channel; its dtype must
    be the encoding's (uint8, uint16 or float32).
    """
    base, channels = _encoding(encoding)
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] != channels:
        raise ValueError(f"encoding '{encoding}' needs (H, W, {channels}) pixels, got {pixels.shape}")
    if pixels.dtype.newbyteorder("=") != base:
        raise ValueError(f"encoding '{encoding}' needs dtype {base}, got {pixels.dtype}")
    height, width = pixels.shape[:2]
    big = _is_big_endian(pixels.dtype)
    image = Image(
        check_fields=True, header=make_header(stamp_ns, frame_id), height=int(height),
        width=int(width), encoding=encoding, is_bigendian=int(big and base.itemsize > 1),
        step=int(width * channels * base.itemsize))
    return _set_payload(image, pixels)


# -------------------------------------------------------------------------------------- CameraInfo

@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the images a camera publishes.

    K: (3, 3) float64, pixels; image_size: (H, W) pixels.
    """

    K: np.ndarray
    image_size: tuple[int, int]


def camera_info_to_intrinsics(info: Any) -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` -> K and image size of the published (binned / ROI-cropped) image.

    Follows REP 104: the ROI is given in full-resolution pixels and binning is applied after it, so
    ``cx -= roi.x_offset``, ``cy -= roi.y_offset``, then row 0 / row 1 of K divide by
    ``binning_x`` / ``binning_y``. Raises :class:`MessageFormatError` for an uncalibrated (zero) or
    non-finite K, or a zero image size.
    """
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] == 0:
        raise MessageFormatError(f"CameraInfo K is not a calibrated pinhole matrix: {K.tolist()}")
    K /= K[2, 2]
    height, width = int(info.height), int(info.width)
    roi = getattr(info, "roi", None)
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
        K[0, 2] -= int(roi.x_offset)
        K[1, 2] -= int(roi.y_offset)
        height, width = int(roi.height), int(roi.width)
    binning_x = max(int(getattr(info, "binning_x", 0)), 1)
    binning_y = max(int(getattr(info, "binning_y", 0)), 1)
    K[0] /= binning_x
    K[1] /= binning_y
    height, width = height // binning_y, width // binning_x
    if height <= 0 or width <= 0:
        raise MessageFormatError(f"CameraInfo image size must be positive, got {height}x{width}")
    return CameraIntrinsics(K=K, image_size=(height, width))
