"""The end-to-end demo on the embedded default (the synthetic world), as ``clip2scene demo`` runs it.

1. Pretrain a small network on unlabelled synthetic LiDAR + camera data with the simulated CLIP
   teacher (no labels are used), or reuse the checkpoint cached by an earlier run with the same config.
2. Record a drive through an unseen synthetic street to a rosbag2 (mcap).
3. Start the ROS 2 node with that checkpoint, replay the bag into it and record what it publishes.
   Half way, the operator swaps the class names for synonyms (``automobile`` for ``car``, ``street``
   for ``road``, ...) through the node's parameter service, as ``ros2 param set`` would. This runs
   twice: LiDAR only, then with the bag's cameras (``use_cameras``: the 2D-3D ensemble, with the
   simulated teacher, recorded per image, standing in for MaskCLIP).
4. Score both recordings against the bag's ground truth (mIoU before and after the change, panoptic
   quality of the node's objects, latency, drops), check the same bag offline with the same
   `Segmenter` (both ways), and draw pictures (the camera views with the student's object boxes).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import yaml
from tqdm import tqdm

from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.data.synthetic import SyntheticConfig, SyntheticDataset
from clip2scene_core.metrics import ConfusionMatrix, json_number
from clip2scene_ros.package_files import package_file

LOGGER = logging.getLogger(__name__)

#: What the operator types half way through: a synonym for every trained class name, in the same
#: order (each stays nearest its class in the MiniLM text space).
SYNONYMS = {
    "road": "street", "sidewalk": "sidewalk", "terrain": "dirt", "building": "house",
    "vegetation": "tree", "pole": "lamp post", "car": "automobile", "truck": "lorry",
    "pedestrian": "person", "traffic cone": "safety cone",
}


def load_demo_config(path: Optional[Path] = None) -> dict[str, Any]:
    """The demo YAML (default: the package's ``config/demo.yaml``), with ``pretrain_config`` (relative
    to the YAML) and ``checkpoint`` (relative to the package's files) resolved to paths."""
    path = Path(path) if path is not None else package_file("config", "demo.yaml")
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    pretrain_file = Path(config["pretrain_config"])
    config["pretrain_config"] = str(pretrain_file if pretrain_file.is_absolute() else path.parent / pretrain_file)
    checkpoint = config.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_absolute():
        config["checkpoint"] = str(package_file(*Path(checkpoint).parts))
    return config


def demo_pretrain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full pretraining config of the demo network: the defaults merged with ``pretrain_config``."""
    from clip2scene_core.train.config import build_config
    from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG

    return build_config(DEFAULT_PRETRAIN_CONFIG, [config["pretrain_config"]])


def training_identity(pretrain_config: Mapping[str, Any]) -> dict[str, Any]:
    """What decides the trained weights: the config without where it is written or resumed from."""
    return {key: value for key, value in pretrain_config.items() if key not in ("out_dir", "resume")}


def demo_checkpoint(config: Mapping[str, Any], pretrain_config: Mapping[str, Any], cache_dir: Path,
                    retrain: bool = False) -> Path:
    """The shipped checkpoint when it was trained with ``pretrain_config`` (the demo's, from
    :func:`demo_pretrain_config`) and no ``retrain``; else one trained with it, cached in
    ``cache_dir`` by config."""
    from clip2scene_core.checkpoint import load_checkpoint
    from clip2scene_core.train.pretrain import pretrain, recorded_pretrain_config

    identity = training_identity(pretrain_config)
    if config.get("checkpoint") and not retrain:
        shipped = Path(config["checkpoint"])
        if training_identity(recorded_pretrain_config(load_checkpoint(shipped))) == identity:
            LOGGER.info("using the shipped demo checkpoint %s (retrain with --retrain)", shipped)
            return shipped
        LOGGER.warning("%s was trained with another config than %s: training the demo network",
                       shipped, config["pretrain_config"])
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    out_dir = cache_dir / f"pretrain-{key}"
    model = out_dir / "model.pt"
    if model.is_file() and not retrain:
        LOGGER.info("using the cached demo checkpoint %s", model)
        return model
    if out_dir.exists():
        shutil.rmtree(out_dir)
    LOGGER.info("pretraining the demo network (no labels; simulated CLIP teacher) into %s", out_dir)
    return Path(pretrain(dict(pretrain_config, out_dir=str(out_dir))))


def isolate_ros_traffic() -> None:
    """Keep the demo's DDS traffic on this machine and off other users' domains."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")


