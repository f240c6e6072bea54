"""Ray casting of synthetic scenes: a spinning LiDAR and textured, shaded pinhole cameras.

Both sensors cast rays against the same analytic primitives (``scene.Primitives``) plus
the ground plane, so every point and every pixel carries the label of the surface it hit (and every
point the instance id of its object, every pixel its object id). Rays are
organised on a 2-D grid (beams x azimuth steps for the LiDAR, rows x columns for a camera); each
primitive is tested only against the grid cells its bounds can reach (a pixel rectangle from its
projected box corners, or a beam x azimuth window from its box), and all candidate (ray, primitive)
pairs of one kind are intersected at once with numpy - no per-ray Python loop.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .scene import (
    BARK_TEXTURE, BOX, CONE, CONE_TEXTURE, CYLINDER, ELLIPSOID, FACADE_TEXTURE, FOLIAGE_TEXTURE,
    GLASS_TEXTURE, GROUND_OBJECT_ID, LABEL, PLAIN_TEXTURE, ROAD_TEXTURE, SIDEWALK_TEXTURE,
    TERRAIN_TEXTURE, Primitives, Scene, rotation_z,
)

PLANE = 4  # kind of the ground plane appended by ``with_ground``
_EPS = 1e-6  # minimum ray distance, metres
_ASPHALT = (0.30, 0.30, 0.31)

# Columns: the camera axes (x right, y down, z forward) in a vehicle frame (x forward, y left, z up).
_CAMERA_AXES_IN_VEHICLE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class LidarConfig:
    """A spinning multi-beam LiDAR (nuScenes HDL-32E-like defaults: 32 x 1084 rays per scan).

    ``mount_xyz`` metres and ``mount_yaw_deg`` place it on the ego; the default yaw of -90 deg gives
    the nuScenes convention (LiDAR x right, y forward, z up). Intensity is 0..255 like nuScenes.
    """

    beams: int = 32
    elevation_deg: tuple[float, float] = (-30.0, 10.0)
    azimuth_steps: int = 1084
    min_range_m: float = 1.0
    max_range_m: float = 70.0
    range_noise_m: float = 0.02  # standard deviation along the ray
    dropout: float = 0.03  # probability that a return is lost
    intensity_noise: float = 0.025  # standard deviation, intensity units (0..1, as Frame requires)
    mount_xyz: tuple[float, float, float] = (0.94, 0.0, 1.84)
    mount_yaw_deg: float = -90.0


@dataclass(frozen=True)
class CameraRig:
    """One pinhole camera on the ego: name, yaw (deg, 0 = forward, + = left), position (m, ego
    frame), horizontal field of view (deg) and capture time relative to the LiDAR scan (s)."""

    name: str
    yaw_deg: float
    xyz: tuple[float, float, float]
    hfov_deg: float = 70.0
    time_offset_s: float = 0.0


@dataclass(frozen=True)
class CameraConfig:
    """Cameras and the look of their images. ``image_size`` is (H, W); 224 x 416 is MaskCLIP's
    14 x 26 patch grid at 16 px per patch."""

    image_size: tuple[int, int] = (224, 416)
    rigs: tuple[CameraRig, ...] = (
        CameraRig("CAM_FRONT", 0.0, (1.70, 0.0, 1.50), 70.0, 0.0),
        CameraRig("CAM_BACK_LEFT", 110.0, (1.05, 0.55, 1.50), 70.0, 0.015),
        CameraRig("CAM_BACK_RIGHT", -110.0, (1.05, -0.55, 1.50), 70.0, -0.015),
    )
    max_depth_m: float = 100.0  # farther surfaces are not rendered (label 0, fog colour)
    ambient: float = 0.45  # share of light that does not depend on the sun
    fog_distance_m: float = 220.0
    pixel_noise: float = 2.0  # standard deviation, 8-bit units


@dataclass
class RayHits:
    """Nearest surface per ray. ``distance`` (R,) metres (inf = none), ``primitive`` (R,) int64 index
    into the primitives returned by ``with_ground`` (-1 = none), ``points`` (R, 3) and ``normals``
    (R, 3) in the street frame (points: the ray origin, normals: zero where nothing was hit; normals
    face the ray)."""

    distance: np.ndarray
    primitive: np.ndarray
    points: np.ndarray
    normals: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.primitive >= 0


@dataclass
class CameraRender:
    """One rendered view: ``image`` (H, W, 3) uint8, ``labels`` (H, W) int64 (0 = sky / too far),
    ``object_ids`` (H, W) int64 (-1 = none), ``depth`` (H, W) float32 metres along the optical
    axis (inf = none), ``points`` (H, W, 3) float64 street-frame surface points (the camera
    centre where nothing was hit)."""

    image: np.ndarray
    labels: np.ndarray
    object_ids: np.ndarray
    depth: np.ndarray
    points: np.ndarray = field(repr=False)


# --- mounting and intrinsics --------------------------------------------------------------------
def lidar_to_ego(config: LidarConfig) -> np.ndarray:
    """(4, 4) LiDAR mount on the ego."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_z(math.radians(config.mount_yaw_deg))
    pose[:3, 3] = config.mount_xyz
    return pose


