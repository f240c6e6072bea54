"""ScanNet loader: the real mmdetection3d point cloud, the official mesh + labels layout with an RGB-D
frame, NYU40 -> ScanNet20 labels, and errors that name the bad file."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip2scene_core.data import open_dataset
from clip2scene_core.data.labels import SCANNET_CLASSES
from clip2scene_core.data.scannet import ScanNetDataset, read_ply_vertices
from clip2scene_core.geometry import project_frame

VERTICES = np.array(
    [[4.0, 2.0, 1.5], [4.0, 1.5, 1.5], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 0.5, 0.2], [3.0, 3.0, 3.0]]
)
RGB = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [0, 0, 0], [255, 255, 255]], np.uint8)
NYU40 = np.array([1, 2, 39, 40, 0, 13], np.uint16)  # wall, floor, otherfurniture, otherprop, none, pillow
K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
# Camera at (1, 2, 1.5) looking along scan +x: camera x = -y, camera y = -z, camera z = +x.
CAMERA_TO_SCAN = np.array([[0, 0, 1, 1.0], [-1, 0, 0, 2.0], [0, -1, 0, 1.5], [0, 0, 0, 1]])


def write_ply(path: Path, columns: dict[str, np.ndarray], ascii_format: bool = False) -> None:
    """A PLY with a vertex element (one property per column) followed by two triangles."""
    count = len(next(iter(columns.values())))
    kinds = {np.dtype("float32"): "float", np.dtype("uint8"): "uchar", np.dtype("uint16"): "ushort"}
    header = ["ply", f"format {'ascii' if ascii_format else 'binary_little_endian'} 1.0", "comment test",
              f"element vertex {count}"]
    header += [f"property {kinds[v.dtype]} {k}" for k, v in columns.items()]
    header += ["element face 2", "property list uchar int vertex_indices", "end_header"]
    if ascii_format:
        rows = [" ".join(str(columns[k][i]) for k in columns) for i in range(count)]
        path.write_text("\n".join(header + rows + ["3 0 1 2", "3 1 2 3"]) + "\n")
        return
    vertices = np.empty(count, dtype=[(k, v.dtype.newbyteorder("<")) for k, v in columns.items()])
    for k, v in columns.items():
        vertices[k] = v
    face_type = [("n", "u1"), ("a", "<i4"), ("b", "<i4"), ("c", "<i4")]
    faces = np.array([(3, 0, 1, 2), (3, 1, 2, 3)], dtype=face_type)
    path.write_bytes(("\n".join(header) + "\n").encode() + vertices.tobytes() + faces.tobytes())


def write_official_scene(root: Path, scene: str = "scene0001_00", ascii_format: bool = False) -> Path:
    folder = root / scene
    folder.mkdir(parents=True)
    xyz = {axis: VERTICES[:, i].astype(np.float32) for i, axis in enumerate("xyz")}
    colours = {name: RGB[:, i] for i, name in enumerate(("red", "green", "blue"))}
    alpha = {"alpha": np.full(len(VERTICES), 255, np.uint8)}
    write_ply(folder / f"{scene}_vh_clean_2.ply", {**xyz, **colours, **alpha}, ascii_format)
    labelled = {**xyz, **colours, **alpha, "label": NYU40}
    write_ply(folder / f"{scene}_vh_clean_2.labels.ply", labelled, ascii_format)
    return folder


def write_rgbd_frames(folder: Path, poses: dict[str, np.ndarray]) -> None:
    for sub in ("color", "depth", "pose", "intrinsic"):
        (folder / sub).mkdir()
    intrinsic = np.eye(4)
    intrinsic[:3, :3] = K
    np.savetxt(folder / "intrinsic" / "intrinsic_color.txt", intrinsic)
    for frame_id, pose in poses.items():
        Image.new("RGB", (64, 48), (90, 120, 150)).save(folder / "color" / f"{frame_id}.jpg")
        Image.fromarray(np.full((48, 64), 3000, np.uint16)).save(folder / "depth" / f"{frame_id}.png")
        np.savetxt(folder / "pose" / f"{frame_id}.txt", pose)


def test_real_mmdet3d_point_cloud(real_data):
    dataset = open_dataset("scannet", real_data / "scannet")
    assert dataset.scenes == ["scene0000_00"] and dataset.class_names == SCANNET_CLASSES
    frame = dataset[0]
    raw = np.fromfile(real_data / "scannet" / "scene0000_00.bin", dtype=np.float32).reshape(-1, 6)
    assert frame.num_points == 40684 and frame.frame_id == "scene0000_00"
    np.testing.assert_array_equal(frame.points, raw[:, :3])
    np.testing.assert_allclose(frame.colors, raw[:, 3:] / 255.0)
    assert frame.labels is None and frame.cameras == [] and frame.intensity is None


@pytest.mark.parametrize("ascii_format", [False, True])
def test_official_mesh_labels_map_nyu40_to_scannet20(tmp_path, ascii_format):
    write_official_scene(tmp_path, ascii_format=ascii_format)
    frame = ScanNetDataset(tmp_path)[0]
    np.testing.assert_allclose(frame.points, VERTICES)
    np.testing.assert_allclose(frame.colors, RGB / 255.0)
    names = ["ignore" if c == 0 else SCANNET_CLASSES[c - 1] for c in frame.labels]
    assert names == ["wall", "floor", "otherfurniture", "ignore", "ignore", "ignore"]


def test_rgbd_frames_become_cameras_and_invalid_poses_are_skipped(tmp_path):
    folder = write_official_scene(tmp_path)
    invalid = np.full((4, 4), -np.inf)
    poses = {"0": CAMERA_TO_SCAN, "20": invalid, "40": CAMERA_TO_SCAN, "100": CAMERA_TO_SCAN}
    write_rgbd_frames(folder, poses)
    frame = ScanNetDataset(tmp_path, max_cameras=4)[0]
    assert [c.name for c in frame.cameras] == ["color/0", "color/40", "color/100"]  # numeric order
    assert [c.name for c in ScanNetDataset(tmp_path, max_cameras=2)[0].cameras] == ["color/0", "color/100"]
    camera = frame.cameras[0]
    assert camera.image.shape == (48, 64, 3)
    np.testing.assert_allclose(camera.K, K)
    hit = project_frame(frame, 0, min_depth=0.1)
    # (4, 2, 1.5) is 3 m straight ahead -> principal point; (4, 1.5, 1.5) is 0.5 m right -> u = 32 + 50/3.
    assert hit.indices.tolist() == [0, 1]
    np.testing.assert_allclose(hit.pixels, [[32.0, 24.0], [32.0 + 50.0 / 3.0, 24.0]], atol=1e-4)
    np.testing.assert_allclose(hit.depth, [3.0, 3.0], atol=1e-6)
    assert ScanNetDataset(tmp_path, max_cameras=0)[0].cameras == []


def test_mmdet3d_layout_with_semantic_mask(tmp_path):
    (tmp_path / "points").mkdir()
    (tmp_path / "semantic_mask").mkdir()
    np.hstack([VERTICES, RGB]).astype(np.float32).tofile(tmp_path / "points" / "scene0002_00.bin")
    NYU40.astype(np.int64).tofile(tmp_path / "semantic_mask" / "scene0002_00.bin")
    frame = ScanNetDataset(tmp_path)[0]
    assert frame.frame_id == "scene0002_00"
    assert frame.labels.tolist() == [1, 2, 20, 0, 0, 0]


def test_read_ply_vertices_reads_typed_fields(tmp_path):
    write_official_scene(tmp_path)
    vertices = read_ply_vertices(tmp_path / "scene0001_00" / "scene0001_00_vh_clean_2.labels.ply")
    assert vertices.dtype.names == ("x", "y", "z", "red", "green", "blue", "alpha", "label")
    assert vertices["label"].tolist() == NYU40.tolist()


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="scannet-nowhere"):
        ScanNetDataset(tmp_path / "scannet-nowhere")
    with pytest.raises(FileNotFoundError, match="no ScanNet scenes"):
        ScanNetDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="scannetv2_val.txt"):
        ScanNetDataset(tmp_path, split="val")
    folder = write_official_scene(tmp_path)
    write_rgbd_frames(folder, {"0": CAMERA_TO_SCAN})
    with pytest.raises(FileNotFoundError, match="scene0009_00"):
        ScanNetDataset(tmp_path, scenes=["scene0009_00"])[0]
    (folder / "pose" / "0.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=re.escape(str(folder / "pose" / "0.txt"))):
        ScanNetDataset(tmp_path)[0]
    (folder / "pose" / "0.txt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / "pose" / "0.txt"))):
        ScanNetDataset(tmp_path)[0]
    (folder / "intrinsic" / "intrinsic_color.txt").unlink()
    with pytest.raises(FileNotFoundError, match="intrinsic_color.txt"):
        ScanNetDataset(tmp_path)[0]
    labels = folder / "scene0001_00_vh_clean_2.labels.ply"
    labels.write_bytes(labels.read_bytes()[:-60])  # cuts into the vertex block
    with pytest.raises(ValueError, match=re.escape(str(labels))):
        ScanNetDataset(tmp_path, max_cameras=0)[0]
    write_ply(labels, {"x": VERTICES[:2, 0].astype(np.float32), "label": NYU40[:2]})
    with pytest.raises(ValueError, match=re.escape(f"{labels}: 2 labels for 6 points")):
        ScanNetDataset(tmp_path, max_cameras=0)[0]
    mesh = folder / "scene0001_00_vh_clean_2.ply"
    mesh.write_text("not a ply\n")
    with pytest.raises(ValueError, match=re.escape(str(mesh))):
        ScanNetDataset(tmp_path)[0]
    (tmp_path / "scene0003_00.bin").write_bytes(np.zeros(7, np.float32).tobytes())
    with pytest.raises(ValueError, match="scene0003_00.bin"):
        ScanNetDataset(tmp_path, scenes=["scene0003_00"])[0]
