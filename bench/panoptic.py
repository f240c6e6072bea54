"""Open-vocabulary objects on the demo's synthetic val drive: panoptic quality of the student's labels
clustered into instances, against the simulated teacher's projected labels clustered the same way.

The drive is the demo's (``config/demo.yaml``: its seed and frame count; the world is the one the
checkpoint was trained in, as its recorded config says). Per cloud, the network labels every point
and groups the points of the thing classes (the vocabulary's ``things``) into objects
(``Segmenter.segment_frame``, LiDAR only, what the node runs). The teacher's labels exist only where a camera sees a point,
so both are scored on those points (``teacher_point_labels``, the demo's comparison): the student's
objects are clustered on the whole cloud and then cut to them, the teacher's clustered on them alone.
PQ counts ground-truth segments and unmatched predicted ones only from ``--min-points`` points up
(the clustering's own minimum), as LiDAR benchmarks leave out objects too small to find.

Then the object stage's share of the node's CPU time on a ~120k-point scan (``--scan-points`` rays;
the same world with a 64-beam LiDAR, the demo network's labels): ``Segmenter.segment`` (what the node's
worker runs per cloud: network, labels and the object stage) against ``extract_objects`` alone on
its labels, ``--repeats`` times each, interleaved, in this process with the same threads.

Prints the per-class PQ table of both, then on its last lines (figures in %, times in ms):
``PQ_things``, ``SQ_things``, ``RQ_things``, ``PQ`` (the student), the same four prefixed ``teacher_``,
the same four prefixed ``true_classes_`` (the true classes clustered alike: the ceiling the clustering
leaves), both semantic mIoUs on the same points, the object stage's time per drive cloud (clustering + boxes:
mean, max) and the 120k-point scan's ``scan_segment_ms``, ``scan_objects_ms`` (medians) and
``objects_percent_of_segment``.

    .venv/bin/python bench/panoptic.py [--checkpoint models/demo.pt] [--frames 8] [--threads 2] \
        [--scan-points 120000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clip2scene_core.checkpoint import load_checkpoint  # noqa: E402
from clip2scene_core.data.labels import SYNTHETIC_CLASSES  # noqa: E402
from clip2scene_core.data.synthetic import SyntheticConfig, SyntheticDataset  # noqa: E402
from clip2scene_core.metrics import ConfusionMatrix  # noqa: E402
from clip2scene_core.objects import (  # noqa: E402
    ClusteringParams, PanopticQuality, cluster_instances, extract_objects,
)
from clip2scene_core.segmenter import UNKNOWN_LABEL, Segmenter  # noqa: E402
from clip2scene_core.train.evaluation import teacher_point_labels  # noqa: E402
from clip2scene_core.train.pairs import SimulatedTeacher  # noqa: E402
from clip2scene_core.train.pretrain import recorded_pretrain_config  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "models" / "demo.pt"))
    parser.add_argument("--demo-config", default=str(ROOT / "config" / "demo.yaml"),
                        help="where the drive's seed and frame count come from")
    parser.add_argument("--frames", type=int, default=None, help="frames of the drive (default: the demo's)")
    parser.add_argument("--radius", type=float, default=ClusteringParams.radius_m, help="clustering grid, metres")
    parser.add_argument("--min-points", type=int, default=ClusteringParams.min_points,
                        help="smallest object (clustering) and smallest counted segment (PQ)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--scan-points", type=int, default=64 * 2048,
                        help="LiDAR rays of the latency scan (64 beams x rays/64 azimuth steps; about 91 %% "
                             "return a point: ~120k points for the default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on the latency scan")
    return parser.parse_args()


def drive_frames(checkpoint: dict, demo_config: Path, frames: Optional[int]) -> SyntheticDataset:
    """The demo's val drive in the checkpoint's training world."""
    drive = yaml.safe_load(demo_config.read_text(encoding="utf-8"))["drive"]
    world = recorded_pretrain_config(checkpoint)["data"]["options"].get("config") or {}
    return SyntheticDataset(seed=drive["seed"], num_scenes=1, frames_per_scene=frames or drive["frames"],
                            config=SyntheticConfig.from_dict(world, "checkpoint data.options.config"))


def scan_latency(segmenter: Segmenter, checkpoint: dict, points: int, repeats: int) -> tuple[float, float, int]:
    """Median ms of ``segmenter.segment`` and of its object stage alone on one scan of ``points``
    rays (64 beams), and the scan's point count; runs interleaved after one warm-up."""
    world = recorded_pretrain_config(checkpoint)["data"]["options"].get("config") or {}
    world = {**world, "lidar": {**world.get("lidar", {}), "beams": 64, "azimuth_steps": max(points // 64, 1)}}
    frame = SyntheticDataset(seed=0, num_scenes=1, frames_per_scene=1, with_cameras=False,
                             config=SyntheticConfig.from_dict(world, "latency scan"))[0]
    segment_ms, objects_ms = [], []
    result = segmenter.segment_frame(frame)  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        result = segmenter.segment_frame(frame)
        segment_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        extract_objects(frame.points, result.labels, result.scores, result.class_space.things, segmenter.clustering)
        objects_ms.append(1000 * (time.perf_counter() - start))
    return float(np.median(segment_ms)), float(np.median(objects_ms)), frame.num_points


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    params = ClusteringParams(radius_m=args.radius, min_points=args.min_points)
    checkpoint = load_checkpoint(args.checkpoint)
    frames = drive_frames(checkpoint, Path(args.demo_config), args.frames)
    segmenter = Segmenter(checkpoint, class_names=SYNTHETIC_CLASSES, device="cpu", clustering=params)
    class_embeddings = checkpoint["extra"]["class_embeddings"]
    teacher = SimulatedTeacher(class_embeddings, frames.config.teacher.feature_noise_sigma)
    things = segmenter.class_space.things  # the vocabulary's things
    thing_labels = [index + 1 for index in things]
    num_classes = len(SYNTHETIC_CLASSES)
    student_pq, teacher_pq, truth_pq = (PanopticQuality(num_classes, thing_labels, params.min_points)
                                        for _ in range(3))
    student_iou, teacher_iou = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    stage_ms, sizes = [], []

    for index, frame in enumerate(frames):
        result = segmenter.segment_frame(frame)
        instances = result.instances
        start = time.perf_counter()  # the object stage segment_frame ran, timed alone
        extract_objects(frame.points, result.labels, result.scores, things, params)
        stage_ms.append(1000 * (time.perf_counter() - start))
        sizes.append(frame.num_points)

        # The points a camera sees, and the teacher's label (1..C) at each: its generator is seeded
        # per frame like the demo's comparison.
        seen, pseudo = teacher_point_labels(frame, teacher, class_embeddings, torch.Generator().manual_seed(index))
        labels = np.where(result.labels == UNKNOWN_LABEL, 0, result.labels.astype(np.int64) + 1)
        truth, truth_instances = frame.labels[seen], frame.instances[seen]
        student_pq.update(labels[seen], instances[seen], truth, truth_instances)
        student_iou.update(labels[seen], truth)
        teacher_instances = cluster_instances(frame.points[seen], pseudo - 1, things, params)
        teacher_pq.update(pseudo, teacher_instances, truth, truth_instances)
        teacher_iou.update(pseudo, truth)
        # The clustering's ceiling: the true classes (mIoU 100 %) clustered the same way.
        true_instances = cluster_instances(frame.points, frame.labels - 1, things, params)
        truth_pq.update(truth, true_instances[seen], truth, truth_instances)

    print(f"drive: {len(frames)} clouds, {np.mean(sizes):.0f} points each, {args.checkpoint}; "
          f"clustering radius {params.radius_m} m, min {params.min_points} points; torch threads {args.threads}")
    for name, metric in (("student (3D network)", student_pq), ("teacher (projected pixel labels)", teacher_pq)):
        print(f"\n{name}, points a camera sees:")
        print(metric.format_table(SYNTHETIC_CLASSES))
    student, baseline = student_pq.summary(), teacher_pq.summary()
    stage = np.array(stage_ms)
    scan_segment_ms, scan_objects_ms, scan_points = scan_latency(segmenter, checkpoint, args.scan_points,
                                                                 args.repeats)
    print(f"latency scan: {scan_points} points, {args.repeats} runs, torch threads {args.threads}")
    print()
    for prefix, summary in (("", student), ("teacher_", baseline), ("true_classes_", truth_pq.summary())):
        for key in ("PQ_things", "SQ_things", "RQ_things", "PQ"):
            print(f"{prefix}{key} {100 * summary[key.lower()]:.1f}")
    print(f"student_mIoU {100 * student_iou.miou():.1f}")
    print(f"teacher_mIoU {100 * teacher_iou.miou():.1f}")
    print(f"clustering_ms_mean {stage.mean():.1f}")
    print(f"clustering_ms_max {stage.max():.1f}")
    print(f"scan_segment_ms {scan_segment_ms:.1f}")
    print(f"scan_objects_ms {scan_objects_ms:.1f}")
    print(f"objects_percent_of_segment {100 * scan_objects_ms / scan_segment_ms:.1f}")


if __name__ == "__main__":
    main()