def camera_to_ego(rig: CameraRig) -> np.ndarray:
    """(4, 4) camera mount on the ego (OpenCV camera axes: x right, y down, z forward)."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_z(math.radians(rig.yaw_deg)) @ _CAMERA_AXES_IN_VEHICLE
    pose[:3, 3] = rig.xyz
    return pose


def camera_intrinsics(rig: CameraRig, image_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) pinhole K for ``rig`` at ``image_size`` (H, W); square pixels, centred principal point."""
    height, width = image_size
    focal = (width / 2) / math.tan(math.radians(rig.hfov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


# --- ray / primitive intersection ---------------------------------------------------------------
def with_ground(primitives: Primitives) -> Primitives:
    """``primitives`` sorted by kind (stable), plus the ground plane z = 0 (road) last, kind PLANE."""
    primitives = primitives.select(np.argsort(primitives.kind, kind="stable"))
    ground = Primitives(
        kind=np.array([PLANE]), center=np.zeros((1, 3)), size=np.zeros((1, 3)), yaw=np.zeros(1),
        velocity=np.zeros((1, 3)), label=np.array([LABEL["road"]]),
        object_id=np.array([GROUND_OBJECT_ID]), color=np.array([_ASPHALT]),
        texture=np.array([ROAD_TEXTURE]), reflectivity=np.array([0.35]),
    )
    return Primitives(**{name: np.concatenate([getattr(primitives, name), getattr(ground, name)])
                         for name in Primitives.__dataclass_fields__})


def _to_local(vectors: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Rotate (M, 3) street-frame vectors by -yaw about z (into each primitive's frame)."""
    cos, sin = np.cos(yaw), np.sin(yaw)
    return np.stack([cos * vectors[:, 0] + sin * vectors[:, 1],
                     -sin * vectors[:, 0] + cos * vectors[:, 1], vectors[:, 2]], axis=1)


def _first_valid(t_a: np.ndarray, valid_a: np.ndarray, t_b: np.ndarray, valid_b: np.ndarray):
    """Nearest of two candidate distances, inf where neither is valid."""
    return np.minimum(np.where(valid_a, t_a, np.inf), np.where(valid_b, t_b, np.inf))


def _quadratic_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Both real roots (low, high) of a t^2 + b t + c = 0 and whether they exist."""
    disc = b * b - 4.0 * a * c
    real = (disc >= 0.0) & (np.abs(a) > 1e-12)
    root = np.sqrt(np.where(real, disc, 0.0))
    safe_a = np.where(real, a, 1.0)
    t_1, t_2 = (-b - root) / (2.0 * safe_a), (-b + root) / (2.0 * safe_a)
    return np.minimum(t_1, t_2), np.maximum(t_1, t_2), real


# Intersectors take the ray origin ``o`` and unit direction ``d`` in each primitive's local frame
# (centred, un-yawed) as (3, M) arrays, and ``size`` (3, M); they return the entry distance t (M,),
# inf for a miss.
def _intersect_boxes(o: np.ndarray, d: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Slab test against boxes of half extents ``size``."""
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t_1, t_2 = (-size - o) / d, (size - o) / d
    enter, leave = np.minimum(t_1, t_2), np.maximum(t_1, t_2)
    near = np.maximum(np.maximum(enter[0], enter[1]), enter[2])
    far = np.minimum(np.minimum(leave[0], leave[1]), leave[2])
    return np.where((far >= near) & (near > _EPS), near, np.inf)


def _intersect_cylinders(o: np.ndarray, d: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Vertical capped cylinders (``size`` = radius, radius, half height)."""
    radius, half = size[0], size[2]
    low, high, real = _quadratic_roots(d[0] * d[0] + d[1] * d[1], 2.0 * (o[0] * d[0] + o[1] * d[1]),
                                       o[0] * o[0] + o[1] * o[1] - radius * radius)
    side = _first_valid(low, real & (low > _EPS) & (np.abs(o[2] + low * d[2]) <= half),
                        high, real & (high > _EPS) & (np.abs(o[2] + high * d[2]) <= half))
    cap_z = np.where(o[2] > 0.0, half, -half)  # only the cap facing the origin can be entered first
    t_cap = (cap_z - o[2]) / np.where(np.abs(d[2]) < 1e-12, 1e-12, d[2])
    radial = (o[0] + t_cap * d[0]) ** 2 + (o[1] + t_cap * d[1]) ** 2
    cap = np.where((t_cap > _EPS) & (radial <= radius * radius) & (np.abs(o[2]) > half), t_cap, np.inf)
    return np.minimum(side, cap)


def _intersect_ellipsoids(o: np.ndarray, d: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Ellipsoids of radii ``size``, solved in the unit-sphere frame."""
    o, d = o / size, d / size
    low, _, real = _quadratic_roots((d * d).sum(0), 2.0 * (o * d).sum(0), (o * o).sum(0) - 1.0)
    return np.where(real & (low > _EPS), low, np.inf)


def _intersect_cones(o: np.ndarray, d: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Vertical cones standing on their base (local origin = base centre; ``size`` = radius, radius,
    height). The base disc is not a surface: cones always stand on something."""
    slope2 = (size[0] / size[2]) ** 2
    below_apex = size[2] - o[2]  # the cone's radius at height z is slope * (height - z)
    low, high, real = _quadratic_roots(d[0] * d[0] + d[1] * d[1] - slope2 * d[2] * d[2],
                                       2.0 * (o[0] * d[0] + o[1] * d[1] + slope2 * below_apex * d[2]),
                                       o[0] * o[0] + o[1] * o[1] - slope2 * below_apex * below_apex)

    def on_surface(t: np.ndarray) -> np.ndarray:
        z = o[2] + t * d[2]
        return real & (t > _EPS) & (z >= 0.0) & (z <= size[2])

    return _first_valid(low, on_surface(low), high, on_surface(high))


_INTERSECTORS = ((BOX, _intersect_boxes), (CYLINDER, _intersect_cylinders),
                 (ELLIPSOID, _intersect_ellipsoids), (CONE, _intersect_cones))


def _local_normals(kind: int, local: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Unnormalised outward normals (M, 3) of primitives of one ``kind`` at ``local`` points (M, 3)
    in their own frame; ``size`` (M, 3)."""
    if kind == BOX:
        axis = np.argmax(np.abs(local) / size, axis=1)
        rows = np.arange(len(axis))
        normals = np.zeros_like(local)
        normals[rows, axis] = np.sign(local[rows, axis])
        return normals
    if kind == CYLINDER:
        on_cap = np.abs(local[:, 2]) >= size[:, 2] - 1e-6
        return np.where(on_cap[:, None], np.array([0.0, 0.0, 1.0]) * np.sign(local[:, 2:]),
                        local * (1.0, 1.0, 0.0))
    if kind == ELLIPSOID:
        return local / size ** 2
    slope2 = (size[:, 0] / size[:, 2]) ** 2  # CONE
    return np.stack([local[:, 0], local[:, 1], slope2 * (size[:, 2] - local[:, 2])], 1)


def _surface_normals(primitives: Primitives, index: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit normals (M, 3) at street-frame ``points`` on primitives ``index``."""
    normals = np.zeros_like(points)
    normals[:, 2] = 1.0  # the ground plane, most hits: nothing to compute
    kinds = primitives.kind[index]
    for kind, _ in _INTERSECTORS:
        mine = np.flatnonzero(kinds == kind)
        if len(mine):
            which = index[mine]
            yaw = primitives.yaw[which]
            local = _to_local(points[mine] - primitives.center[which], yaw)
            normal = _to_local(_local_normals(kind, local, primitives.size[which]), -yaw)
            normals[mine] = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return normals


def cast_rays(primitives: Primitives, origin: np.ndarray, dirs: np.ndarray, pair_primitive: np.ndarray,
              pair_ray: np.ndarray, max_distance: float) -> RayHits:
    """Nearest hit per ray among candidate pairs and the ground plane.

    ``primitives``: from ``with_ground`` (sorted by kind, ground last). ``origin`` (3,) street frame;
    ``dirs`` (R, 3) unit street-frame directions; ``pair_primitive`` (M,) int64 ascending and
    ``pair_ray`` (M,) int64: candidate pairs (the ground is tested against every ray and needs no
    pairs). Hits beyond ``max_distance`` metres are dropped.
    """
    ground = len(primitives) - 1
    cos, sin = np.cos(primitives.yaw), np.sin(primitives.yaw)
    local_origin = _to_local((origin - primitives.center), primitives.yaw).T  # (3, P), per primitive
    d = dirs.T[:, pair_ray]
    c, s = cos[pair_primitive], sin[pair_primitive]
    d = np.stack([c * d[0] + s * d[1], c * d[1] - s * d[0], d[2]])
    o, size = local_origin[:, pair_primitive], primitives.size.T[:, pair_primitive]
    t = np.full(len(pair_ray), np.inf)
    # Pairs come grouped by primitive and primitives by kind, so each kind is one slice.
    bounds = np.searchsorted(primitives.kind[pair_primitive], [kind for kind, _ in _INTERSECTORS] + [PLANE])
    for (kind, intersect), start, stop in zip(_INTERSECTORS, bounds[:-1], bounds[1:]):
        if stop > start:
            t[start:stop] = intersect(o[:, start:stop], d[:, start:stop], size[:, start:stop])
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 2] < -1e-9, -origin[2] / np.minimum(dirs[:, 2], -1e-9), np.inf)
    best = np.where(t_ground <= max_distance, t_ground, np.inf)
    np.minimum.at(best, pair_ray, t)
    best[best > max_distance] = np.inf
    primitive = np.where(np.isfinite(best) & (t_ground == best), ground, -1)
    winning = np.isfinite(t) & (t == best[pair_ray])
    # Exact ties between primitives go to the higher index, so the result never depends on order.
    nearest = np.full(len(dirs), -1)
    np.maximum.at(nearest, pair_ray[winning], pair_primitive[winning])
    primitive = np.where(nearest >= 0, nearest, primitive)
    hit = primitive >= 0
    points = origin + np.where(hit, best, 0.0)[:, None] * dirs
    normals = np.zeros_like(dirs)
    normals[hit] = _surface_normals(primitives, primitive[hit], points[hit])
    normals *= np.where((normals * dirs).sum(1) > 0.0, -1.0, 1.0)[:, None]  # face the ray
    return RayHits(distance=best, primitive=primitive, points=points, normals=normals)


# --- candidate pairs ----------------------------------------------------------------------------
def _rectangle_pairs(row_start: np.ndarray, row_stop: np.ndarray, col_start: np.ndarray,
                     col_count: np.ndarray, width: int):
    """(primitive, ray) pairs covering, per primitive p, rows [row_start, row_stop) x columns
    col_start .. col_start + col_count - 1 (mod ``width``) of a row-major ray grid."""
    rows = np.maximum(row_stop - row_start, 0)
    counts = rows * np.maximum(col_count, 0)
    primitive = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = col_count[primitive]
    row = row_start[primitive] + offset // cols
    col = (col_start[primitive] + offset % cols) % width
    return primitive, row * width + col


def _box_corners(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """(P, 8, 3) corners of axis-aligned boxes."""
    pick = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=bool)
    return np.where(pick[None], upper[:, None], lower[:, None])


def _distance_to_boxes(point: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """(P,) distance from ``point`` (3,) to axis-aligned boxes (0 inside)."""
    return np.linalg.norm(np.maximum(np.maximum(lower - point, point - upper), 0.0), axis=1)


_BOX_EDGES = np.array([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit])


def camera_candidates(primitives: Primitives, street_to_camera: np.ndarray, K: np.ndarray,
                      image_size: tuple[int, int], max_depth: float):
    """(primitive, pixel ray) pairs: each primitive against the pixels its projected box covers.

    The box is clipped to the part in front of the camera (its corners there plus its edges'
    crossings of the near plane) before projecting. Pixel centres sit at +0.5; rays are row-major
    (ray = row * W + column).
    """
    height, width = image_size
    near = 0.05
    lower, upper = primitives.bounding_boxes()
    origin = -street_to_camera[:3, :3].T @ street_to_camera[:3, 3]
    corners = _box_corners(lower, upper) @ street_to_camera[:3, :3].T + street_to_camera[:3, 3]
    start, stop = corners[:, _BOX_EDGES[:, 0]], corners[:, _BOX_EDGES[:, 1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = (near - start[..., 2]) / (stop[..., 2] - start[..., 2])
        crossing = start + fraction[..., None] * (stop - start)
    crosses = (fraction > 0.0) & (fraction < 1.0)
    outline = np.concatenate([corners, crossing], axis=1)
    in_front = np.concatenate([corners[..., 2] >= near, crosses], axis=1)
    depth = np.where(in_front, np.maximum(outline[..., 2], near), 1.0)
    u = np.where(in_front, K[0, 0] * outline[..., 0] / depth + K[0, 2], np.nan)
    v = np.where(in_front, K[1, 1] * outline[..., 1] / depth + K[1, 2], np.nan)
    keep = in_front.any(1) & (_distance_to_boxes(origin, lower, upper) < max_depth) \
        & (primitives.kind != PLANE)
    u, v = np.where(keep[:, None], u, 0.0), np.where(keep[:, None], v, 0.0)
    col_start = np.ceil(np.nanmin(u, 1) - 0.5).clip(0, width).astype(np.int64)
    col_stop = np.floor(np.nanmax(u, 1) - 0.5).clip(-1, width - 1).astype(np.int64)
    row_start = np.ceil(np.nanmin(v, 1) - 0.5).clip(0, height).astype(np.int64)
    row_stop = np.floor(np.nanmax(v, 1) - 0.5).clip(-1, height - 1).astype(np.int64)
    col_count = np.where(keep, col_stop - col_start + 1, 0)
    return _rectangle_pairs(row_start, row_stop + 1, col_start, col_count, width)


def lidar_candidates(primitives: Primitives, street_to_lidar: np.ndarray, elevations: np.ndarray,
                     azimuth_offset: float, azimuth_steps: int, max_range: float):
    """(primitive, ray) pairs: each primitive against the beams x azimuth steps its bounds reach.

    Bounds: the primitive's box re-boxed in the LiDAR frame; its azimuth span from the footprint
    corners (exact for a rectangle not containing the sensor), its elevation span from the extreme
    heights over the nearest / farthest horizontal distance. Rays are beam-major
    (ray = beam * azimuth_steps + step); beam ``elevations`` (radians) ascend.
    """
    lower, upper = primitives.bounding_boxes()
    corners = _box_corners(lower, upper) @ street_to_lidar[:3, :3].T + street_to_lidar[:3, 3]
    low, high = corners.min(1), corners.max(1)
    footprint = _box_corners(low, high)[:, :4, :2]  # the 4 corners with z = low
    rho_near = np.linalg.norm(np.maximum(np.maximum(low[:, :2], -high[:, :2]), 0.0), axis=1)
    rho_far = np.linalg.norm(footprint, axis=2).max(1)
    keep = (_distance_to_boxes(np.zeros(3), low, high) < max_range) & (primitives.kind != PLANE)
    lowest = np.arctan2(low[:, 2], np.where(low[:, 2] >= 0.0, rho_far, rho_near))
    highest = np.arctan2(high[:, 2], np.where(high[:, 2] >= 0.0, rho_near, rho_far))
    row_start = np.searchsorted(elevations, lowest, "left")
    row_stop = np.searchsorted(elevations, highest, "right")
    # Footprint corner azimuths relative to the footprint centre's (the span is < pi when the
    # sensor is outside the footprint, so wrapping to (-pi, pi] unwraps it).
    center = (low[:, :2] + high[:, :2]) / 2
    heading = np.arctan2(center[:, 1], center[:, 0])
    relative = np.arctan2(footprint[..., 1], footprint[..., 0]) - heading[:, None]
    relative = (relative + math.pi) % (2.0 * math.pi) - math.pi
    step = 2.0 * math.pi / azimuth_steps
    first = np.ceil((heading + relative.min(1) - azimuth_offset) / step).astype(np.int64)
    last = np.floor((heading + relative.max(1) - azimuth_offset) / step).astype(np.int64)
    full = (rho_near <= 0.0) | (last - first + 1 >= azimuth_steps)
    col_start = np.where(full, 0, first % azimuth_steps)
    col_count = np.where(keep, np.where(full, azimuth_steps, last - first + 1), 0)
    return _rectangle_pairs(row_start, row_stop, col_start, col_count, azimuth_steps)


# --- appearance ---------------------------------------------------------------------------------
_NOISE_LATTICE, _NOISE_UPSAMPLE = 32, 4


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    """(128, 128, 128) float32 smooth periodic noise in [0, 1): a fixed random 32^3 lattice,
    upsampled 4x per axis with smoothstep weights (built once per process, 8 MB)."""
    table = np.random.default_rng(0x7E47).random((_NOISE_LATTICE,) * 3)
    steps = np.arange(_NOISE_UPSAMPLE) / _NOISE_UPSAMPLE
    weights = steps * steps * (3.0 - 2.0 * steps)
    for axis in range(3):
        table = np.moveaxis(table, axis, -1)
        upsampled = table[..., None] * (1.0 - weights) + np.roll(table, -1, axis=-1)[..., None] * weights
        table = np.moveaxis(upsampled.reshape(*table.shape[:-1], -1), -1, axis)
    return table.astype(np.float32)


def value_noise(points: np.ndarray, frequency: float, key: int) -> np.ndarray:
    """Smooth 3-D value noise in [0, 1) at (M, 3) ``points`` metres, features ~1/``frequency`` m;
    ``key`` picks an independent pattern. A table lookup: cheap enough for every pixel."""
    table = _noise_table()
    shifted = points * (frequency * _NOISE_UPSAMPLE) + np.array([37.1, 11.3, 23.7]) * key
    index = np.floor(shifted).astype(np.int64) % len(table)
    return table[index[:, 0], index[:, 1], index[:, 2]].astype(np.float64)


def surface_albedo(primitives: Primitives, index: np.ndarray, points: np.ndarray,
                   normals: np.ndarray, lane_lines: np.ndarray) -> np.ndarray:
    """Textured albedo (M, 3) in [0, 1] of surface ``points`` (street frame) on ``index``."""
    color = primitives.color[index].copy()
    texture = primitives.texture[index]
    shade = np.ones(len(index))

    road = texture == ROAD_TEXTURE
    if road.any():
        p = points[road]
        shade[road] = 0.8 + 0.4 * value_noise(p, 3.0, 1)
        paint = np.zeros(len(p), dtype=bool)
        for y, dashed in lane_lines:
            on_line = np.abs(p[:, 1] - y) < 0.075
            paint |= on_line & ((np.mod(p[:, 0], 6.0) < 3.0) | (dashed < 0.5))
        color[np.flatnonzero(road)[paint]] = (0.85, 0.85, 0.82)
    sidewalk = texture == SIDEWALK_TEXTURE
    if sidewalk.any():
        p = points[sidewalk]
        joint = (np.mod(p[:, 0], 1.2) < 0.04) | (np.mod(p[:, 1], 1.2) < 0.04)
        shade[sidewalk] = (0.85 + 0.25 * value_noise(p, 4.0, 2)) * np.where(joint, 0.75, 1.0)
    terrain = texture == TERRAIN_TEXTURE
    if terrain.any():
        p = points[terrain]
        soil = value_noise(p, 0.7, 3)[:, None]
        color[terrain] = (1 - soil) * color[terrain] + soil * np.array([0.45, 0.37, 0.26])
        shade[terrain] = 0.75 + 0.5 * value_noise(p, 6.0, 4)
    foliage = texture == FOLIAGE_TEXTURE
    if foliage.any():
        shade[foliage] = 0.55 + 0.8 * value_noise(points[foliage], 5.0, 5)
    bark = texture == BARK_TEXTURE
    if bark.any():
        shade[bark] = 0.7 + 0.5 * value_noise(points[bark] * (8.0, 8.0, 1.0), 1.0, 6)
    facade = texture == FACADE_TEXTURE
    if facade.any():
        p, n = points[facade], normals[facade]
        along = np.where(np.abs(n[:, 1]) > np.abs(n[:, 0]), p[:, 0], p[:, 1])
        window = (np.mod(along, 3.0) > 0.7) & (np.mod(along, 3.0) < 2.3) \
            & (np.mod(p[:, 2], 3.2) > 1.0) & (np.mod(p[:, 2], 3.2) < 2.4) & (p[:, 2] > 2.5) \
            & (np.abs(n[:, 2]) < 0.5)
        color[np.flatnonzero(facade)[window]] = (0.16, 0.2, 0.26)
        shade[facade] = 0.9 + 0.2 * value_noise(p, 1.5, 7)
    plain = (texture == PLAIN_TEXTURE) | (texture == GLASS_TEXTURE)
    if plain.any():
        shade[plain] = 0.93 + 0.14 * value_noise(points[plain], 2.0, 8)
    cone = texture == CONE_TEXTURE
    if cone.any():
        cone_index = index[cone]
        height = (points[cone, 2] - primitives.center[cone_index, 2]) / primitives.size[cone_index, 2]
        color[np.flatnonzero(cone)[(height > 0.45) & (height < 0.65)]] = (0.95, 0.95, 0.95)
    return np.clip(color * shade[:, None], 0.0, 1.0)


def sky_color(dirs: np.ndarray) -> np.ndarray:
    """(R, 3) sky colour in [0, 1] for street-frame unit directions: hazy horizon, blue zenith."""
    up = np.clip(dirs[:, 2] * 2.5, 0.0, 1.0)[:, None]
    return (1 - up) * np.array([0.80, 0.84, 0.90]) + up * np.array([0.38, 0.56, 0.84])


# --- sensors ------------------------------------------------------------------------------------
def lidar_ray_directions(config: LidarConfig, azimuth_offset: float) -> np.ndarray:
    """(beams * azimuth_steps, 3) unit directions in the LiDAR frame, beam-major."""
    elevation = np.radians(np.linspace(*config.elevation_deg, config.beams))
    azimuth = azimuth_offset + 2.0 * math.pi * np.arange(config.azimuth_steps) / config.azimuth_steps
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)


def scan_lidar(scene: Scene, primitives: Primitives, lidar_to_street: np.ndarray, config: LidarConfig,
               rng: np.random.Generator):
    """One instantaneous LiDAR scan of ``primitives`` (already moved to the scan time).

    Returns ``points`` (N, 3) float32 metres in the LiDAR frame, ``intensity`` (N,) float32 0..1,
    ``labels`` (N,) int64 in 1..C and ``instances`` (N,) uint32 (the hit primitive's
    ``Primitives.instance_ids``: 0 = stuff), ordered azimuth-major (as a spinning sensor emits them).
    Range noise, dropouts and intensity noise come from ``rng``.
    """
    step = 2.0 * math.pi / config.azimuth_steps
    azimuth_offset = rng.uniform(0.0, step)
    local_dirs = lidar_ray_directions(config, azimuth_offset)
    dirs = local_dirs @ lidar_to_street[:3, :3].T
    origin = lidar_to_street[:3, 3]
    everything = with_ground(primitives)
    street_to_lidar = np.linalg.inv(lidar_to_street)
    elevations = np.radians(np.linspace(*config.elevation_deg, config.beams))
    pairs = lidar_candidates(everything, street_to_lidar, elevations, azimuth_offset,
                             config.azimuth_steps, config.max_range_m)
    hits = cast_rays(everything, origin, dirs, *pairs, config.max_range_m)
    noise = rng.normal(0.0, config.range_noise_m, len(dirs))
    lost = rng.random(len(dirs)) < config.dropout
    intensity_noise = rng.normal(0.0, config.intensity_noise, len(dirs))
    keep = hits.hit & ~lost & (hits.distance >= config.min_range_m)
    # Emit azimuth-major: column by column as the head spins.
    order = np.arange(len(dirs)).reshape(config.beams, config.azimuth_steps).T.ravel()
    keep_index = order[keep[order]]
    index = hits.primitive[keep_index]
    albedo = surface_albedo(everything, index, hits.points[keep_index], hits.normals[keep_index],
                            scene.lane_lines)
    incidence = np.abs((hits.normals[keep_index] * dirs[keep_index]).sum(1))
    brightness = everything.reflectivity[index] * (0.3 + 0.7 * incidence) * (0.5 + albedo.mean(1))
    intensity = np.clip(brightness + intensity_noise[keep_index], 0.0, 1.0)
    ranges = hits.distance[keep_index] + noise[keep_index]
    points = local_dirs[keep_index] * ranges[:, None]
    return (points.astype(np.float32), intensity.astype(np.float32), everything.label[index],
            everything.instance_ids()[index])


def camera_ray_directions(K: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(H * W, 3) unit directions in the camera frame through pixel centres, row-major (read-only,
    cached per intrinsics)."""
    return _camera_ray_directions(K[0, 0], K[1, 1], K[0, 2], K[1, 2], *image_size)


@functools.lru_cache(maxsize=8)
def _camera_ray_directions(fx: float, fy: float, cx: float, cy: float, height: int,
                           width: int) -> np.ndarray:
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    rays.flags.writeable = False
    return rays


def render_camera(scene: Scene, primitives: Primitives, camera_to_street: np.ndarray, K: np.ndarray,
                  config: CameraConfig, rng: np.random.Generator) -> CameraRender:
    """Ray-trace one pinhole view of ``primitives`` (already moved to the capture time).

    Lambertian shading under the scene's sun with an ambient term, procedural textures, distance
    fog and a sky gradient; ``rng`` adds sensor noise.
    """
    height, width = config.image_size
    local_dirs = camera_ray_directions(K, config.image_size)
    dirs = local_dirs @ camera_to_street[:3, :3].T
    origin = camera_to_street[:3, 3]
    everything = with_ground(primitives)
    pairs = camera_candidates(everything, np.linalg.inv(camera_to_street), K, config.image_size,
                              config.max_depth_m)
    hits = cast_rays(everything, origin, dirs, *pairs, config.max_depth_m)
    hit = hits.hit
    index = hits.primitive[hit]
    albedo = surface_albedo(everything, index, hits.points[hit], hits.normals[hit], scene.lane_lines)
    sun = np.clip(hits.normals[hit] @ scene.sun_direction, 0.0, 1.0)
    lit = albedo * (config.ambient + (1.0 - config.ambient) * 1.25 * sun)[:, None]
    sky = sky_color(dirs)
    rgb = sky.copy()
    fog = 1.0 - np.exp(-hits.distance[hit] / config.fog_distance_m)
    rgb[hit] = (1.0 - fog[:, None]) * lit + fog[:, None] * sky[hit]
    rgb = rgb * 255.0 + rng.normal(0.0, config.pixel_noise, rgb.shape)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(height, width, 3)
    labels = np.zeros(len(dirs), dtype=np.int64)
    labels[hit] = everything.label[index]
    object_ids = np.full(len(dirs), -1, dtype=np.int64)
    object_ids[hit] = everything.object_id[index]
    depth = np.where(hit, hits.distance * local_dirs[:, 2], np.inf).astype(np.float32)
    return CameraRender(image=image, labels=labels.reshape(height, width),
                        object_ids=object_ids.reshape(height, width),
                        depth=depth.reshape(height, width), points=hits.points.reshape(height, width, 3))
