"""SemanticKITTI scans (KITTI odometry layout) as ``Frame``s.

Layout: ``<root>/sequences/XX/{velodyne/*.bin, labels/*.label, calib.txt, poses.txt[, times.txt]
[, image_2/*.png]}``. Scans are float32 (N, 4): x, y, z (metres, velodyne frame), remission 0..1.
Labels are uint32: the lower 16 bits are the raw class id, mapped to the 19 evaluation classes, and
the upper 16 bits the instance number of a thing object (0 for stuff). Instances are numbered per class
(a car and a person can both be instance 1), so ``frame.instances`` keeps the instance number in its
upper 16 bits and puts the evaluation class in the lower 16: unique within the cloud, 0 where the
file has no instance or the class is ignored.
``poses.txt`` gives camera-0 poses relative to the sequence's first camera-0 frame, so a scan's
LiDAR pose is ``inv(Tr) @ pose @ Tr`` (world = the first scan's LiDAR frame); ``frame.lidar_to_ego``
is the identity.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..frame import Camera, Frame, Sweep
from . import load_rgb_image, read_records, require_file
from .labels import SEMANTICKITTI_CLASSES, SEMANTICKITTI_LEARNING_MAP, lookup_table, map_labels

logger = logging.getLogger(__name__)

SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "val": ("08",),
    "test": tuple(f"{i:02d}" for i in range(11, 22)),
}
SCAN_PERIOD_S = 0.1  # Velodyne HDL-64E at 10 Hz, used when times.txt is absent
LABEL_TABLE = lookup_table(SEMANTICKITTI_LEARNING_MAP, 1 << 16)


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """Parse a KITTI odometry ``calib.txt`` ("KEY: v1 v2 ..." lines) -> {key: (3, 4) float64}."""
    path = require_file(path, "SemanticKITTI calibration")
    calib = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, values = line.partition(":")
        try:
            numbers = np.array(values.split(), dtype=np.float64)
        except ValueError:
            numbers = np.array([])
        if not sep or numbers.size != 12:
            raise ValueError(f"SemanticKITTI calibration {path} line {number} is not 'KEY: 12 numbers'")
        calib[key.strip()] = numbers.reshape(3, 4)
    if "Tr" not in calib:
        raise ValueError(f"SemanticKITTI calibration {path} has no Tr (velodyne -> camera 0) entry")
    return calib


def to_homogeneous(matrix_3x4: np.ndarray) -> np.ndarray:
    """(3, 4) [R | t] -> (4, 4) float64."""
    matrix = np.eye(4)
    matrix[:3] = matrix_3x4
    return matrix


def read_poses(path: Path) -> np.ndarray:
    """Parse ``poses.txt`` (12 numbers per line, row-major 3x4) -> (S, 4, 4) float64."""
    path = require_file(path, "SemanticKITTI poses")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"SemanticKITTI poses {path} is malformed: {error}") from error
    if values.shape[1] != 12:
        raise ValueError(f"SemanticKITTI poses {path} must hold 12 numbers per line, got {values.shape[1]}")
    poses = np.tile(np.eye(4), (len(values), 1, 1))
    poses[:, :3] = values.reshape(-1, 3, 4)
    return poses


def read_times(path: Path) -> np.ndarray:
    """Parse ``times.txt`` (one scan time per line, seconds) -> (S,) int64 nanoseconds."""
    try:
        seconds = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as error:
        raise ValueError(f"SemanticKITTI times {path} is malformed: {error}") from error
    if seconds.ndim != 1:
        raise ValueError(f"SemanticKITTI times {path} must hold one number per line")
    return np.round(seconds * 1e9).astype(np.int64)


def camera_from_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a rectified KITTI projection ``P = K [I | t]`` (3, 4) into K (3, 3) and the (4, 4)
    rectified-camera-0 -> this-camera transform."""
    K = P[:, :3].copy()
    camera0_to_camera = np.eye(4)
    camera0_to_camera[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, camera0_to_camera


@dataclass
class KittiSequence:
    """One sequence folder's calibration, poses, scan times and scan ids."""

    folder: Path
    scan_ids: list[str]  # file stems, e.g. "000123"
    velodyne_to_camera0: np.ndarray  # (4, 4) Tr
    lidar_to_world: np.ndarray  # (S, 4, 4), world = first scan's LiDAR frame
    times_ns: Optional[np.ndarray]  # (S,) int64 or None (then 10 Hz is assumed)
    P2: Optional[np.ndarray]  # (3, 4) left colour camera projection

    @classmethod
    def load(cls, folder: Path) -> "KittiSequence":
        scan_ids = sorted(p.stem for p in (folder / "velodyne").glob("*.bin"))
        calib = read_calib(folder / "calib.txt")
        tr = to_homogeneous(calib["Tr"])
        poses = read_poses(folder / "poses.txt")
        times_path = folder / "times.txt"
        times_ns = read_times(times_path) if times_path.is_file() else None
        return cls(
            folder=folder,
            scan_ids=scan_ids,
            velodyne_to_camera0=tr,
            # A true inverse: calib rotations are rounded, so R^T would not undo Tr exactly.
            lidar_to_world=np.linalg.inv(tr) @ poses @ tr,
            times_ns=times_ns,
            P2=calib.get("P2"),
        )

    def pose(self, scan: int) -> np.ndarray:
        if scan >= len(self.lidar_to_world):
            raise ValueError(f"SemanticKITTI poses {self.folder / 'poses.txt'} has no line for scan {scan}")
        return self.lidar_to_world[scan]

    def timestamp(self, scan: int) -> int:
        if self.times_ns is None:
            return int(round(scan * SCAN_PERIOD_S * 1e9))
        if scan >= len(self.times_ns):
            raise ValueError(f"SemanticKITTI times {self.folder / 'times.txt'} has no line for scan {scan}")
        return int(self.times_ns[scan])


def find_sequences_folder(root: Path) -> Path:
    """``root/sequences`` when present, else ``root`` itself if it holds sequence folders."""
    if not root.is_dir():
        raise FileNotFoundError(f"SemanticKITTI root folder not found: {root}")
    if (root / "sequences").is_dir():
        return root / "sequences"
    if any((child / "velodyne").is_dir() for child in root.iterdir()):
        return root
    raise FileNotFoundError(f"SemanticKITTI sequences folder not found: {root / 'sequences'}")


class SemanticKittiDataset(Sequence[Frame]):
    """SemanticKITTI scans as ``Frame``s (one per ``velodyne/*.bin``).

    root: dataset folder holding ``sequences/``; split: "train", "val" or "test" (standard sequence
    split) or None; sequences: explicit sequence names (overrides ``split``; None = all present);
    num_prev_sweeps / max_sweep_seconds: earlier scans attached as sweeps; cameras: load
    ``image_2`` (P2) as a camera when the images exist.
    """

    class_names = SEMANTICKITTI_CLASSES

    def __init__(
        self,
        root: Union[str, Path],
        split: Optional[str] = None,
        sequences: Optional[Sequence[Union[str, int]]] = None,
        num_prev_sweeps: int = 2,
        max_sweep_seconds: float = 0.5,
        cameras: bool = True,
    ) -> None:
        base = find_sequences_folder(Path(root))
        if sequences is not None:
            names = [f"{int(s):02d}" if str(s).isdigit() else str(s) for s in sequences]
        elif split is not None:
            if split not in SPLITS:
                raise ValueError(f"unknown SemanticKITTI split {split!r}; choose from {sorted(SPLITS)}")
            names = [s for s in SPLITS[split] if (base / s).is_dir()]
        else:
            names = sorted(p.name for p in base.iterdir() if (p / "velodyne").is_dir())
        self.sequences = {}
        for name in names:
            folder = base / name
            if not (folder / "velodyne").is_dir():
                raise FileNotFoundError(f"SemanticKITTI scan folder not found: {folder / 'velodyne'}")
            self.sequences[name] = KittiSequence.load(folder)
        self.index = [(name, scan_id) for name, seq in self.sequences.items() for scan_id in seq.scan_ids]
        if not self.index:
            raise FileNotFoundError(f"no SemanticKITTI scans (velodyne/*.bin) under {base}")
        self.num_prev_sweeps = num_prev_sweeps
        self.max_sweep_seconds = max_sweep_seconds
        self.cameras = cameras

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} SemanticKITTI scans")
        name, scan_id = self.index[index]
        seq = self.sequences[name]
        scan = int(scan_id)
        points, remission = read_scan(seq.folder / "velodyne" / f"{scan_id}.bin")
        labels, instances = read_labels(seq.folder, scan_id, len(points))
        return Frame(
            points=points,
            intensity=remission,
            timestamp=seq.timestamp(scan),
            ego_to_world=seq.pose(scan),
            labels=labels,
            instances=instances,
            class_names=self.class_names,
            cameras=self._cameras(seq, scan_id, scan),
            sweeps=self._sweeps(seq, scan),
            frame_id=f"{name}/{scan_id}",
        )

    def _cameras(self, seq: KittiSequence, scan_id: str, scan: int) -> list[Camera]:
        image_path = seq.folder / "image_2" / f"{scan_id}.png"
        if not self.cameras or not (seq.folder / "image_2").is_dir():
            return []
        if seq.P2 is None:
            raise ValueError(f"SemanticKITTI calibration {seq.folder / 'calib.txt'} has no P2 for image_2")
        K, camera0_to_camera2 = camera_from_projection(seq.P2)
        return [
            Camera(
                name="image_2",
                image=load_rgb_image(image_path, "SemanticKITTI image_2 image"),
                K=K,
                lidar_to_camera=camera0_to_camera2 @ seq.velodyne_to_camera0,
                timestamp=seq.timestamp(scan),
            )
        ]

    def _sweeps(self, seq: KittiSequence, scan: int) -> list[Sweep]:
        """Earlier scans of the same sequence, newest first, within ``max_sweep_seconds``."""
        sweeps = []
        now = seq.timestamp(scan)
        width = len(seq.scan_ids[0])
        for previous in range(scan - 1, max(scan - 1 - self.num_prev_sweeps, -1), -1):
            scan_id = f"{previous:0{width}d}"
            path = seq.folder / "velodyne" / f"{scan_id}.bin"
            if not path.is_file() or (now - seq.timestamp(previous)) * 1e-9 > self.max_sweep_seconds:
                break
            points, remission = read_scan(path)
            labels, instances = read_labels(seq.folder, scan_id, len(points))
            sweeps.append(
                Sweep(
                    points=points,
                    intensity=remission,
                    timestamp=seq.timestamp(previous),
                    lidar_to_ego=np.eye(4),
                    ego_to_world=seq.pose(previous),
                    labels=labels,
                    instances=instances,
                )
            )
        return sweeps


def read_scan(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a velodyne ``.bin`` -> points (N, 3) float32 metres, remission (N,) float32 0..1."""
    scan = read_records(path, np.float32, 4, "SemanticKITTI scan")
    return scan[:, :3], scan[:, 3]


def read_labels(sequence_folder: Path, scan_id: str,
                num_points: int) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """A scan's 19-class labels (N,) int64 and instance ids (N,) uint32 (see the module docstring),
    or (None, None) when the sequence has no ``labels/`` folder."""
    if not (sequence_folder / "labels").is_dir():
        return None, None
    path = sequence_folder / "labels" / f"{scan_id}.label"
    raw = read_records(path, np.uint32, 1, "SemanticKITTI label file")[:, 0]
    if len(raw) != num_points:
        raise ValueError(f"SemanticKITTI label file {path} has {len(raw)} labels for {num_points} points")
    labels = map_labels(raw & 0xFFFF, LABEL_TABLE)
    instance = raw >> 16
    instances = np.where((instance > 0) & (labels > 0), (instance << 16) | labels.astype(np.uint32), 0)
    return labels, instances.astype(np.uint32)
