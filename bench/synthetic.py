"""Cost and realism of the synthetic world at its default configuration.

Prints:
  * seconds per frame (one LiDAR scan + 3 rendered cameras + their teacher maps) and frames/s,
    split into LiDAR / camera rendering / teacher, as CPU time of this process (one core: the
    generator is single-threaded numpy) and wall time;
  * points per frame and per-class point shares;
  * the simulated teacher's accuracy: per pixel (vs Camera.labels) and at the pixels where LiDAR
    points project (what pretraining sees), overall and per class;
  * reading stored frames (``clip2scene synth``) vs generating them, measured side by side.

    .venv/bin/python bench/synthetic.py [--scenes 2] [--frames 4] [--seed 0]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.data.synthetic import (
    SyntheticConfig, SyntheticDataset, SyntheticWorld, write_synthetic_dataset,
)
from clip2scene_core.data.synthetic.teacher import simulate_teacher_labels
from clip2scene_core.geometry import project_points_to_image


class Stopwatch:
    """Accumulates CPU and wall seconds per named stage."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def run(self, name: str, function, *args):
        cpu, wall = time.process_time(), time.perf_counter()
        result = function(*args)
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
        return result


def time_generation(world: SyntheticWorld, scenes: int, frames: int) -> Stopwatch:
    """Generate each frame's new work as a sequential reader does: its own scan, 3 views, 3 teachers."""
    watch = Stopwatch()
    config = world.config
    for scene in range(scenes):
        watch.run("scene layout", world.scene, scene)
        for frame in range(frames):
            scan = frame + config.num_sweeps
            watch.run("lidar scan", world.scan, scene, scan)
            for camera in range(len(config.cameras.rigs)):
                view = watch.run("camera render", world.render_view, scene, frame, camera)
                watch.run("teacher", simulate_teacher_labels, view.labels, view.object_ids, view.points,
                          config.teacher, SYNTHETIC_CLASSES, (world.seed, scene, scan, camera),
                          (world.seed, scene))
    return watch


def teacher_accuracy(dataset: SyntheticDataset) -> None:
    num_classes = len(SYNTHETIC_CLASSES)
    pixel = np.zeros((num_classes + 1, 2))  # [correct, total] per true label
    point = np.zeros((num_classes + 1, 2))
    points, shares = [], np.zeros(num_classes + 1)
    for frame in dataset:
        points.append(frame.num_points)
        shares += np.bincount(frame.labels, minlength=num_classes + 1)
        for camera in frame.cameras:
            seen = camera.labels > 0
            np.add.at(pixel, (camera.labels[seen], 0), camera.teacher_labels[seen] == camera.labels[seen])
            np.add.at(pixel, (camera.labels[seen], 1), 1)
            projection = project_points_to_image(frame.points, camera.K, camera.lidar_to_camera,
                                                 (camera.height, camera.width), occlusion=True)
            cols, rows = np.floor(projection.pixels).astype(np.int64).T
            truth = frame.labels[projection.indices]
            np.add.at(point, (truth, 0), camera.teacher_labels[rows, cols] == truth)
            np.add.at(point, (truth, 1), 1)
    print(f"points per frame: mean {np.mean(points):.0f} (min {min(points)}, max {max(points)})")
    print(f"teacher pixel accuracy: {pixel[1:, 0].sum() / pixel[1:, 1].sum():.3f}   "
          f"at projected LiDAR points: {point[1:, 0].sum() / point[1:, 1].sum():.3f}")
    print(f"{'class':<14}{'point share':>12}{'pixel acc':>11}{'point acc':>11}")
    for label, name in enumerate(SYNTHETIC_CLASSES, start=1):
        pixel_accuracy = pixel[label, 0] / max(pixel[label, 1], 1)
        point_accuracy = point[label, 0] / max(point[label, 1], 1)
        share = shares[label] / shares.sum()
        print(f"{name:<14}{share:>12.4f}{pixel_accuracy:>11.3f}{point_accuracy:>11.3f}")


def stored_vs_generated(seed: int, frames: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_dataset(folder, seed=seed, num_scenes=1, frames_per_scene=frames)
        stored = SyntheticDataset(folder)
        generated = SyntheticDataset(seed=seed, num_scenes=1, frames_per_scene=frames)
        start = time.perf_counter()
        for frame in stored:
            pass
        read = time.perf_counter() - start
        start = time.perf_counter()
        for frame in generated:
            pass
        made = time.perf_counter() - start
    print(f"sequential pass over {frames} frames: generate {made / frames:.3f} s/frame, read stored "
          f"{read / frames:.3f} s/frame (reading is {made / read:.1f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4, help="frames per scene")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    world = SyntheticWorld(SyntheticConfig(), args.seed, args.frames)
    watch = time_generation(world, args.scenes, args.frames)
    count = args.scenes * args.frames
    stages = [name for name in watch.cpu if name != "scene layout"]
    cpu = sum(watch.cpu[name] for name in stages) / count
    wall = sum(watch.wall[name] for name in stages) / count
    print(f"default world, {count} frames: {cpu:.3f} CPU s/frame ({1 / cpu:.2f} frames/s on one core), "
          f"{wall:.3f} wall s/frame")
    for name in stages:
        print(f"  {name:<14} {watch.cpu[name] / count * 1000:7.1f} ms CPU per frame")
    print(f"  {'scene layout':<14} {watch.cpu['scene layout'] / args.scenes * 1000:7.1f} ms CPU per scene")
    teacher_accuracy(SyntheticDataset(seed=args.seed, num_scenes=args.scenes, frames_per_scene=args.frames))
    stored_vs_generated(args.seed, args.frames)


if __name__ == "__main__":
    main()
