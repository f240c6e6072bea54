"""nuScenes (with nuScenes-lidarseg) keyframes as ``Frame``s, read through the official devkit.

Each frame is one sample's LIDAR_TOP keyframe with its six camera images, up to N earlier LiDAR
sweeps (walking ``sample_data.prev``) and, where lidarseg labels exist, labels in the 16-class
evaluation space. Where nuScenes-panoptic files exist (``panoptic/<version>/<token>_panoptic.npz``,
listed in ``panoptic.json`` or found at that path; key ``data``: lidarseg index * 1000 + instance
number, 0 for stuff), ``frame.instances`` is that value for the points of an object of an evaluated
class (unique within the cloud) and 0 elsewhere; without lidarseg files the labels come from the
panoptic file's class half, as the devkit's ``gt_from="panoptic"`` reads them. Camera extrinsics compose the devkit's chain
LiDAR -> ego(t_lidar) -> world -> ego(t_cam) -> camera into ``Camera.lidar_to_camera``.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..frame import Camera, Frame, Sweep
from ..geometry import invert_rigid, pose_matrix
from . import load_rgb_image, read_records, require_file
from .labels import NUSCENES_CATEGORY_TO_LABEL, NUSCENES_CLASSES, map_labels

logger = logging.getLogger(__name__)

CAMERA_CHANNELS = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT",
)
LIDAR_CHANNEL = "LIDAR_TOP"
VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
INTENSITY_SCALE = 255.0  # nuScenes stores intensity as 0..255; frames carry 0..1
PANOPTIC_DIVISOR = 1000  # a panoptic value is lidarseg index * 1000 + instance number


def find_version(root: Path) -> str:
    """The one nuScenes version folder (v1.0-trainval, v1.0-mini, v1.0-test) under ``root``."""
    present = [v for v in VERSIONS if (root / v).is_dir()]
    if not present:
        raise FileNotFoundError(f"no nuScenes table folder ({', '.join(VERSIONS)}) under {root}")
    return present[0]


def open_nuscenes(root: Union[str, Path], version: Optional[str] = None):
    """Open the devkit's ``NuScenes`` database quietly; missing or malformed tables raise clearly."""
    from nuscenes.nuscenes import NuScenes  # slow import: only when nuScenes is used

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"nuScenes root folder not found: {root}")
    version = version or find_version(root)
    if not (root / version).is_dir():
        raise FileNotFoundError(f"nuScenes table folder not found: {root / version}")
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (json.JSONDecodeError, AssertionError, KeyError) as error:
        raise ValueError(f"nuScenes tables under {root / version} are malformed: {error!r}") from error


def category_label_table(nusc) -> np.ndarray:
    """Lidarseg category index (0..31) -> 16-class label (0 = ignore), from the dataset's category table."""
    table = np.zeros(256, dtype=np.int64)
    for category in nusc.category:
        if "index" in category:
            table[category["index"]] = NUSCENES_CATEGORY_TO_LABEL.get(category["name"], 0)
    return table


