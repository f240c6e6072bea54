"""Procedural street scenes for the synthetic world: analytic primitives, layout and the ego path.

A scene is built in its own *street frame*: x along the street (the ego drives towards +x), y to the
left, z up, the road surface at z = 0. ``Scene.street_to_world`` places the street in a world frame
(random heading and offset), so poses are not trivially axis-aligned.

Every object is a handful of primitives (see ``Primitives``) that share an object id (unique within the
scene) and move with one velocity: buildings and sidewalk slabs are boxes, trees a trunk cylinder plus a crown ellipsoid, cars
and trucks boxes with ellipsoid wheels, pedestrians a leg cylinder, torso ellipsoid and head sphere,
traffic cones a cone on a base plate. The ground plane (z = 0) is the road; the sidewalks are slabs
whose top is the kerb height, and terrain patches sit a few centimetres above them. Objects of the
*thing* classes (``THING_CLASSES``: countable objects) are instances, whose object id is their
ground-truth instance id; stuff (road, buildings, vegetation, ...) has none.

Randomness comes from seeded ``numpy`` generators and from ``hash_unit``, a counter-based hash, so any
scene, scan or camera can be regenerated on its own, in any order, with identical results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..labels import SYNTHETIC_CLASSES

# Label of each class in 1..C (label order of SYNTHETIC_CLASSES).
LABEL = {name: index + 1 for index, name in enumerate(SYNTHETIC_CLASSES)}

# Countable objects: each car, truck, pedestrian, traffic cone and pole (streetlight or sign) is an
# instance; the other classes are stuff (a tree or a hedge is vegetation, not an object to count).
THING_CLASSES = ("pole", "car", "truck", "pedestrian", "traffic cone")

# Primitive kinds.
BOX, CYLINDER, ELLIPSOID, CONE = 0, 1, 2, 3

# Surface textures (see render.shade_albedo).
(ROAD_TEXTURE, SIDEWALK_TEXTURE, TERRAIN_TEXTURE, FACADE_TEXTURE, FOLIAGE_TEXTURE, BARK_TEXTURE,
 PLAIN_TEXTURE, GLASS_TEXTURE, CONE_TEXTURE) = range(9)

GROUND_OBJECT_ID = 0  # the road plane; objects count from 1

def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_unit(*keys) -> np.ndarray:
    """Uniform float64 in [0, 1) from integer keys (scalars or broadcastable int arrays), elementwise.

    The same keys always give the same value on every machine: it is how per-region and per-cell
    random decisions stay consistent without being stored.
    """
    arrays = np.broadcast_arrays(*[np.asarray(key, dtype=np.int64) for key in keys])
    with np.errstate(over="ignore"):
        value = _mix64(arrays[0].astype(np.uint64))
        for array in arrays[1:]:
            value = _mix64(value ^ array.astype(np.uint64))
    return (value >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


@dataclass(frozen=True)
class SceneConfig:
    """Layout knobs of a procedural street (lengths in metres, speeds in m/s, (low, high) ranges)."""

    street_margin_m: float = 110.0  # street length beyond the ego path at both ends
    lane_width_m: float = 3.5
    lanes_per_direction: tuple[int, int] = (1, 2)
    parking_lane_probability: float = 0.7
    parking_lane_width_m: float = 2.5
    kerb_height_m: float = 0.15
    sidewalk_width_m: tuple[float, float] = (2.0, 4.5)
    setback_m: tuple[float, float] = (2.0, 8.0)  # sidewalk edge -> building front (terrain, hedges)
    building_length_m: tuple[float, float] = (8.0, 30.0)
    building_height_m: tuple[float, float] = (5.0, 25.0)
    building_depth_m: tuple[float, float] = (8.0, 20.0)
    building_gap_probability: float = 0.4
    building_gap_m: tuple[float, float] = (3.0, 12.0)
    tree_lawn_probability: float = 0.6  # per side: a terrain strip with trees along the kerb
    tree_spacing_m: tuple[float, float] = (6.0, 14.0)
    streetlight_spacing_m: tuple[float, float] = (18.0, 32.0)
    sign_spacing_m: tuple[float, float] = (15.0, 45.0)
    parked_vehicle_probability: float = 0.65  # per parking slot
    truck_fraction: float = 0.2
    moving_vehicles_per_100m: float = 2.5  # per lane
    pedestrians_per_100m: float = 6.0  # per side
    cone_cluster_spacing_m: tuple[float, float] = (35.0, 80.0)
    ego_speed_mps: tuple[float, float] = (3.0, 10.0)
    ego_wobble_m: float = 0.3  # lateral sway amplitude within the lane
    ego_tilt_deg: float = 0.5  # pitch / roll sway amplitude


@dataclass
class Primitives:
    """Structure-of-arrays of P analytic primitives in the street frame at time 0.

    ``kind`` (P,) int64: BOX (``center``, ``size`` = half extents), CYLINDER (vertical; ``center`` =
    axis midpoint, ``size`` = (radius, radius, half height)), ELLIPSOID (``center``, ``size`` = radii),
    CONE (vertical; ``center`` = base centre, ``size`` = (radius, radius, height)); all (P, 3) float64
    metres. ``yaw`` (P,) radians about z (boxes, ellipsoids). ``velocity`` (P, 3) m/s. ``label`` (P,)
    int64 in 1..C, ``object_id`` (P,) int64 >= 1, ``color`` (P, 3) RGB albedo in [0, 1],
    ``texture`` (P,) int64, ``reflectivity`` (P,) LiDAR reflectivity in [0, 1].
    """

    kind: np.ndarray
    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    label: np.ndarray
    object_id: np.ndarray
    color: np.ndarray
    texture: np.ndarray
    reflectivity: np.ndarray

    def __len__(self) -> int:
        return int(len(self.kind))

    def at_time(self, seconds: float) -> "Primitives":
        """The primitives ``seconds`` after the scene start (moving objects translated)."""
        moved = self.select(np.arange(len(self)))
        moved.center = self.center + self.velocity * seconds
        return moved

    def select(self, index: np.ndarray) -> "Primitives":
        """A subset (boolean mask or integer index)."""
        return Primitives(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    def instance_ids(self) -> np.ndarray:
        """(P,) uint32 ground-truth instance id per primitive: the object id for ``THING_CLASSES``,
        0 (no instance) for stuff."""
        things = np.isin(self.label, [LABEL[name] for name in THING_CLASSES])
        return np.where(things, self.object_id, 0).astype(np.uint32)

    def bounding_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (lower (P, 3), upper (P, 3)) in the street frame, metres."""
        cos, sin = np.abs(np.cos(self.yaw)), np.abs(np.sin(self.yaw))
        half = self.size.copy()
        rotated = self.kind != CYLINDER
        half[rotated, 0] = cos[rotated] * self.size[rotated, 0] + sin[rotated] * self.size[rotated, 1]
        half[rotated, 1] = sin[rotated] * self.size[rotated, 0] + cos[rotated] * self.size[rotated, 1]
        center = self.center.copy()
        cone = self.kind == CONE
        # A cone's centre is its base: its box spans base .. base + height.
        center[cone, 2] += self.size[cone, 2] / 2
        half[cone, 2] = self.size[cone, 2] / 2
        return center - half, center + half


