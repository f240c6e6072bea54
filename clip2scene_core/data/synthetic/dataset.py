"""The synthetic world: procedural street scenes as ``Frame`` sequences with exact labels.

Every scene (``scene``) is a street built from analytic primitives; the ego drives along it
and a spinning LiDAR and three pinhole cameras ray-cast the same primitives (``render``), so
each point and pixel has a true label, and each point of a thing object (car, truck, pedestrian,
traffic cone, pole) its object's instance id; each camera also carries a simulated MaskCLIP-like teacher map
(``teacher``). Frames come at ``frame_interval_s`` (10 Hz); every frame carries the
``num_sweeps`` previous scans of its sequence as sweeps, newest first (the first frames of a scene use
pre-roll scans taken before it starts, so every frame has a full set). Everything is deterministic in
(config, seed): a frame can be generated alone, in any order, with identical arrays.

``SyntheticDataset(root=None, ...)`` generates frames on demand; ``write_synthetic_dataset`` (CLI:
``clip2scene synth``) stores them, and ``SyntheticDataset(root=DIR)`` reads them back into identical
frames. On-disk layout (``S`` = num_sweeps, ``F`` = frames per scene; ``.npz`` = numpy zip)::

    DIR/meta.json                  {"format": "clip2scene-synthetic/1", "seed", "num_scenes",
                                    "frames_per_scene", "class_names", "config": SyntheticConfig}
                                   written last: a folder without it is incomplete
    DIR/scene_0000/scan_0000.npz   one LiDAR scan: points (N, 3) float32 LiDAR frame, intensity (N,)
                                   float32 0..1, labels (N,) int64, instances (N,) uint32 (0 = stuff),
                                   timestamp () int64 ns, lidar_to_ego (4, 4), ego_to_world (4, 4).
                                   Scans 0..S-1 are the pre-roll; frame i's own scan is scan S+i
                                   (S+F scans per scene). ``instances`` was added without a new
                                   format: folders written before it read with instances=None
    DIR/scene_0000/frame_0000.npz  scan () and sweep_scans (S,) int64: indices of the frame's scan
                                   and of its sweeps (newest first) - references, not copies;
                                   camera_names (K,) str; per camera k: camera{k}_image (H, W, 3)
                                   uint8, camera{k}_K (3, 3), camera{k}_lidar_to_camera (4, 4),
                                   camera{k}_timestamp () int64 ns, camera{k}_labels and
                                   camera{k}_teacher_labels (H, W) uint8
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import typing
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from ...frame import Camera, Frame, Sweep
from .. import require_file
from ..labels import SYNTHETIC_CLASSES
from .render import (
    CameraConfig, CameraRender, LidarConfig, camera_intrinsics, camera_to_ego, lidar_to_ego, render_camera,
    scan_lidar,
)
from .scene import Scene, SceneConfig, generate_scene
from .teacher import TeacherConfig, simulate_teacher_labels

logger = logging.getLogger(__name__)

FORMAT = "clip2scene-synthetic/1"
META_FILE = "meta.json"
DEFAULT_NUM_SCENES = 8
DEFAULT_FRAMES_PER_SCENE = 10
# Independent random streams per purpose (part of every generator seed).
_LIDAR_STREAM, _CAMERA_STREAM = 1, 2


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the synthetic world, nested by part (see each part's dataclass)."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    frame_interval_s: float = 0.1
    num_sweeps: int = 4  # earlier scans attached to every frame, newest first

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "SyntheticConfig":
        """Inverse of ``to_dict``; missing fields keep their defaults, unknown ones raise ValueError
        naming ``source``."""
        return _dataclass_from_dict(cls, data, source)


def _dataclass_from_dict(cls, data, source: str):
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a mapping for {cls.__name__}, got {type(data).__name__}")
    names = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _coerce(hints[name], value, f"{source}.{name}") for name, value in data.items()})


def _coerce(hint, value, source: str):
    """JSON value -> the annotated type (nested dataclasses and tuples)."""
    if dataclasses.is_dataclass(hint):
        return _dataclass_from_dict(hint, value, source)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{source} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], item, source) for item in value)
        if len(args) != len(value):
            raise ValueError(f"{source} must have {len(args)} entries, got {len(value)}")
        return tuple(_coerce(arg, item, source) for arg, item in zip(args, value))
    return value


class _CachedScans:
    """Base of the procedural and the stored world: caches ``scan(scene, scan) -> Sweep`` (built by
    ``_build_scan``) and stays picklable for DataLoader worker processes (caches are rebuilt)."""

    _CACHED = ("scan",)

    def __init__(self, num_sweeps: int):
        self._cache_size = num_sweeps + 2  # a sequential reader computes each scan once
        self._make_caches()

    def _make_caches(self) -> None:
        self.scan = functools.lru_cache(maxsize=self._cache_size)(self._build_scan)

    def _build_scan(self, scene: int, scan: int) -> Sweep:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in self._CACHED}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_caches()


class SyntheticWorld(_CachedScans):
    """Procedural generator of scenes, scans and cameras for one (config, seed, frames per scene).

    ``scene(index) -> Scene`` and ``scan(scene, scan) -> Sweep`` are cached. Scan ``j`` of a scene is taken ``scan_time(j)`` seconds after its start;
    frame ``i`` owns scan ``scan_of(i)`` and uses the ``num_sweeps`` scans before it as sweeps.
    """

    def __init__(self, config: SyntheticConfig, seed: int, frames_per_scene: int):
        if frames_per_scene < 1:
            raise ValueError(f"frames_per_scene must be >= 1, got {frames_per_scene}")
        self.config, self.seed, self.frames_per_scene = config, int(seed), int(frames_per_scene)
        self._lidar_to_ego = lidar_to_ego(config.lidar)
        super().__init__(config.num_sweeps)

    _CACHED = ("scan", "scene")

    def _make_caches(self) -> None:
        super()._make_caches()
        self.scene = functools.lru_cache(maxsize=2)(self._build_scene)

    def _build_scene(self, scene: int) -> Scene:
        duration = (self.frames_per_scene - 1) * self.config.frame_interval_s
        return generate_scene(self.config.scene, self.seed, scene, duration)

    def scan_time(self, scan: int) -> float:
        """Seconds from the scene start to scan ``scan`` (pre-roll scans are negative)."""
        return (scan - self.config.num_sweeps) * self.config.frame_interval_s

    def _build_scan(self, scene_index: int, scan: int) -> Sweep:
        """LiDAR scan ``scan`` (0..S+F-1, see the module docstring) of scene ``scene_index``."""
        scene = self.scene(scene_index)
        seconds = self.scan_time(scan)
        ego_to_street = scene.ego_to_street(seconds)
        rng = np.random.default_rng([self.seed, scene_index, scan, _LIDAR_STREAM])
        points, intensity, labels, instances = scan_lidar(scene, scene.primitives.at_time(seconds),
                                                          ego_to_street @ self._lidar_to_ego,
                                                          self.config.lidar, rng)
        return Sweep(points=points, timestamp=scene.timestamp_ns(seconds), lidar_to_ego=self._lidar_to_ego,
                     ego_to_world=scene.street_to_world @ ego_to_street, intensity=intensity, labels=labels,
                     instances=instances)

    def scan_of(self, frame: int) -> int:
        """Index of frame ``frame``'s own scan (after the ``num_sweeps`` pre-roll scans)."""
        return frame + self.config.num_sweeps

    def frame_scans(self, scene: int, frame: int) -> tuple[int, list[int]]:
        """(index of frame ``frame``'s own scan, indices of its sweeps, newest first)."""
        scan = self.scan_of(frame)
        return scan, [scan - k for k in range(1, self.config.num_sweeps + 1)]

    def capture_seconds(self, frame: int, camera: int) -> float:
        """Seconds from the scene start to when camera ``camera`` of frame ``frame`` fires."""
        return self.scan_time(self.scan_of(frame)) + self.config.cameras.rigs[camera].time_offset_s

    def render_view(self, scene_index: int, frame: int, camera: int) -> CameraRender:
        """Ray-trace camera ``camera`` of frame ``frame`` (image, true labels, object ids, depth,
        street-frame surface points)."""
        scene, config = self.scene(scene_index), self.config
        rig = config.cameras.rigs[camera]
        capture = self.capture_seconds(frame, camera)
        rng = np.random.default_rng([self.seed, scene_index, self.scan_of(frame), camera, _CAMERA_STREAM])
        return render_camera(scene, scene.primitives.at_time(capture),
                             scene.ego_to_street(capture) @ camera_to_ego(rig),
                             camera_intrinsics(rig, config.cameras.image_size), config.cameras, rng)

    def cameras(self, scene_index: int, frame: int) -> list[Camera]:
        """The rendered cameras (with true and teacher labels) of frame ``frame``."""
        scene, config = self.scene(scene_index), self.config
        scan = self.scan_of(frame)
        lidar_to_world = scene.ego_to_world(self.scan_time(scan)) @ self._lidar_to_ego
        cameras = []
        for k, rig in enumerate(config.cameras.rigs):
            view = self.render_view(scene_index, frame, k)
            teacher = simulate_teacher_labels(view.labels, view.object_ids, view.points, config.teacher,
                                              SYNTHETIC_CLASSES, (self.seed, scene_index, scan, k),
                                              (self.seed, scene_index))
            capture = self.capture_seconds(frame, k)
            # Full chain: LiDAR -> ego(t_lidar) -> world -> ego(t_camera) -> camera.
            world_to_camera = np.linalg.inv(scene.ego_to_world(capture) @ camera_to_ego(rig))
            cameras.append(Camera(name=rig.name, image=view.image,
                                  K=camera_intrinsics(rig, config.cameras.image_size),
                                  lidar_to_camera=world_to_camera @ lidar_to_world,
                                  timestamp=scene.timestamp_ns(capture), labels=view.labels,
                                  teacher_labels=teacher))
        return cameras