class NuScenesDataset(Sequence[Frame]):
    """nuScenes keyframes as ``Frame``s.

    root: the nuScenes dataroot (holds ``samples/``, ``sweeps/``, ``lidarseg/`` and ``v1.0-*``);
    version: table folder, None = the one present; split: a devkit scene split ("train", "val",
    "mini_train", ...), None = every sample; num_prev_sweeps: earlier LiDAR sweeps to attach (fewer
    when the scene starts sooner or they are older than ``max_sweep_seconds``); cameras: channels to
    load (empty = LiDAR only); nusc: an already opened devkit ``NuScenes`` to reuse.
    """

    class_names = NUSCENES_CLASSES

    def __init__(
        self,
        root: Union[str, Path],
        version: Optional[str] = None,
        split: Optional[str] = None,
        num_prev_sweeps: int = 2,
        max_sweep_seconds: float = 0.5,
        cameras: Sequence[str] = CAMERA_CHANNELS,
        nusc=None,
    ) -> None:
        unknown = sorted(set(cameras) - set(CAMERA_CHANNELS))
        if unknown:
            raise ValueError(f"unknown nuScenes camera channels {unknown}; choose from {CAMERA_CHANNELS}")
        if num_prev_sweeps < 0:
            raise ValueError(f"num_prev_sweeps must be >= 0, got {num_prev_sweeps}")
        self.nusc = nusc if nusc is not None else open_nuscenes(root, version)
        self.root = Path(self.nusc.dataroot)
        self.num_prev_sweeps = num_prev_sweeps
        self.max_sweep_seconds = max_sweep_seconds
        self.cameras = tuple(cameras)
        self.label_table = category_label_table(self.nusc)
        # sample_data token -> lidarseg label file (relative to root)
        self.label_files = {r["sample_data_token"]: r["filename"] for r in getattr(self.nusc, "lidarseg", [])}
        self.panoptic_files = {r["sample_data_token"]: r["filename"] for r in getattr(self.nusc, "panoptic", [])}
        self.sample_tokens = self._select_samples(split)

    def _select_samples(self, split: Optional[str]) -> list[str]:
        samples = sorted(self.nusc.sample, key=lambda s: (s["scene_token"], s["timestamp"]))
        if split is None:
            return [s["token"] for s in samples]
        from nuscenes.utils.splits import create_splits_scenes

        splits = create_splits_scenes(verbose=False)
        if split not in splits:
            raise ValueError(f"unknown nuScenes split {split!r}; choose from {sorted(splits)}")
        wanted = set(splits[split])
        scene_names = {scene["token"]: scene["name"] for scene in self.nusc.scene}
        return [s["token"] for s in samples if scene_names[s["scene_token"]] in wanted]

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} nuScenes samples")
        sample = self.nusc.get("sample", self.sample_tokens[index])
        lidar = self.nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
        cloud = self._read_cloud(lidar)
        lidar_to_ego, ego_to_world = self._sensor_poses(lidar)
        labels = self._read_labels(lidar["token"], len(cloud))
        panoptic = self._read_panoptic(lidar["token"], len(cloud))
        instances = None
        if panoptic is not None:
            panoptic_labels = map_labels(panoptic // PANOPTIC_DIVISOR, self.label_table)
            labels = panoptic_labels if labels is None else labels
            instances = np.where((panoptic % PANOPTIC_DIVISOR > 0) & (panoptic_labels > 0), panoptic, 0)
        return Frame(
            points=cloud[:, :3],
            intensity=cloud[:, 3] / INTENSITY_SCALE,
            timestamp=int(lidar["timestamp"]) * 1000,
            lidar_to_ego=lidar_to_ego,
            ego_to_world=ego_to_world,
            labels=labels,
            instances=instances,
            class_names=self.class_names,
            cameras=[self._camera(sample, channel, lidar_to_ego, ego_to_world) for channel in self.cameras],
            sweeps=self._sweeps(lidar),
            frame_id=sample["token"],
        )

    def _read_cloud(self, sample_data: dict) -> np.ndarray:
        """(N, 5) float32: x, y, z (metres, LiDAR frame), intensity 0..255, ring index."""
        return read_records(self.root / sample_data["filename"], np.float32, 5, "nuScenes LiDAR file")

    def _sensor_poses(self, sample_data: dict) -> tuple[np.ndarray, np.ndarray]:
        """(sensor_to_ego, ego_to_world) 4x4 at this sample_data's timestamp."""
        sensor = self.nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
        ego = self.nusc.get("ego_pose", sample_data["ego_pose_token"])
        return (
            pose_matrix(sensor["translation"], sensor["rotation"]),
            pose_matrix(ego["translation"], ego["rotation"]),
        )

    def _read_labels(self, lidar_token: str, num_points: int) -> Optional[np.ndarray]:
        if lidar_token not in self.label_files:
            return None
        path = self.root / self.label_files[lidar_token]
        raw = read_records(path, np.uint8, 1, "nuScenes lidarseg file")[:, 0]
        if len(raw) != num_points:
            raise ValueError(f"nuScenes lidarseg file {path} has {len(raw)} labels for {num_points} points")
        return map_labels(raw, self.label_table)

    def _read_panoptic(self, lidar_token: str, num_points: int) -> Optional[np.ndarray]:
        """Raw panoptic values (N,) int64 of a keyframe, or None when it has no panoptic file."""
        if lidar_token in self.panoptic_files:
            path = require_file(self.root / self.panoptic_files[lidar_token], "nuScenes panoptic file")
        else:
            path = self.root / "panoptic" / self.nusc.version / f"{lidar_token}_panoptic.npz"
            if not path.is_file():
                return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                values = archive["data"]
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as error:
            raise ValueError(f"nuScenes panoptic file {path} is malformed: {error}") from error
        if values.shape != (num_points,) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"nuScenes panoptic file {path} is malformed: 'data' is {values.dtype} "
                             f"{values.shape}, expected integer ({num_points},)")
        return values.astype(np.int64)

    def _camera(
        self, sample: dict, channel: str, lidar_to_ego: np.ndarray, ego_to_world: np.ndarray
    ) -> Camera:
        if channel not in sample["data"]:
            raise ValueError(f"nuScenes sample {sample['token']} has no {channel} image")
        record = self.nusc.get("sample_data", sample["data"][channel])
        camera_to_ego, camera_ego_to_world = self._sensor_poses(record)
        sensor = self.nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        lidar_to_camera = (
            invert_rigid(camera_to_ego) @ invert_rigid(camera_ego_to_world) @ ego_to_world @ lidar_to_ego
        )
        return Camera(
            name=channel,
            image=load_rgb_image(self.root / record["filename"], f"nuScenes {channel} image"),
            K=np.asarray(sensor["camera_intrinsic"], dtype=np.float64),
            lidar_to_camera=lidar_to_camera,
            timestamp=int(record["timestamp"]) * 1000,
        )

    def _sweeps(self, keyframe: dict) -> list[Sweep]:
        """Up to ``num_prev_sweeps`` earlier LiDAR scans within ``max_sweep_seconds``, newest first."""
        sweeps = []
        record = keyframe
        while len(sweeps) < self.num_prev_sweeps and record["prev"]:
            record = self.nusc.get("sample_data", record["prev"])
            if (keyframe["timestamp"] - record["timestamp"]) * 1e-6 > self.max_sweep_seconds:
                break
            cloud = self._read_cloud(record)
            lidar_to_ego, ego_to_world = self._sensor_poses(record)
            sweeps.append(
                Sweep(
                    points=cloud[:, :3],
                    intensity=cloud[:, 3] / INTENSITY_SCALE,
                    timestamp=int(record["timestamp"]) * 1000,
                    lidar_to_ego=lidar_to_ego,
                    ego_to_world=ego_to_world,
                )
            )
        if len(sweeps) < self.num_prev_sweeps:
            logger.debug("LiDAR %s: %d of %d sweeps", keyframe["token"], len(sweeps), self.num_prev_sweeps)
        return sweeps