def run_demo(out_dir: Path, config: Mapping[str, Any], cache_dir: Path, retrain: bool = False,
             rate: Optional[float] = None) -> dict[str, Any]:
    """Run the whole demo; returns the report (also written to ``out_dir/report.json``)."""
    from clip2scene_core.segmenter import Segmenter
    from clip2scene_core.checkpoint import load_checkpoint
    from clip2scene_core.clip.prompts import load_thing_classes
    from clip2scene_core.objects import box_corners, object_boxes
    from clip2scene_core.train.pairs import SimulatedTeacher
    from clip2scene_core.visualize import save_cameras_side_by_side_png, save_prediction_vs_truth_png
    from clip2scene_core.data.synthetic.recorded_teacher import RecordedTeacher
    from clip2scene_ros.bag import camera_info_topic, image_topic, read_input
    from clip2scene_ros.bag_evaluation import ClassChange, evaluate_recording, segment_bag
    from clip2scene_ros.bag_export import export_frames
    from clip2scene_ros.replay import replay_bag, running_segment_node

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    pretrain_config = demo_pretrain_config(config)
    checkpoint = demo_checkpoint(config, pretrain_config, cache_dir, retrain)
    world = pretrain_config["data"]["options"].get("config") or {}

    drive = config["drive"]
    drive_world = SyntheticDataset(seed=drive["seed"], num_scenes=1, frames_per_scene=drive["frames"],
                                   config=SyntheticConfig.from_dict(world, f"{config['pretrain_config']} data.options.config"))
    bag = out_dir / "drive"
    # Rendered once: the export, the teacher's maps and the student/teacher comparison all read them.
    frames = list(tqdm(drive_world, desc="render", unit="frame"))
    LOGGER.info("recording an unseen synthetic drive (%d frames) to %s", drive["frames"], bag)
    things = load_thing_classes("synthetic")
    exported = export_frames(frames, bag, SYNTHETIC_CLASSES, dataset="synthetic", total=drive["frames"],
                             thing_classes=things)
    state = load_checkpoint(checkpoint)
    class_embeddings = state["extra"]["class_embeddings"]
    sigma = drive_world.config.teacher.feature_noise_sigma
    # MaskCLIP's stand-in for the camera path: the simulated teacher's view of each drive image.
    recorded_teacher = RecordedTeacher.from_frames(frames, class_embeddings, sigma)
    teacher_file = recorded_teacher.save(out_dir / "teacher.npz")
    camera_names = [camera.name for camera in frames[0].cameras]

    trained = list(SYNTHETIC_CLASSES)
    synonyms = [SYNONYMS[name] for name in trained]
    # The things are renamed with their classes (the node's default, the vocabulary's things, names
    # none of the synonyms).
    change = ClassChange(frame=drive["frames"] // 2, class_names=tuple(synonyms),
                         thing_classes=tuple(SYNONYMS[name] for name in things))
    mapping = {synonym: name for name, synonym in SYNONYMS.items()}
    node_parameters = {"class_names": trained, "reliability": "reliable", "depth": 10, "device": "cpu",
                       "text_cache_dir": str(cache_dir / "text")}
    # Lock-step replay waits anyway, so a cloud may wait long for its cameras: a busy CPU then
    # delays the pairing but never changes it (the offline check pairs with nothing late).
    camera_parameters = {"use_cameras": True, "camera_names": camera_names, "sync_timeout": 2.0,
                         "calibration_file": str(exported.calibration_file), "image_teacher": str(teacher_file)}
    camera_topics = [topic for name in camera_names for topic in (image_topic(name), camera_info_topic(name))]
    truth = read_input(bag)
    isolate_ros_traffic()

    def live_run(name: str, parameters: Mapping[str, Any], extra_topics: Sequence[str]):
        LOGGER.info("replaying the bag into the ROS 2 node (%s); class names switch to synonyms at frame %d",
                    name, change.frame)
        with running_segment_node(checkpoint, parameters, out_dir / f"node_{name}.log") as node:
            recording = replay_bag(bag, out_dir / f"node_output_{name}", schedule=[change],
                                   rate=rate or drive["rate"], extra_topics=extra_topics,
                                   wait_for_output=rate is None and drive["lock_step"],
                                   alive=lambda: node.poll() is None)
        return recording, evaluate_recording(truth, recording, mapping=mapping, schedule=[change])

    def offline_run(image_teacher: Optional[RecordedTeacher]):
        segmenter = Segmenter(checkpoint, class_names=trained, device="cpu", text_cache_dir=cache_dir / "text",
                              image_teacher=image_teacher)
        recording = segment_bag(bag, segmenter, schedule=[change], cameras=camera_names if image_teacher else ())
        return recording, evaluate_recording(truth, recording, mapping=mapping, schedule=[change])

    recording, live = live_run("lidar", node_parameters, ())
    camera_recording, camera_live = live_run("cameras", {**node_parameters, **camera_parameters}, camera_topics)
    LOGGER.info("checking the same bag offline (no ROS) with the same Segmenter, LiDAR only and with cameras")
    offline_recording, offline = offline_run(None)
    camera_offline_recording, camera_offline = offline_run(recorded_teacher)

    # The student against its teacher on the same points: those a camera sees (the only ones the
    # teacher labels), over the whole drive.
    predicted = recorded_dataset_labels(recording, truth.stamps, mapping)
    teacher = SimulatedTeacher(class_embeddings, sigma)
    student_in_view, teacher_in_view, teacher_labels = in_view_comparison(frames, predicted, teacher,
                                                                          class_embeddings)

    # Pictures of the last frame (labelled with the synonyms).
    last_index = len(frames) - 1
    last = frames[last_index]
    pictures = {}
    if predicted[last_index] is not None:
        # The node's objects of that frame, boxed from its instance ids (scores do not shape a box).
        instances = next(p.instances for p in recording.predictions if p.stamp == truth.stamps[last_index])
        objects = object_boxes(last.points, instances, predicted[last_index], np.zeros(last.num_points, np.float32))
        pictures["cameras"] = save_cameras_side_by_side_png(
            last, [("teacher (projected pixels)", teacher_labels[last_index]),
                   (f"student, {len(objects)} objects", predicted[last_index])],
            SYNTHETIC_CLASSES, out_dir / "teacher_vs_student_cameras.png",
            boxes=[None, (box_corners(objects.center, objects.size, objects.yaw), objects.class_index)])
        pictures["bev"] = save_prediction_vs_truth_png(
            last.points, predicted[last_index], last.labels, SYNTHETIC_CLASSES,
            out_dir / "prediction_vs_truth_bev.png",
            title=f"frame {last_index}, classes: {', '.join(recording.predictions[-1].class_names)}")
    (_, _, before), (_, _, after) = live.segments[0], live.segments[-1]
    pictures["iou"] = after.save_iou_bars_png(out_dir / "iou_per_class.png", SYNTHETIC_CLASSES, compare=before,
                                              run_names=("trained names", "synonyms"))
    student_miou, teacher_miou = json_number(student_in_view.miou()), json_number(teacher_in_view.miou())
    panoptic = live.report["panoptic"] or {}
    report = {
        "summary": {
            "student_miou": student_miou,
            "teacher_miou": teacher_miou,
            "student_teacher_ratio": student_miou / teacher_miou if student_miou and teacher_miou else None,
            "trained_names_miou": live.report["segments"][0]["miou"],
            "synonyms_miou": live.report["segments"][-1]["miou"],
            "ensemble_trained_names_miou": camera_live.report["segments"][0]["miou"],
            "ensemble_synonyms_miou": camera_live.report["segments"][-1]["miou"],
            **{key: panoptic.get(key) for key in ("pq", "pq_things", "sq_things", "rq_things")},
            "frames": live.report["frames"],
            "dropped": live.report["dropped"] + camera_live.report["dropped"],
        },
        "checkpoint": str(checkpoint),
        "checkpoint_metrics": dict(state.get("metrics", {})),
        "in_view": {"student": student_in_view.to_dict(SYNTHETIC_CLASSES),
                    "teacher": teacher_in_view.to_dict(SYNTHETIC_CLASSES)},
        "live": live.report,
        "offline": offline.report,
        "live_offline_label_agreement": labels_agreement(recording, offline_recording),
        "ensemble": {"live": camera_live.report, "offline": camera_offline.report,
                     "live_offline_label_agreement": labels_agreement(camera_recording, camera_offline_recording),
                     "cameras": camera_names},
        "class_change": {"frame": change.frame, "from": trained, "to": synonyms},
        "pictures": {name: str(path) for name, path in pictures.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.txt").write_text(format_report(report, live.format_table()))
    return report


def recorded_dataset_labels(recording, stamps, mapping: Mapping[str, str]) -> list[Optional[np.ndarray]]:
    """Per drive frame (bag order), the node's labels in the dataset's label space (None = dropped)."""
    from clip2scene_core.metrics import dataset_label_table, to_dataset_labels

    by_stamp = {prediction.stamp: prediction for prediction in recording.predictions}
    labels = []
    for stamp in stamps:
        prediction = by_stamp.get(stamp)
        labels.append(None if prediction is None else to_dataset_labels(
            prediction.labels, dataset_label_table(prediction.class_names, SYNTHETIC_CLASSES, mapping)))
    return labels


def in_view_comparison(frames, predicted: list[Optional[np.ndarray]], teacher, text
                       ) -> tuple[ConfusionMatrix, ConfusionMatrix, list[np.ndarray]]:
    """Confusion matrices of the student and of the teacher's projected pseudo-labels on the same
    points (those the teacher labels: seen by a camera), and the teacher's labels per frame (0 = none)."""
    import torch

    from clip2scene_core.train.evaluation import teacher_point_labels

    student, teacher_matrix = ConfusionMatrix(len(SYNTHETIC_CLASSES)), ConfusionMatrix(len(SYNTHETIC_CLASSES))
    teacher_labels = []
    for index, (frame, labels) in enumerate(zip(frames, predicted)):
        points, pseudo = teacher_point_labels(frame, teacher, text, torch.Generator().manual_seed(index))
        full = np.zeros(frame.num_points, np.int64)
        full[points] = pseudo
        teacher_labels.append(full)
        if labels is not None:  # a dropped frame counts for neither
            student.update(labels[points], frame.labels[points])
            teacher_matrix.update(pseudo, frame.labels[points])
    return student, teacher_matrix, teacher_labels


def labels_agreement(live, offline) -> Optional[float]:
    """Fraction of points whose live and offline labels agree (frames present in both)."""
    offline_by_stamp = {p.stamp: p for p in offline.predictions}
    same = total = 0
    for prediction in live.predictions:
        other = offline_by_stamp.get(prediction.stamp)
        if other is None or len(other.labels) != len(prediction.labels):
            continue
        same += int(np.count_nonzero(other.labels == prediction.labels))
        total += len(prediction.labels)
    return same / total if total else None


def format_report(report: Mapping[str, Any], live_table: str) -> str:
    """The report as text: live per-class table, the summary (student vs teacher, mIoU before/after
    the class change, LiDAR only and with cameras, frames and drops), the offline checks and the
    pictures."""
    summary, offline, ensemble = report["summary"], report["offline"], report["ensemble"]
    percent = lambda value: "-" if value is None else f"{100 * value:.1f} %"  # noqa: E731
    ratio = summary["student_teacher_ratio"]
    lines = ["clip2scene demo: annotation-free LiDAR segmentation, replayed through the ROS 2 node", "",
             live_table, "",
             f"student mIoU (points a camera sees): {percent(summary['student_miou'])}",
             f"teacher mIoU (its projected pixel labels, same points): {percent(summary['teacher_miou'])}",
             f"student / teacher: {'-' if ratio is None else f'{ratio:.2f}x'}",
             f"mIoU with the trained names: {percent(summary['trained_names_miou'])}",
             f"mIoU after switching to synonyms ({', '.join(report['class_change']['to'])}): "
             f"{percent(summary['synonyms_miou'])}",
             f"2D-3D ensemble with cameras {', '.join(ensemble['cameras'])}: mIoU with the trained names "
             f"{percent(summary['ensemble_trained_names_miou'])}, after the switch "
             f"{percent(summary['ensemble_synonyms_miou'])} (LiDAR only: "
             f"{percent(summary['trained_names_miou'])}, {percent(summary['synonyms_miou'])})",
             f"panoptic quality of the node's objects (LiDAR only, whole drive, things "
             f"{', '.join(report['live']['panoptic']['thing_classes']) if report['live']['panoptic'] else '-'}): "
             f"PQ {percent(summary['pq'])}, PQ_things {percent(summary['pq_things'])} "
             f"(SQ_things {percent(summary['sq_things'])}, RQ_things {percent(summary['rq_things'])})",
             f"frames {summary['frames']}, dropped {summary['dropped']}",
             f"offline Segmenter on the same bag: mIoU {percent(offline.get('miou'))}; live and offline "
             f"labels agree on {percent(report['live_offline_label_agreement'])} of points",
             f"offline 2D-3D ensemble: mIoU {percent(ensemble['offline'].get('miou'))}; live and offline "
             f"labels agree on {percent(ensemble['live_offline_label_agreement'])} of points",
             f"pictures: {', '.join(report['pictures'].values())}"]
    return "\n".join(lines) + "\n"