class _StoredWorld(_CachedScans):
    """Reads scans and cameras written by ``write_synthetic_dataset`` (same interface as the world)."""

    def __init__(self, root: Path, num_sweeps: int):
        self.root = root
        super().__init__(num_sweeps)

    def _build_scan(self, scene: int, scan: int) -> Sweep:
        path = self.root / _scene_folder(scene) / f"scan_{scan:04d}.npz"
        data = _read_npz(path, ("points", "intensity", "labels", "timestamp", "lidar_to_ego",
                                "ego_to_world"), optional=("instances",))
        return Sweep(points=data["points"], timestamp=int(data["timestamp"]),
                     lidar_to_ego=data["lidar_to_ego"], ego_to_world=data["ego_to_world"],
                     intensity=data["intensity"], labels=data["labels"], instances=data.get("instances"))

    def _frame_path(self, scene: int, frame: int) -> Path:
        return self.root / _scene_folder(scene) / f"frame_{frame:04d}.npz"

    def frame_scans(self, scene: int, frame: int) -> tuple[int, list[int]]:
        """Stored references: (index of the frame's scan, indices of its sweeps, newest first)."""
        head = _read_npz(self._frame_path(scene, frame), ("scan", "sweep_scans"))
        return int(head["scan"]), [int(scan) for scan in head["sweep_scans"]]

    def cameras(self, scene: int, frame: int) -> list[Camera]:
        path = self._frame_path(scene, frame)
        names = _read_npz(path, ("camera_names",))["camera_names"]
        fields = ("image", "K", "lidar_to_camera", "timestamp", "labels", "teacher_labels")
        record = _read_npz(path, [f"camera{k}_{name}" for k in range(len(names)) for name in fields])
        try:
            return [Camera(name=str(name), image=record[f"camera{k}_image"], K=record[f"camera{k}_K"],
                           lidar_to_camera=record[f"camera{k}_lidar_to_camera"],
                           timestamp=int(record[f"camera{k}_timestamp"]),
                           labels=record[f"camera{k}_labels"].astype(np.int64),
                           teacher_labels=record[f"camera{k}_teacher_labels"].astype(np.int64))
                    for k, name in enumerate(names)]
        except ValueError as error:
            raise ValueError(f"{path} is malformed: {error}") from error


