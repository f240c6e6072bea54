"""The demo end to end on a miniature world: train, record, replay through the node, report, draw."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from clip2scene_core.data.labels import SYNTHETIC_CLASSES

MINIATURE_PRETRAIN = {
    "seed": 0, "device": "cpu", "threads": 1, "model_preset": "tiny", "voxel_size": 0.3, "epochs": 1,
    "batch_size": 1, "pairs": {"num_sweeps": 2},
    "data": {"options": {"config": {"lidar": {"azimuth_steps": 120, "beams": 8},
                                    "cameras": {"image_size": [48, 96]}, "num_sweeps": 2}},
             "train": {"options": {"seed": 0, "num_scenes": 1, "frames_per_scene": 2}},
             "val": {"options": {"seed": 1, "num_scenes": 1, "frames_per_scene": 1}},
             "in_memory": True},
    "text": {"templates": ["a photo of a {}."]},
}
SUMMARY_KEYS = {"student_miou", "teacher_miou", "student_teacher_ratio", "trained_names_miou", "synonyms_miou",
                "ensemble_trained_names_miou", "ensemble_synonyms_miou", "frames", "dropped",
                "pq", "pq_things", "sq_things", "rq_things"}


def miniature_config(folder) -> dict:
    path = folder / "pretrain_miniature.yaml"
    path.write_text(yaml.safe_dump(MINIATURE_PRETRAIN))
    return {"pretrain_config": str(path), "checkpoint": None,
            "drive": {"seed": 7, "frames": 4, "rate": 1.0, "lock_step": True}}


def test_shipped_demo_checkpoint_is_what_its_config_trains(tmp_path):
    from clip2scene_core.model import restore_model
    from clip2scene_core.checkpoint import load_checkpoint
    from clip2scene_core.train.pretrain import recorded_pretrain_config
    from clip2scene_ros.demo import demo_checkpoint, demo_pretrain_config, load_demo_config

    config = load_demo_config()
    shipped = Path(config["checkpoint"])
    state = load_checkpoint(shipped)
    pretrain_config = demo_pretrain_config(config)
    assert recorded_pretrain_config(state) == pretrain_config  # what `clip2scene pretrain --config` records
    restore_model(state["model_config"], state["state_dict"])
    assert state["metrics"]["miou"] > 0
    assert demo_checkpoint(config, pretrain_config, tmp_path / "cache") == shipped  # used without training
    assert not (tmp_path / "cache").exists()


@pytest.mark.usefixtures("ros_env")
def test_demo_runs_end_to_end_and_reports_the_class_change(tmp_path):
    from clip2scene_ros.demo import SYNONYMS, run_demo

    config = miniature_config(tmp_path)
    report = run_demo(tmp_path / "demo", config, tmp_path / "cache")
    live = report["live"]
    assert live["complete"] and live["frames"] == 4 and live["evaluated"] == 4 and live["dropped"] == 0
    first, second = live["segments"]
    assert first["class_lists"] == [list(SYNTHETIC_CLASSES)]
    assert second["class_lists"] == [[SYNONYMS[name] for name in SYNTHETIC_CLASSES]]
    assert report["live_offline_label_agreement"] == 1.0, "live node and offline Segmenter disagree"
    assert report["offline"]["miou"] == pytest.approx(live["miou"])
    # The camera path: the node ran the 2D-3D ensemble on the bag's cameras, and agrees with offline.
    ensemble = report["ensemble"]
    assert ensemble["cameras"] == ["CAM_FRONT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
    assert ensemble["live"]["evaluated"] == 4 and ensemble["live"]["dropped"] == 0
    assert ensemble["live_offline_label_agreement"] == 1.0, "live and offline 2D-3D ensembles disagree"
    assert ensemble["live"]["overall"]["confusion"] != live["overall"]["confusion"], "cameras changed nothing"
    for name in ("cameras", "bev", "iou"):
        with Image.open(report["pictures"][name]) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 10, name
    text = (tmp_path / "demo" / "report.txt").read_text()
    assert "mIoU after switching to synonyms" in text and "automobile" in text
    summary = report["summary"]
    assert set(summary) == SUMMARY_KEYS and summary["frames"] == 4 and summary["dropped"] == 0
    assert summary["trained_names_miou"] == first["miou"] and summary["synonyms_miou"] == second["miou"]
    assert summary["student_teacher_ratio"] == pytest.approx(summary["student_miou"] / summary["teacher_miou"])
    assert 0 < summary["teacher_miou"] < 1
    assert summary["ensemble_trained_names_miou"] == ensemble["live"]["segments"][0]["miou"]
    # Objects: the node's instance ids scored against the drive's (things renamed with their classes).
    panoptic = live["panoptic"]
    assert panoptic["frames"] == 4 and panoptic["thing_classes"] == ["pole", "car", "truck", "pedestrian", "traffic cone"]
    assert summary["pq_things"] == panoptic["pq_things"] and 0 <= summary["pq"] <= 1
    assert report["offline"]["panoptic"]["pq"] == pytest.approx(panoptic["pq"]), "live and offline objects differ"
    assert "PQ_things" in text
    for line in ("student mIoU", "teacher mIoU", "student / teacher", "frames 4, dropped 0", "2D-3D ensemble",
                 "offline 2D-3D ensemble"):
        assert line in text, line
    assert json.loads((tmp_path / "demo" / "report.json").read_text())["class_change"]["frame"] == 2
    # A second run reuses the cached checkpoint instead of training again.
    assert run_demo(tmp_path / "again", config, tmp_path / "cache")["checkpoint"] == report["checkpoint"]