class _PrimitiveBuilder:
    """Accumulates primitives object by object."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.next_object_id = GROUND_OBJECT_ID + 1

    def new_object(self) -> int:
        self.next_object_id += 1
        return self.next_object_id - 1

    def add(self, kind: int, object_id: int, label: str, center, size, color, texture: int,
            reflectivity: float, yaw: float = 0.0, velocity=(0.0, 0.0, 0.0)) -> None:
        self.rows.append((kind, center, size, yaw, velocity, LABEL[label], object_id, color, texture,
                          reflectivity))

    def build(self) -> Primitives:
        columns = list(zip(*self.rows))
        return Primitives(
            kind=np.array(columns[0], dtype=np.int64),
            center=np.array(columns[1], dtype=np.float64).reshape(-1, 3),
            size=np.array(columns[2], dtype=np.float64).reshape(-1, 3),
            yaw=np.array(columns[3], dtype=np.float64),
            velocity=np.array(columns[4], dtype=np.float64).reshape(-1, 3),
            label=np.array(columns[5], dtype=np.int64),
            object_id=np.array(columns[6], dtype=np.int64),
            color=np.array(columns[7], dtype=np.float64).reshape(-1, 3),
            texture=np.array(columns[8], dtype=np.int64),
            reflectivity=np.array(columns[9], dtype=np.float64),
        )


@dataclass
class Scene:
    """One procedural street and its ego path.

    ``lane_lines`` (L, 2): painted lines as (y in metres, dashed 0/1) in the street frame.
    ``sun_direction`` (3,): unit vector towards the sun, street frame.
    """

    index: int
    primitives: Primitives
    street_to_world: np.ndarray  # (4, 4)
    lane_lines: np.ndarray
    sun_direction: np.ndarray
    start_timestamp_ns: int
    ego_speed_mps: float
    ego_lane_y_m: float
    ego_wobble_m: float
    ego_wobble_period_s: float
    ego_wobble_phase: float
    ego_tilt_rad: float

    def ego_to_street(self, seconds: float) -> np.ndarray:
        """(4, 4) ego pose in the street frame ``seconds`` after the scene start.

        The ego drives along +x at constant speed, swaying sideways and slightly in pitch and roll.
        """
        omega = 2.0 * math.pi / self.ego_wobble_period_s
        phase = omega * seconds + self.ego_wobble_phase
        x = self.ego_speed_mps * seconds
        y = self.ego_lane_y_m + self.ego_wobble_m * math.sin(phase)
        yaw = math.atan2(self.ego_wobble_m * omega * math.cos(phase), self.ego_speed_mps)
        pitch = self.ego_tilt_rad * math.sin(1.7 * phase)
        roll = self.ego_tilt_rad * math.cos(1.3 * phase)
        pose = np.eye(4)
        pose[:3, :3] = rotation_z(yaw) @ rotation_y(pitch) @ rotation_x(roll)
        pose[:3, 3] = (x, y, 0.0)
        return pose

    def ego_to_world(self, seconds: float) -> np.ndarray:
        """(4, 4) ego pose in the world frame ``seconds`` after the scene start."""
        return self.street_to_world @ self.ego_to_street(seconds)

    def timestamp_ns(self, seconds: float) -> int:
        """Integer nanosecond timestamp ``seconds`` after the scene start."""
        return self.start_timestamp_ns + int(round(seconds * 1e9))


def rotation_z(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about z."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_y(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about y."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about x."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# Albedo palettes (linear RGB).
_FACADES = ((0.72, 0.66, 0.55), (0.55, 0.30, 0.24), (0.60, 0.60, 0.62), (0.85, 0.84, 0.80),
            (0.45, 0.42, 0.40), (0.75, 0.58, 0.42))
_PAINTS = ((0.92, 0.92, 0.92), (0.08, 0.08, 0.09), (0.62, 0.63, 0.66), (0.60, 0.08, 0.07),
           (0.10, 0.20, 0.50), (0.35, 0.36, 0.38), (0.20, 0.35, 0.22), (0.85, 0.70, 0.20))
_CLOTHES = ((0.10, 0.12, 0.25), (0.55, 0.10, 0.10), (0.85, 0.85, 0.80), (0.15, 0.15, 0.15),
            (0.20, 0.45, 0.30), (0.70, 0.55, 0.30), (0.35, 0.25, 0.50))
_SKINS = ((0.86, 0.67, 0.53), (0.65, 0.45, 0.32), (0.42, 0.28, 0.20), (0.95, 0.78, 0.65))
_FOLIAGE = ((0.18, 0.36, 0.12), (0.25, 0.42, 0.15), (0.14, 0.28, 0.10), (0.32, 0.40, 0.14))
_BARK = (0.33, 0.24, 0.16)
_SIDEWALK = (0.62, 0.61, 0.58)
_TERRAIN = (0.36, 0.42, 0.22)
_METAL = (0.45, 0.46, 0.48)
_GLASS = (0.10, 0.13, 0.17)
_TIRE = (0.05, 0.05, 0.05)
_CONE = (0.95, 0.38, 0.05)


class _StreetLayout:
    """Places every object of one scene; the methods run in order from ``generate_scene``."""

    def __init__(self, config: SceneConfig, rng: np.random.Generator, x_range: tuple[float, float]):
        self.config = config
        self.rng = rng
        self.x_lo, self.x_hi = x_range
        self.out = _PrimitiveBuilder()
        lanes = int(rng.integers(config.lanes_per_direction[0], config.lanes_per_direction[1] + 1))
        self.lanes = lanes
        self.parking = {side: bool(rng.random() < config.parking_lane_probability) for side in (1, -1)}
        self.road_edge = {side: lanes * config.lane_width_m
                          + self.parking[side] * config.parking_lane_width_m for side in (1, -1)}
        self.sidewalk = {side: float(rng.uniform(*config.sidewalk_width_m)) for side in (1, -1)}
        self.setback = {side: float(rng.uniform(*config.setback_m)) for side in (1, -1)}
        self.cone_zones: list[tuple[int, float, float]] = []  # (side, x0, x1): no parked vehicles

    def pick(self, palette: Sequence) -> tuple:
        return tuple(palette[int(self.rng.integers(len(palette)))])

    def jitter(self, color: Sequence[float], amount: float = 0.06) -> tuple:
        return tuple(np.clip(np.asarray(color) + self.rng.uniform(-amount, amount, 3), 0.0, 1.0))

    def span(self, low: float, high: float, spacing: tuple[float, float]):
        """Positions from ``low`` to ``high`` with random gaps drawn from ``spacing``."""
        x = low + self.rng.uniform(0.0, spacing[1])
        while x < high:
            yield x
            x += self.rng.uniform(*spacing)

    # --- ground -------------------------------------------------------------------------------
    def lane_lines(self) -> np.ndarray:
        width = self.config.lane_width_m
        lines = [(0.0, 1.0 if self.lanes == 1 else 0.0)]
        for side in (1, -1):
            lines += [(side * width * k, 1.0) for k in range(1, self.lanes)]
            edge = self.lanes * width if self.parking[side] else self.road_edge[side] - 0.3
            lines.append((side * edge, 0.0))
        return np.array(lines, dtype=np.float64)

    def add_sidewalks(self) -> None:
        """Kerb-high slabs on both sides, reaching far behind the buildings."""
        kerb = self.config.kerb_height_m
        depth = 60.0
        x_mid, x_half = (self.x_lo + self.x_hi) / 2, (self.x_hi - self.x_lo) / 2
        for side in (1, -1):
            y_mid = side * (self.road_edge[side] + depth / 2)
            self.out.add(BOX, self.out.new_object(), "sidewalk", (x_mid, y_mid, (kerb - 0.5) / 2),
                         (x_half, depth / 2, (kerb + 0.5) / 2), self.jitter(_SIDEWALK, 0.04),
                         SIDEWALK_TEXTURE, 0.45)

    def add_terrain(self, side: int, x0: float, x1: float, y0: float, y1: float) -> None:
        """A grass/soil patch on the slab between |y| = y0 and y1 (y0 < y1)."""
        kerb = self.config.kerb_height_m
        top = kerb + self.rng.uniform(0.02, 0.06)
        self.out.add(BOX, self.out.new_object(), "terrain",
                     ((x0 + x1) / 2, side * (y0 + y1) / 2, top / 2),
                     ((x1 - x0) / 2, (y1 - y0) / 2, top / 2), self.jitter(_TERRAIN, 0.05),
                     TERRAIN_TEXTURE, 0.4)

    # --- vegetation ---------------------------------------------------------------------------
    def add_tree(self, x: float, y: float, base: float, scale: float = 1.0) -> None:
        rng = self.rng
        object_id = self.out.new_object()
        trunk_radius = rng.uniform(0.12, 0.25) * scale
        trunk_height = rng.uniform(2.0, 3.5) * scale
        self.out.add(CYLINDER, object_id, "vegetation", (x, y, base + trunk_height / 2),
                     (trunk_radius, trunk_radius, trunk_height / 2),
                     self.jitter(_BARK, 0.05), BARK_TEXTURE, 0.45)
        radius = rng.uniform(1.4, 3.0) * scale
        crown = (radius * rng.uniform(0.85, 1.15), radius * rng.uniform(0.85, 1.15),
                 rng.uniform(1.3, 3.0) * scale)
        self.out.add(ELLIPSOID, object_id, "vegetation", (x, y, base + trunk_height + 0.6 * crown[2]),
                     crown, self.jitter(self.pick(_FOLIAGE), 0.04), FOLIAGE_TEXTURE, 0.5,
                     yaw=rng.uniform(0, math.pi))

    def add_bush(self, x: float, y: float, base: float) -> None:
        size = (self.rng.uniform(0.5, 1.3), self.rng.uniform(0.5, 1.3), self.rng.uniform(0.4, 0.9))
        self.out.add(ELLIPSOID, self.out.new_object(), "vegetation", (x, y, base + 0.7 * size[2]), size,
                     self.jitter(self.pick(_FOLIAGE), 0.04), FOLIAGE_TEXTURE, 0.5,
                     yaw=self.rng.uniform(0, math.pi))

    def add_hedge(self, side: int, x0: float, x1: float, y: float, base: float) -> None:
        height, width = self.rng.uniform(0.7, 1.6), self.rng.uniform(0.6, 1.0)
        self.out.add(BOX, self.out.new_object(), "vegetation", ((x0 + x1) / 2, side * y, base + height / 2),
                     ((x1 - x0) / 2, width / 2, height / 2), self.jitter(self.pick(_FOLIAGE), 0.04),
                     FOLIAGE_TEXTURE, 0.5)

    def add_roadside_greenery(self) -> None:
        """Tree lawns along the kerb, and terrain / hedges / bushes / trees in the setback zone."""
        config, rng, kerb = self.config, self.rng, self.config.kerb_height_m
        for side in (1, -1):
            edge = self.road_edge[side]
            if rng.random() < config.tree_lawn_probability:
                lawn = rng.uniform(0.9, 1.6)
                for x0 in self.span(self.x_lo, self.x_hi, (12.0, 26.0)):
                    x1 = min(x0 + rng.uniform(6.0, 20.0), self.x_hi)
                    self.add_terrain(side, x0, x1, edge + 0.15, edge + 0.15 + lawn)
                    for x in self.span(x0 + 1.0, x1 - 1.0, config.tree_spacing_m):
                        self.add_tree(x, side * (edge + 0.15 + lawn / 2), kerb)
            front = edge + self.sidewalk[side]
            back = front + self.setback[side]
            for x0 in self.span(self.x_lo, self.x_hi, (6.0, 24.0)):
                x1 = min(x0 + rng.uniform(4.0, 20.0), self.x_hi)
                path = rng.uniform(0.0, 0.8)  # a paved strip left next to the sidewalk
                self.add_terrain(side, x0, x1, front + path, back)
                choice = rng.random()
                if choice < 0.35:
                    self.add_hedge(side, x0 + 0.3, x1 - 0.3, front + path + 0.6, kerb)
                elif choice < 0.7:
                    for x in self.span(x0 + 1.0, x1 - 1.0, (3.0, 7.0)):
                        self.add_bush(x, side * rng.uniform(front + path + 0.5, back - 0.3), kerb)
                else:
                    for x in self.span(x0 + 1.0, x1 - 1.0, config.tree_spacing_m):
                        self.add_tree(x, side * rng.uniform(front + path + 1.0, back + 1.0), kerb)

    # --- buildings ----------------------------------------------------------------------------
    def add_buildings(self) -> None:
        config, rng, kerb = self.config, self.rng, self.config.kerb_height_m
        for side in (1, -1):
            front = self.road_edge[side] + self.sidewalk[side] + self.setback[side]
            x = self.x_lo
            while x < self.x_hi:
                length = rng.uniform(*config.building_length_m)
                depth = rng.uniform(*config.building_depth_m)
                height = rng.uniform(*config.building_height_m)
                y0 = front + rng.uniform(0.0, 1.5)
                self.out.add(BOX, self.out.new_object(), "building",
                             (x + length / 2, side * (y0 + depth / 2), height / 2),
                             (length / 2, depth / 2, height / 2),
                             self.jitter(self.pick(_FACADES), 0.05), FACADE_TEXTURE, 0.5)
                x += length
                if rng.random() < config.building_gap_probability:
                    gap = rng.uniform(*config.building_gap_m)
                    self.add_terrain(side, x + 0.2, x + gap - 0.2, front, front + depth)
                    if rng.random() < 0.6:
                        self.add_tree(x + gap / 2, side * (front + rng.uniform(2.0, depth)), kerb)
                    x += gap

    # --- poles --------------------------------------------------------------------------------
    def add_streetlight(self, x: float, side: int) -> None:
        rng, kerb = self.rng, self.config.kerb_height_m
        object_id, color = self.out.new_object(), self.jitter(_METAL, 0.05)
        y = side * (self.road_edge[side] + 0.45)
        radius, height = rng.uniform(0.09, 0.15), rng.uniform(7.0, 9.5)
        self.out.add(CYLINDER, object_id, "pole", (x, y, kerb + height / 2), (radius, radius, height / 2),
                     color, PLAIN_TEXTURE, 0.6)
        arm = rng.uniform(1.5, 2.8)
        self.out.add(BOX, object_id, "pole", (x, y - side * arm / 2, kerb + height - 0.1),
                     (0.06, arm / 2, 0.06), color, PLAIN_TEXTURE, 0.6)
        self.out.add(BOX, object_id, "pole", (x, y - side * arm, kerb + height - 0.2),
                     (0.25, 0.15, 0.08), (0.9, 0.9, 0.85), PLAIN_TEXTURE, 0.7)

    def add_sign(self, x: float, side: int) -> None:
        rng, kerb = self.rng, self.config.kerb_height_m
        object_id = self.out.new_object()
        y = side * (self.road_edge[side] + rng.uniform(0.3, 0.8))
        radius, height = rng.uniform(0.04, 0.07), rng.uniform(2.2, 3.2)
        self.out.add(CYLINDER, object_id, "pole", (x, y, kerb + height / 2), (radius, radius, height / 2),
                     self.jitter(_METAL, 0.05), PLAIN_TEXTURE, 0.6)
        plate = self.pick(((0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.9, 0.9), (0.9, 0.75, 0.1)))
        self.out.add(BOX, object_id, "pole", (x, y, kerb + height + 0.25), (0.03, 0.3, 0.3), plate,
                     PLAIN_TEXTURE, 0.9)

    def add_poles(self) -> None:
        for side in (1, -1):
            for x in self.span(self.x_lo, self.x_hi, self.config.streetlight_spacing_m):
                self.add_streetlight(x, side)
            for x in self.span(self.x_lo, self.x_hi, self.config.sign_spacing_m):
                self.add_sign(x, side)

    # --- traffic cones ------------------------------------------------------------------------
    def add_cone(self, x: float, y: float, base: float) -> None:
        rng = self.rng
        object_id = self.out.new_object()
        radius, height = rng.uniform(0.13, 0.19), rng.uniform(0.5, 0.8)
        self.out.add(BOX, object_id, "traffic cone", (x, y, base + 0.02), (0.2, 0.2, 0.02), (0.1, 0.1, 0.1),
                     PLAIN_TEXTURE, 0.5)
        self.out.add(CONE, object_id, "traffic cone", (x, y, base + 0.04), (radius, radius, height), _CONE,
                     CONE_TEXTURE, 0.95)

    def add_cone_cluster(self, x0: float, side: int) -> None:
        """3-7 cones in a line: in the parking lane if there is one (parked vehicles then keep out of
        the zone), else on the sidewalk by the kerb, clear of traffic."""
        count = int(self.rng.integers(3, 8))
        spacing = self.rng.uniform(1.2, 2.5)
        edge = self.road_edge[side]
        if self.parking[side]:
            y, base = side * (edge - self.rng.uniform(0.4, 1.2)), 0.0
        else:
            y, base = side * (edge + self.rng.uniform(0.3, 0.6)), self.config.kerb_height_m
        for k in range(count):
            self.add_cone(x0 + k * spacing, y + self.rng.uniform(-0.1, 0.1), base)
        self.cone_zones.append((side, x0 - 3.0, x0 + count * spacing + 3.0))

    def add_cones(self, anchor_x: float) -> None:
        """Cone clusters along the street, one of them ``anchor_x`` ahead on the ego's side."""
        self.add_cone_cluster(anchor_x, -1)
        for x in self.span(self.x_lo, self.x_hi, self.config.cone_cluster_spacing_m):
            if abs(x - anchor_x) > 20.0:
                self.add_cone_cluster(x, int(self.rng.choice((1, -1))))

    def vehicle_length(self, truck: bool) -> float:
        """Draw a vehicle length in metres (cars 3.8-5 m, trucks 6.5-11.5 m)."""
        return float(self.rng.uniform(6.5, 11.5) if truck else self.rng.uniform(3.8, 5.0))

    def add_vehicle(self, x: float, y: float, heading: float, speed: float, truck: bool,
                    length: float) -> None:
        """A car or truck of ``length`` centred at (x, y), facing ``heading``, driving at ``speed``."""
        rng = self.rng
        object_id = self.out.new_object()
        label = "truck" if truck else "car"
        direction = np.array([math.cos(heading), math.sin(heading)])
        velocity = (speed * direction[0], speed * direction[1], 0.0)
        paint = self.jitter(self.pick(_PAINTS), 0.04)

        def place(along: float, across: float, z: float, half: tuple, color, texture, reflectivity,
                  kind: int = BOX) -> None:
            cx = x + along * direction[0] - across * direction[1]
            cy = y + along * direction[1] + across * direction[0]
            self.out.add(kind, object_id, label, (cx, cy, z), half, color, texture, reflectivity,
                         yaw=heading, velocity=velocity)

        if truck:
            width, cab = rng.uniform(2.3, 2.55), rng.uniform(1.8, 2.4)
            cargo, clearance = length - cab - 0.3, 0.45
            cab_height, cargo_height = rng.uniform(2.4, 3.0), rng.uniform(2.8, 3.8)
            front = length / 2
            place(front - cab / 2, 0.0, clearance + cab_height / 2, (cab / 2, width / 2, cab_height / 2),
                  paint, PLAIN_TEXTURE, 0.55)
            place(front - cab / 2 + 0.15, 0.0, clearance + cab_height * 0.78,
                  (cab / 2 - 0.1, width / 2 + 0.01, cab_height * 0.16), _GLASS, GLASS_TEXTURE, 0.1)
            place(-length / 2 + cargo / 2, 0.0, clearance + cargo_height / 2,
                  (cargo / 2, width / 2, cargo_height / 2),
                  self.jitter(self.pick(_PAINTS[:3] + _PAINTS[5:6]), 0.03), PLAIN_TEXTURE, 0.55)
            axles = (front - cab / 2, -length / 2 + 1.2, -length / 2 + 2.6)
            wheel = 0.5
        else:
            width = rng.uniform(1.7, 2.0)
            clearance, body = 0.3, rng.uniform(0.6, 0.8)
            cabin_length, cabin_height = length * rng.uniform(0.45, 0.6), rng.uniform(0.45, 0.6)
            place(0.0, 0.0, clearance + body / 2, (length / 2, width / 2, body / 2), paint, PLAIN_TEXTURE,
                  0.5)
            place(-0.1 * length, 0.0, clearance + body + cabin_height / 2,
                  (cabin_length / 2, width / 2 - 0.08, cabin_height / 2), _GLASS, GLASS_TEXTURE, 0.1)
            axles = (0.32 * length, -0.32 * length)
            wheel = 0.33
        for along in axles:
            for across in (-width / 2 + 0.1, width / 2 - 0.1):
                place(along, across, wheel, (wheel, 0.13, wheel), _TIRE, PLAIN_TEXTURE, 0.15,
                      kind=ELLIPSOID)

    def add_parked_vehicles(self) -> None:
        """Parking lanes filled slot by slot (kept clear of traffic-cone zones)."""
        config, rng = self.config, self.rng
        for side in (1, -1):
            if not self.parking[side]:
                continue
            y = side * (self.road_edge[side] - config.parking_lane_width_m / 2)
            heading = 0.0 if side < 0 else math.pi
            x = self.x_lo + rng.uniform(0.0, 6.0)
            while x < self.x_hi:
                truck = bool(rng.random() < config.truck_fraction)
                length = self.vehicle_length(truck)
                blocked = any(s == side and x0 - length < x < x1 for s, x0, x1 in self.cone_zones)
                if blocked or rng.random() > config.parked_vehicle_probability:
                    x += rng.uniform(2.0, 6.0)
                    continue
                self.add_vehicle(x + length / 2, y + side * rng.uniform(-0.15, 0.15),
                                 heading + rng.uniform(-0.05, 0.05), 0.0, truck, length)
                x += length + rng.uniform(0.8, 3.0)

    def add_moving_vehicles(self, ego_speed: float, anchor_truck_x: float) -> None:
        """Traffic in every lane at one speed per lane, so vehicles never run into each other.

        The ego's own lane keeps clear of the ego for the whole scene: vehicles start >= 20 m ahead
        (no slower than the ego) or >= 25 m behind (no faster).
        """
        config, rng, width = self.config, self.rng, self.config.lane_width_m
        length = self.x_hi - self.x_lo
        for side in (1, -1):
            for lane in range(self.lanes):
                y = side * width * (lane + 0.5)
                heading = 0.0 if side < 0 else math.pi
                ego_lane = side < 0 and lane == 0
                speed = ego_speed + rng.uniform(0.0, 1.0) if ego_lane else rng.uniform(4.0, 13.0)
                count = rng.poisson(config.moving_vehicles_per_100m * length / 100.0)
                last = -np.inf
                for x in np.sort(rng.uniform(self.x_lo, self.x_hi, count)):
                    truck = bool(rng.random() < config.truck_fraction)
                    vehicle_length = self.vehicle_length(truck)
                    if x - last < 4.0 + vehicle_length or (ego_lane and -25.0 < x < 20.0) \
                            or (side > 0 and lane == 0 and abs(x - anchor_truck_x) < 15.0):
                        continue
                    lane_speed = speed if not ego_lane or x > 0 else ego_speed - rng.uniform(0.0, 1.0)
                    self.add_vehicle(x, y + rng.uniform(-0.3, 0.3), heading, max(lane_speed, 0.0), truck,
                                     vehicle_length)
                    last = x
        # One oncoming truck close ahead of the ego at the start, so every scene shows the class.
        self.add_vehicle(anchor_truck_x, width * 0.5, math.pi, rng.uniform(2.0, 6.0), True,
                         self.vehicle_length(True))

    # --- pedestrians --------------------------------------------------------------------------
    def add_pedestrian(self, x: float, y: float, base: float, heading: float, speed: float) -> None:
        rng = self.rng
        object_id = self.out.new_object()
        scale = rng.uniform(0.85, 1.1)
        velocity = (speed * math.cos(heading), speed * math.sin(heading), 0.0)
        legs = 0.85 * scale
        self.out.add(CYLINDER, object_id, "pedestrian", (x, y, base + legs / 2),
                     (0.14 * scale, 0.14 * scale, legs / 2), self.jitter(self.pick(_CLOTHES[:4]), 0.04),
                     PLAIN_TEXTURE, 0.35, velocity=velocity)
        torso = (0.22 * scale, 0.14 * scale, 0.33 * scale)
        self.out.add(ELLIPSOID, object_id, "pedestrian", (x, y, base + legs + 0.8 * torso[2]), torso,
                     self.jitter(self.pick(_CLOTHES), 0.04), PLAIN_TEXTURE, 0.35,
                     yaw=heading + math.pi / 2, velocity=velocity)
        head = 0.11 * scale
        self.out.add(ELLIPSOID, object_id, "pedestrian",
                     (x, y, base + legs + 1.6 * torso[2] + head * 0.9), (head, head, head * 1.15),
                     self.pick(_SKINS), PLAIN_TEXTURE, 0.35, velocity=velocity)

    def add_pedestrians(self, anchor_x: float) -> None:
        config, rng, kerb = self.config, self.rng, self.config.kerb_height_m
        length = self.x_hi - self.x_lo
        for side in (1, -1):
            count = rng.poisson(config.pedestrians_per_100m * length / 100.0)
            edge = self.road_edge[side]
            for x in rng.uniform(self.x_lo, self.x_hi, count):
                self.add_walker(x, side, edge, kerb)
        self.add_walker(anchor_x, -1, self.road_edge[-1], kerb)

    def add_walker(self, x: float, side: int, edge: float, kerb: float) -> None:
        rng = self.rng
        y = side * (edge + rng.uniform(0.6, self.sidewalk[side] - 0.3))
        heading = rng.choice((0.0, math.pi)) + rng.uniform(-0.2, 0.2)
        speed = 0.0 if rng.random() < 0.3 else rng.uniform(0.8, 1.6)
        self.add_pedestrian(x, y, kerb, heading, speed)


