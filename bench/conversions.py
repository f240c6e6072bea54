"""Throughput of PointCloud2 <-> numpy conversions against a plain copy and a per-point struct loop.

Layout: a typical spinning-LiDAR cloud (x, y, z float32, 4 pad bytes, intensity float32, ring uint16,
padding to point_step 32). For each size every conversion is timed in the same run as a plain copy of the
same bytes (the memory-bandwidth limit; target: conversions reach at least half of it) and a naive
``struct`` loop (timed on a subset of points and scaled, to keep the bench short). MB/s count the
message payload (width * point_step bytes).

Usage: python bench/conversions.py [--sizes 35000 300000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import struct
import time
from typing import Callable

import numpy as np

from clip2scene_ros.conversions import array_to_cloud, cloud_to_array, cloud_to_xyz, make_cloud

LIDAR_DTYPE = np.dtype({"names": ["x", "y", "z", "intensity", "ring"],
                        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
                        "offsets": [0, 4, 8, 16, 20], "itemsize": 32})
STRUCT_POINT = struct.Struct("<fff4xfH10x")
STRUCT_SUBSET = 5000  # points timed in the struct loops


def best_seconds(function: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs (the least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def lidar_points(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.zeros(count, dtype=LIDAR_DTYPE)
    for name in ("x", "y", "z"):
        points[name] = rng.uniform(-50.0, 50.0, count)
    points["intensity"] = rng.uniform(0.0, 255.0, count)
    points["ring"] = rng.integers(0, 32, count)
    return points


def struct_decode(data, count: int) -> list:
    return [STRUCT_POINT.unpack_from(data, i * 32) for i in range(count)]


def struct_encode(points: list, count: int) -> bytearray:
    out = bytearray(count * 32)
    for i in range(count):
        STRUCT_POINT.pack_into(out, i * 32, *points[i])
    return out


def bench_size(count: int, repeats: int) -> list[tuple[str, float]]:
    """(name, seconds) for every conversion of a ``count``-point cloud."""
    points = lidar_points(count)
    cloud = array_to_cloud(points, frame_id="lidar")
    columns = {name: np.ascontiguousarray(points[name]) for name in LIDAR_DTYPE.names}
    subset = min(count, STRUCT_SUBSET)
    decoded_subset = struct_decode(cloud.data, subset)
    scale = count / subset
    raw = np.frombuffer(cloud.data, dtype=np.uint8)
    return [
        ("plain copy of the payload bytes (limit)", best_seconds(raw.copy, repeats)),
        ("decode: cloud_to_array (zero-copy view)", best_seconds(lambda: cloud_to_array(cloud),
                                                                 repeats)),
        ("decode: cloud_to_array + owned copy", best_seconds(lambda: cloud_to_array(cloud, copy=True),
                                                             repeats)),
        ("decode: cloud_to_xyz (xyz + intensity, NaN check)",
         best_seconds(lambda: cloud_to_xyz(cloud), repeats)),
        ("encode: array_to_cloud (is_dense given)",
         best_seconds(lambda: array_to_cloud(points, is_dense=True), repeats)),
        ("encode: array_to_cloud (is_dense computed)",
         best_seconds(lambda: array_to_cloud(points), repeats)),
        ("encode: make_cloud (named columns)", best_seconds(lambda: make_cloud(columns), repeats)),
        ("decode: per-point struct loop (scaled)",
         best_seconds(lambda: struct_decode(cloud.data, subset), 3) * scale),
        ("encode: per-point struct loop (scaled)",
         best_seconds(lambda: struct_encode(decoded_subset, subset), 3) * scale),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[35_000, 300_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for count in args.sizes:
        megabytes = count * LIDAR_DTYPE.itemsize / 1e6
        results = bench_size(count, args.repeats)
        limit = results[0][1]
        print(f"\n{count} points, point_step {LIDAR_DTYPE.itemsize} B, payload {megabytes:.2f} MB")
        print(f"{'conversion':52s} {'ms':>9s} {'MB/s':>10s} {'x copy':>8s}")
        for name, seconds in results:
            print(f"{name:52s} {seconds * 1e3:9.3f} {megabytes / seconds:10.0f} "
                  f"{limit / seconds:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