def _scene_folder(scene: int) -> str:
    return f"scene_{scene:04d}"


def _read_npz(path: Path, keys: Sequence[str], optional: Sequence[str] = ()) -> dict:
    """Load ``keys`` and those of ``optional`` present from an npz file; a missing file, a damaged
    archive or a missing key raises an error naming the file."""
    require_file(path, "synthetic dataset file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            arrays = {key: archive[key] for key in (*keys, *optional) if key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as error:
        raise ValueError(f"{path} is not a readable synthetic dataset file: {error}") from error
    if missing:
        raise ValueError(f"{path} is malformed: missing {missing}")
    return arrays


def _read_meta(root: Path) -> dict:
    path = require_file(root / META_FILE, "synthetic dataset metadata")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} metadata file")
    missing = [key for key in ("seed", "num_scenes", "frames_per_scene", "class_names", "config")
               if key not in meta]
    if missing:
        raise ValueError(f"{path} is malformed: missing {missing}")
    if tuple(meta["class_names"]) != SYNTHETIC_CLASSES:
        raise ValueError(f"{path}: class_names {meta['class_names']} differ from {list(SYNTHETIC_CLASSES)}")
    return meta


class SyntheticDataset(Sequence[Frame]):
    """Synthetic frames, generated on demand (``root=None``) or read from a ``clip2scene synth`` folder.

    Frame ``index`` is frame ``index % frames_per_scene`` of scene ``index // frames_per_scene``
    (``frame_id`` "scene_SSSS/frame_FFFF"). With ``root``, seed, sizes and config come from
    ``root/meta.json``; passing a different value raises ValueError. ``with_cameras=False`` skips
    cameras (and their rendering) for LiDAR-only use.
    """

    def __init__(self, root: Optional[Union[str, Path]] = None, seed: Optional[int] = None,
                 num_scenes: Optional[int] = None, frames_per_scene: Optional[int] = None,
                 config: Optional[SyntheticConfig] = None, with_cameras: bool = True):
        requested = {"seed": seed, "num_scenes": num_scenes, "frames_per_scene": frames_per_scene}
        if root is None:
            self.seed = 0 if seed is None else int(seed)
            self.num_scenes = DEFAULT_NUM_SCENES if num_scenes is None else int(num_scenes)
            self.frames_per_scene = DEFAULT_FRAMES_PER_SCENE if frames_per_scene is None \
                else int(frames_per_scene)
            self.config = config or SyntheticConfig()
            self.root = None
            self._source = SyntheticWorld(self.config, self.seed, self.frames_per_scene)
        else:
            self.root = Path(root)
            meta = _read_meta(self.root)
            self.seed, self.num_scenes = int(meta["seed"]), int(meta["num_scenes"])
            self.frames_per_scene = int(meta["frames_per_scene"])
            self.config = SyntheticConfig.from_dict(meta["config"], f"{self.root / META_FILE} config")
            for name, value in requested.items():
                if value is not None and int(value) != getattr(self, name):
                    raise ValueError(f"{name}={value} conflicts with {self.root / META_FILE} "
                                     f"({name}={getattr(self, name)})")
            if config is not None and config != self.config:
                raise ValueError(f"config conflicts with the one stored in {self.root / META_FILE}")
            self._source = _StoredWorld(self.root, self.config.num_sweeps)
        if self.num_scenes < 0:
            raise ValueError(f"num_scenes must be >= 0, got {self.num_scenes}")
        self.with_cameras = with_cameras
        self.class_names = SYNTHETIC_CLASSES

    def __len__(self) -> int:
        return self.num_scenes * self.frames_per_scene

    def locate(self, index: int) -> tuple[int, int]:
        """(scene, frame within the scene) of dataset ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        return divmod(index % len(self), self.frames_per_scene)

    def __getitem__(self, index: int) -> Frame:
        scene, frame = self.locate(index)
        scan, sweep_scans = self._source.frame_scans(scene, frame)
        own = self._source.scan(scene, scan)
        sweeps = [self._source.scan(scene, earlier) for earlier in sweep_scans]
        return Frame(points=own.points, timestamp=own.timestamp, intensity=own.intensity,
                     lidar_to_ego=own.lidar_to_ego, ego_to_world=own.ego_to_world, labels=own.labels,
                     instances=own.instances, class_names=self.class_names,
                     cameras=self._source.cameras(scene, frame) if self.with_cameras else [],
                     sweeps=sweeps, frame_id=f"{_scene_folder(scene)}/frame_{frame:04d}")


def _scan_arrays(scan: Sweep) -> dict:
    return {"points": scan.points, "intensity": scan.intensity, "labels": scan.labels,
            "instances": scan.instances, "timestamp": np.int64(scan.timestamp), "lidar_to_ego": scan.lidar_to_ego,
            "ego_to_world": scan.ego_to_world}


def _frame_arrays(cameras: list[Camera], scan: int, sweep_scans: list[int]) -> dict:
    arrays = {"scan": np.int64(scan), "sweep_scans": np.array(sweep_scans, dtype=np.int64),
              "camera_names": np.array([camera.name for camera in cameras])}
    for k, camera in enumerate(cameras):
        arrays.update({f"camera{k}_image": camera.image, f"camera{k}_K": camera.K,
                       f"camera{k}_lidar_to_camera": camera.lidar_to_camera,
                       f"camera{k}_timestamp": np.int64(camera.timestamp),
                       f"camera{k}_labels": camera.labels.astype(np.uint8),
                       f"camera{k}_teacher_labels": camera.teacher_labels.astype(np.uint8)})
    return arrays


def write_synthetic_dataset(out: Union[str, Path], seed: int = 0, num_scenes: int = DEFAULT_NUM_SCENES,
                            frames_per_scene: int = DEFAULT_FRAMES_PER_SCENE,
                            config: Optional[SyntheticConfig] = None, overwrite: bool = False) -> Path:
    """Generate a synthetic dataset into folder ``out`` (layout: module docstring); returns it.

    Refuses to touch a folder that already holds a dataset unless ``overwrite``.
    """
    out, config = Path(out), config or SyntheticConfig()
    if (out / META_FILE).exists():
        if not overwrite:
            raise ValueError(f"{out} already holds a synthetic dataset ({out / META_FILE}); "
                             "use --overwrite (overwrite=True) to replace it")
        for scene_folder in out.glob("scene_*"):
            shutil.rmtree(scene_folder)
        (out / META_FILE).unlink()
    world = SyntheticWorld(config, seed, frames_per_scene)
    with tqdm(total=num_scenes * frames_per_scene, desc="synth", unit="frame") as progress:
        for scene in range(num_scenes):
            folder = out / _scene_folder(scene)
            folder.mkdir(parents=True, exist_ok=True)
            for scan in range(world.scan_of(frames_per_scene)):
                np.savez_compressed(folder / f"scan_{scan:04d}.npz", **_scan_arrays(world.scan(scene, scan)))
                frame = scan - world.scan_of(0)
                if frame >= 0:
                    arrays = _frame_arrays(world.cameras(scene, frame), *world.frame_scans(scene, frame))
                    np.savez_compressed(folder / f"frame_{frame:04d}.npz", **arrays)
                    progress.update()
    meta = {"format": FORMAT, "seed": int(seed), "num_scenes": int(num_scenes),
            "frames_per_scene": int(frames_per_scene), "class_names": list(SYNTHETIC_CLASSES),
            "config": config.to_dict()}
    (out / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    logger.info("wrote %d synthetic frames to %s", num_scenes * frames_per_scene, out)
    return out