def generate_scene(config: SceneConfig, seed: int, index: int, duration_s: float) -> Scene:
    """Build scene ``index`` of the world with ``seed``; deterministic in (config, seed, index).

    ``duration_s``: how long the ego drives (sets the street length). Anchor objects (a traffic cone
    cluster, a pedestrian, a truck, all within ~30 m ahead of the start) make every class visible in
    the first frames.
    """
    rng = np.random.default_rng([seed, index, 0x5CE4E])
    speed = float(rng.uniform(*config.ego_speed_mps))
    travel = speed * max(duration_s, 0.0)
    x_range = (-config.street_margin_m, travel + config.street_margin_m)
    layout = _StreetLayout(config, rng, x_range)
    anchor_cones, anchor_walker, anchor_truck = rng.uniform(8, 18), rng.uniform(6, 16), rng.uniform(16, 30)
    layout.add_sidewalks()
    layout.add_roadside_greenery()
    layout.add_buildings()
    layout.add_poles()
    layout.add_cones(anchor_cones)
    layout.add_parked_vehicles()
    layout.add_moving_vehicles(speed, anchor_truck)
    layout.add_pedestrians(anchor_walker)

    heading = rng.uniform(-math.pi, math.pi)
    street_to_world = np.eye(4)
    street_to_world[:3, :3] = rotation_z(heading)
    street_to_world[:3, 3] = (rng.uniform(-2000, 2000), rng.uniform(-2000, 2000), rng.uniform(-5, 30))
    sun_azimuth, sun_elevation = rng.uniform(-math.pi, math.pi), rng.uniform(0.5, 1.1)
    sun = np.array([math.cos(sun_elevation) * math.cos(sun_azimuth),
                    math.cos(sun_elevation) * math.sin(sun_azimuth), math.sin(sun_elevation)])
    return Scene(
        index=index,
        primitives=layout.out.build(),
        street_to_world=street_to_world,
        lane_lines=layout.lane_lines(),
        sun_direction=sun,
        start_timestamp_ns=1_700_000_000_000_000_000 + index * 3_600_000_000_000,
        ego_speed_mps=speed,
        ego_lane_y_m=-config.lane_width_m / 2,
        ego_wobble_m=config.ego_wobble_m,
        ego_wobble_period_s=float(rng.uniform(6.0, 14.0)),
        ego_wobble_phase=float(rng.uniform(0, 2 * math.pi)),
        ego_tilt_rad=math.radians(config.ego_tilt_deg),
    )
