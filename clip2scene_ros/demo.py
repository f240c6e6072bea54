"""The end-to-end demo on the embedded default (the synthetic world), as ``clip2scene demo`` runs it.

1. Pretrain a small network on unlabelled synthetic LiDAR + camera data with the simulated CLIP
   teacher (no labels are used), or reuse the checkpoint cached by an earlier run with the same config.
2. Record a drive through an unseen synthetic street to a rosbag2 (mcap).
3. Start the ROS 2 node with that checkpoint, replay the bag into it and record what it publishes.
   Half way, the operator swaps the class names for synonyms (``automobile`` for ``car``, ``street``
   for ``road``, ...) through the node's parameter service, as ``ros2 param set`` would.
4. Score the recording against the bag's ground truth (mIoU before and after the change, latency,
   drops), check the same bag offline with the same `Segmenter`, and draw pictures.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import yaml

from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.data.synthetic import SyntheticConfig, SyntheticDataset

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]

#: What the operator types half way through: a synonym for every trained class name, in the same
#: order (each stays nearest its class in the MiniLM text space).
SYNONYMS = {
    "road": "street", "sidewalk": "sidewalk", "terrain": "dirt", "building": "house",
    "vegetation": "tree", "pole": "lamp post", "car": "automobile", "truck": "lorry",
    "pedestrian": "person", "traffic cone": "safety cone",
}


def demo_config_path() -> Path:
    """``config/demo.yaml`` from the checkout or the installed share folder."""
    for candidate in (ROOT / "config" / "demo.yaml",
                      Path(os.sys.prefix) / "share" / "clip2scene_ros" / "config" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("config/demo.yaml not found in the checkout or the install prefix")


def load_demo_config(path: Optional[Path] = None) -> dict[str, Any]:
    with open(path or demo_config_path(), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def cached_checkpoint(pretrain_config: Mapping[str, Any], cache_dir: Path, retrain: bool = False) -> Path:
    """Pretrain with ``pretrain_config`` unless a checkpoint of the same config is cached."""
    from clip2scene_core.train.pretrain import pretrain

    key = hashlib.sha256(json.dumps(pretrain_config, sort_keys=True).encode()).hexdigest()[:16]
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
    from clip2scene_core.visualize import save_frame_png, save_prediction_vs_truth_png
    from clip2scene_ros.bag import (ClassChange, dataset_label_table, evaluate_recording, export_frames,
                                    read_input, segment_bag, to_dataset_labels)
    from clip2scene_ros.replay import replay_bag, running_segment_node

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    world = dict(config.get("world") or {})
    pretrain_config = dict(config["pretrain"])
    pretrain_config["data"] = dict(pretrain_config.get("data") or {})
    pretrain_config["data"]["options"] = dict(pretrain_config["data"].get("options") or {}, config=world)
    checkpoint = cached_checkpoint(pretrain_config, cache_dir, retrain)

    drive = config["drive"]
    frames = SyntheticDataset(seed=drive["seed"], num_scenes=1, frames_per_scene=drive["frames"],
                              config=SyntheticConfig.from_dict(world, "demo config 'world'"))
    bag = out_dir / "drive"
    LOGGER.info("recording an unseen synthetic drive (%d frames) to %s", drive["frames"], bag)
    export_frames(frames, bag, SYNTHETIC_CLASSES, dataset="synthetic", total=drive["frames"])

    trained = list(SYNTHETIC_CLASSES)
    synonyms = [SYNONYMS[name] for name in trained]
    change = ClassChange(frame=drive["frames"] // 2, class_names=tuple(synonyms))
    mapping = {synonym: name for name, synonym in SYNONYMS.items()}
    node_parameters = {"class_names": trained, "reliability": "reliable", "depth": 10, "device": "cpu",
                       "text_cache_dir": str(cache_dir / "text")}
    isolate_ros_traffic()
    LOGGER.info("replaying the bag into the ROS 2 node; class names switch to synonyms at frame %d",
                change.frame)
    with running_segment_node(checkpoint, node_parameters, out_dir / "node.log") as node:
        recording = replay_bag(bag, out_dir / "node_output", schedule=[change],
                               rate=rate or drive["rate"], wait_for_output=rate is None and drive["lock_step"],
                               alive=lambda: node.poll() is None)
    truth = read_input(bag)
    live = evaluate_recording(truth, recording, mapping=mapping, schedule=[change])

    LOGGER.info("checking the same bag offline (no ROS) with the same Segmenter")
    segmenter = Segmenter(checkpoint, class_names=trained, device="cpu", text_cache_dir=cache_dir / "text")
    offline_recording = segment_bag(bag, segmenter, schedule=[change])
    offline = evaluate_recording(truth, offline_recording, mapping=mapping, schedule=[change])
    agreement = labels_agreement(recording, offline_recording)

    # Pictures of the last frame (labelled with the synonyms).
    last = frames[len(frames) - 1]
    prediction = next((p for p in recording.predictions if p.stamp == truth.stamps[-1]), None)
    pictures = {}
    if prediction is not None:
        table = dataset_label_table(prediction.class_names, SYNTHETIC_CLASSES, mapping)
        predicted = to_dataset_labels(prediction.labels, table)
        pictures["cameras"] = save_frame_png(last, out_dir / "prediction_cameras.png", labels=predicted,
                                             class_names=SYNTHETIC_CLASSES)
        pictures["bev"] = save_prediction_vs_truth_png(
            last.points, predicted, last.labels, SYNTHETIC_CLASSES, out_dir / "prediction_vs_truth_bev.png",
            title=f"frame {len(frames) - 1}, classes: {', '.join(prediction.class_names)}")
    (_, _, before), (_, _, after) = live.segments[0], live.segments[-1]
    pictures["iou"] = after.save_iou_bars_png(out_dir / "iou_per_class.png", SYNTHETIC_CLASSES, compare=before,
                                              run_names=("trained names", "synonyms"))
    report = {
        "checkpoint": str(checkpoint),
        "checkpoint_metrics": _checkpoint_metrics(checkpoint),
        "live": live.report,
        "offline": offline.report,
        "live_offline_label_agreement": agreement,
        "class_change": {"frame": change.frame, "from": trained, "to": synonyms},
        "pictures": {name: str(path) for name, path in pictures.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.txt").write_text(format_report(report, live.format_table()))
    return report


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


def _checkpoint_metrics(path: Path) -> dict:
    from clip2scene_core.train.checkpoint import load_checkpoint

    return dict(load_checkpoint(path).get("metrics", {}))


def format_report(report: Mapping[str, Any], live_table: str) -> str:
    """The report as text: live per-class table, mIoU before/after the class change, checks."""
    live, offline = report["live"], report["offline"]
    segments = live.get("segments", [])
    percent = lambda value: "-" if value is None else f"{100 * value:.1f} %"  # noqa: E731
    lines = ["clip2scene demo: annotation-free LiDAR segmentation, replayed through the ROS 2 node", "",
             live_table, ""]
    if len(segments) == 2:
        lines += [f"mIoU with the trained names : {percent(segments[0]['miou'])}",
                  f"mIoU after switching to synonyms ({', '.join(report['class_change']['to'])}): "
                  f"{percent(segments[1]['miou'])}"]
    lines += [f"offline Segmenter on the same bag: mIoU {percent(offline.get('miou'))}; live and offline "
              f"labels agree on {percent(report['live_offline_label_agreement'])} of points",
              f"pictures: {', '.join(report['pictures'].values())}"]
    return "\n".join(lines) + "\n"
