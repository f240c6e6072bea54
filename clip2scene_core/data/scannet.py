"""ScanNet v2 scenes as ``Frame``s: one per scene, the scene's coloured point cloud in its scan frame.

Point clouds (first found wins):
  * official: ``<root>/<scene>/<scene>_vh_clean_2.ply`` (+ ``<scene>_vh_clean_2.labels.ply``, NYU40 ids);
  * mmdetection3d: ``<root>/points/<scene>.bin`` or ``<root>/<scene>.bin``, float32 (N, 6) x, y, z, r, g, b
    (0..255), with optional ``<root>/semantic_mask/<scene>.bin`` int64 NYU40 ids.
Labels map NYU40 -> the 20 ScanNet benchmark classes. RGB-D frames exported by ScanNet's SensReader
(``<root>/<scene>/{color/<i>.jpg, pose/<i>.txt (camera -> scan frame), intrinsic/intrinsic_color.txt}``)
become cameras: up to ``max_cameras`` evenly spaced frames with a valid pose. The scan frame plays the
LiDAR frame (``lidar_to_ego`` = ``ego_to_world`` = identity).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..frame import Camera, Frame
from . import load_rgb_image, read_records, require_file
from .labels import SCANNET_CLASSES, SCANNET_NYU40_TO_LABEL, lookup_table, map_labels

logger = logging.getLogger(__name__)

LABEL_TABLE = lookup_table(SCANNET_NYU40_TO_LABEL, 41)
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
PLY_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}


def read_ply_vertices(path: Union[str, Path]) -> np.ndarray:
    """Read the vertex element of a PLY file -> structured (V,) array, one field per property.

    Supports ascii and binary PLY whose first element is ``vertex`` with scalar properties (as
    ScanNet's meshes are); later elements (faces) are not read.
    """
    path = require_file(path, "ScanNet PLY file")
    with open(path, "rb") as stream:
        if stream.readline().strip() != b"ply":
            raise ValueError(f"ScanNet PLY file {path} does not start with 'ply'")
        byte_order, element, count, fields = None, None, None, []
        while True:
            line = stream.readline()
            if not line:
                raise ValueError(f"ScanNet PLY file {path} has no end_header")
            words = line.decode("ascii", errors="replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                if words[1] not in PLY_FORMATS:
                    raise ValueError(f"ScanNet PLY file {path} has unknown format {words[1]!r}")
                byte_order = PLY_FORMATS[words[1]]
            elif words[0] == "element":
                if element is None and words[1] != "vertex":
                    raise ValueError(f"ScanNet PLY file {path}: first element is {words[1]!r}, not 'vertex'")
                element = words[1]
                if element == "vertex":
                    count = int(words[2])
            elif words[0] == "property" and element == "vertex":
                if words[1] not in PLY_TYPES:
                    what = " ".join(words[1:])
                    raise ValueError(f"ScanNet PLY file {path}: unsupported vertex property {what}")
                fields.append((words[2], PLY_TYPES[words[1]]))
        if count is None or not fields:
            raise ValueError(f"ScanNet PLY file {path} has no vertex element")
        if byte_order is None:
            values = np.loadtxt(stream, dtype=np.float64, max_rows=count, ndmin=2)
            if values.shape != (count, len(fields)):
                raise ValueError(f"ScanNet PLY file {path}: expected {count} x {len(fields)} ascii values")
            vertices = np.empty(count, dtype=[(name, kind) for name, kind in fields])
            for column, (name, _) in enumerate(fields):
                vertices[name] = values[:, column]
            return vertices
        dtype = np.dtype([(name, byte_order + kind) for name, kind in fields])
        size = count * dtype.itemsize
        data = stream.read(size)
        if len(data) != size:
            raise ValueError(f"ScanNet PLY file {path} is truncated: {len(data)} of {size} vertex bytes")
        return np.frombuffer(data, dtype=dtype)


def read_mesh_scene(mesh: Path):
    """Official layout -> (points (N, 3), rgb (N, 3) 0..255, raw NYU40 ids or None, label path)."""
    vertices = read_ply_vertices(mesh)
    missing = {"x", "y", "z", "red", "green", "blue"} - set(vertices.dtype.names)
    if missing:
        raise ValueError(f"ScanNet PLY file {mesh} lacks vertex properties {sorted(missing)}")
    points = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
    rgb = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1)
    label_path = mesh.with_name(mesh.name.replace(".ply", ".labels.ply"))
    if not label_path.is_file():
        return points, rgb, None, label_path
    label_vertices = read_ply_vertices(label_path)
    if "label" not in label_vertices.dtype.names:
        raise ValueError(f"ScanNet label file {label_path} has no 'label' vertex property")
    return points, rgb, label_vertices["label"], label_path


def read_matrix(path: Path, what: str) -> np.ndarray:
    """Read a whitespace-separated 4x4 matrix text file (ScanNet poses and intrinsics) -> float64."""
    path = require_file(path, what)
    try:
        matrix = np.loadtxt(path, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{what} {path} is malformed: {error}") from error
    if matrix.shape != (4, 4):
        raise ValueError(f"{what} {path} must hold a 4x4 matrix, got shape {matrix.shape}")
    return matrix


class ScanNetDataset(Sequence[Frame]):
    """ScanNet scenes as ``Frame``s (see the module docstring for the layouts read).

    root: folder holding the scenes; scenes: scene names (None = every scene found, or the names in
    ``<root>/scannetv2_<split>.txt`` when ``split`` is given); max_cameras: RGB-D frames per scene to
    attach as cameras (0 = none).
    """

    class_names = SCANNET_CLASSES

    def __init__(
        self,
        root: Union[str, Path],
        scenes: Optional[Sequence[str]] = None,
        split: Optional[str] = None,
        max_cameras: int = 8,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ScanNet root folder not found: {self.root}")
        if max_cameras < 0:
            raise ValueError(f"max_cameras must be >= 0, got {max_cameras}")
        if scenes is None and split is not None:
            split_file = require_file(self.root / f"scannetv2_{split}.txt", "ScanNet split list")
            scenes = split_file.read_text().split()
        self.scenes = list(scenes) if scenes is not None else self._discover_scenes()
        if not self.scenes:
            raise FileNotFoundError(f"no ScanNet scenes (*_vh_clean_2.ply or *.bin) in {self.root}")
        self.max_cameras = max_cameras

    def _discover_scenes(self) -> list[str]:
        meshes = self.root.glob("*/*_vh_clean_2.ply")
        names = {p.parent.name for p in meshes if p.stem == f"{p.parent.name}_vh_clean_2"}
        names |= {p.stem for p in self.root.glob("points/*.bin")}
        names |= {p.stem for p in self.root.glob("*.bin")}
        return sorted(names)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} ScanNet scenes")
        scene = self.scenes[index]
        points, colors, labels = self._read_scene(scene)
        return Frame(
            points=points,
            colors=colors,
            labels=labels,
            class_names=self.class_names,
            cameras=self._cameras(scene),
            frame_id=scene,
        )

    def _read_scene(self, scene: str) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """points (N, 3) float32 metres, colors (N, 3) float32 0..1, labels (N,) int64 or None."""
        mesh = self.root / scene / f"{scene}_vh_clean_2.ply"
        if mesh.is_file():
            points, rgb, raw, label_path = read_mesh_scene(mesh)
        else:
            points, rgb, raw, label_path = self._read_bin_scene(scene, mesh)
        if raw is not None and len(raw) != len(points):
            raise ValueError(f"ScanNet label file {label_path}: {len(raw)} labels for {len(points)} points")
        labels = None if raw is None else map_labels(raw, LABEL_TABLE)
        return points.astype(np.float32), rgb.astype(np.float32) / 255.0, labels

    def _read_bin_scene(self, scene: str, mesh: Path):
        """mmdetection3d layout -> (points (N, 3), rgb (N, 3) 0..255, raw NYU40 ids or None, label path)."""
        candidates = (self.root / "points" / f"{scene}.bin", self.root / f"{scene}.bin")
        cloud_path = next((p for p in candidates if p.is_file()), None)
        if cloud_path is None:
            tried = ", ".join(str(p) for p in (mesh,) + candidates)
            raise FileNotFoundError(f"ScanNet scene {scene!r} not found (tried {tried})")
        cloud = read_records(cloud_path, np.float32, 6, "ScanNet point file")
        label_path = self.root / "semantic_mask" / f"{scene}.bin"
        raw = None
        if label_path.is_file():
            raw = read_records(label_path, np.int64, 1, "ScanNet label file")[:, 0]
        return cloud[:, :3], cloud[:, 3:6], raw, label_path

    def _cameras(self, scene: str) -> list[Camera]:
        folder = self.root / scene
        frame_ids = sorted((p.stem for p in folder.glob("color/*.jpg")), key=lambda s: (len(s), s))
        if not self.max_cameras or not frame_ids:
            return []
        K = read_matrix(folder / "intrinsic" / "intrinsic_color.txt", "ScanNet colour intrinsics")[:3, :3]
        picks = np.unique(np.linspace(0, len(frame_ids) - 1, self.max_cameras).round().astype(int))
        cameras = []
        for frame_id in (frame_ids[i] for i in picks):
            camera_to_scan = read_matrix(folder / "pose" / f"{frame_id}.txt", "ScanNet camera pose")
            if not np.all(np.isfinite(camera_to_scan)):
                logger.debug("ScanNet %s frame %s: invalid pose, skipped", scene, frame_id)
                continue  # SensReader writes -inf poses where tracking failed
            cameras.append(
                Camera(
                    name=f"color/{frame_id}",
                    image=load_rgb_image(folder / "color" / f"{frame_id}.jpg", "ScanNet colour image"),
                    K=K,
                    lidar_to_camera=np.linalg.inv(camera_to_scan),
                )
            )
        return cameras
