"""Table 3 of CLIP2Scene on the synthetic world: which parts of the objective make the student good.

Trains the tiny network (CPU) once per row on a fixed synthetic split (train and val scenes disjoint),
evaluates each annotation-free on the val scenes, and prints the table beside the simulated teacher's
own projected pseudo-label mIoU (val points that land in a camera). Rows (DESIGN.md section 5):

    baseline      1 sweep, Eq. 1 only                     w/o S3        3 sweeps, Eq. 1 + Eq. 2-4
    w/o StCR      3 sweeps, Eq. 1 + S3                    KL            1 sweep, KL distillation of logits
    w/o SCR       3 sweeps, Eq. 2-4 + S3 (consistency     1 sweep       full objective, K = 1
                  head evaluated: Eq. 1 trains no head)   full          3 sweeps, Eq. 1 + Eq. 2-4 + S3
    5 sweeps      full objective, K = 5 (--rows all)

The paper (nuScenes mIoU): baseline 15.1, w/o StCR 19.8, w/o SCR 16.8, KL 0.0, w/o S3 18.8,
1 sweep 18.7, full 20.8, 5 sweeps 20.6.

    .venv/bin/python bench/ablation.py                  # ~20 min on 2 CPU cores
    .venv/bin/python bench/ablation.py --rows baseline full --epochs 2   # quick look

The dataset and text embeddings are written once under --out and reused by later runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from clip2scene_core.train.config import merge_config, parse_overrides
from clip2scene_core.train.evaluation import evaluate_teacher
from clip2scene_core.train.pairs import SimulatedTeacher
from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, pretrain
from clip2scene_core.train.splits import open_split

#: Overrides of the full objective per row (config keys of train/pretrain.py).
ROWS: dict[str, dict] = {
    "baseline": {"pairs": {"num_sweeps": 1}, "loss": {"spatial_temporal_weight": 0.0}, "s3": {"enabled": False}},
    "w/o StCR": {"loss": {"spatial_temporal_weight": 0.0}},
    "w/o SCR": {"loss": {"semantic_weight": 0.0}, "eval": {"head": "consistency"}},
    "w/o S3": {"s3": {"enabled": False}},
    "KL": {"kl_distillation": True, "pairs": {"num_sweeps": 1}, "loss": {"spatial_temporal_weight": 0.0},
           "s3": {"enabled": False}},
    "1 sweep": {"pairs": {"num_sweeps": 1}},
    "full": {},
    "5 sweeps": {"pairs": {"num_sweeps": 5}},
}
DEFAULT_ROWS = ["baseline", "w/o StCR", "w/o SCR", "w/o S3", "KL", "1 sweep", "full"]
PAPER = {"baseline": 15.1, "w/o StCR": 19.8, "w/o SCR": 16.8, "w/o S3": 18.8, "KL": 0.0, "1 sweep": 18.7,
         "full": 20.8, "5 sweeps": 20.6}
# A lighter LiDAR than the default HDL-32E-like one (a third of the azimuth steps), so each row gets ~200
# optimiser steps in a few minutes on 2 cores; cameras and the simulated teacher keep their defaults.
WORLD = {"lidar": {"azimuth_steps": 360}, "num_sweeps": 4}
# The tiny preset widened to three levels: about as fast on CPU (the cost is in the kernel maps at these
# widths) and it learns the synthetic classes much better than the two-level 8-channel network.
NETWORK = {"widths": [16, 16, 32, 64, 32, 32, 16], "blocks_per_stage": 1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench_ablation", help="work folder (dataset, text, runs)")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help=f"rows to run, of {list(ROWS)} or 'all'")
    parser.add_argument("--train-scenes", type=int, default=6)
    parser.add_argument("--val-scenes", type=int, default=2)
    parser.add_argument("--frames-per-scene", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.03, help="SGD learning rate (Eq. 1 sums 10 class terms)")
    parser.add_argument("--voxel-size", type=float, default=0.1)
    parser.add_argument("--sigma", type=float, default=None, help="teacher feature noise (default: the world's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a pretraining config value for every row, e.g. --set loss.semantic_loss=ce")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def prepare_dataset(folder: Path, scenes: int, frames_per_scene: int) -> Path:
    """Write the synthetic split once (train scenes first, then val scenes) and reuse it."""
    from clip2scene_core.data.synthetic import META_FILE, SyntheticConfig, write_synthetic_dataset

    if (folder / META_FILE).is_file():
        meta = json.loads((folder / META_FILE).read_text())
        if (meta["num_scenes"], meta["frames_per_scene"]) == (scenes, frames_per_scene):
            return folder
    return write_synthetic_dataset(folder, seed=0, num_scenes=scenes, frames_per_scene=frames_per_scene,
                                   config=SyntheticConfig.from_dict(WORLD), overwrite=True)


def prepare_text(path: Path) -> Path:
    """Class embeddings of the synthetic world in the offline MiniLM space (85 templates), written once."""
    from clip2scene_core.clip.embedding_file import save_text_embeddings
    from clip2scene_core.clip.prompts import TEMPLATES, encode_classes, load_class_vocabulary
    from clip2scene_core.clip.text_encoders import build_text_encoder, minilm_spec

    if not path.is_file():
        classes = load_class_vocabulary("synthetic")
        encoder = build_text_encoder(minilm_spec())
        save_text_embeddings(path, encode_classes(encoder, classes, TEMPLATES), [c.name for c in classes],
                             encoder.spec, TEMPLATES)
    return path


def percent(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:5.1f}"


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = list(ROWS) if args.rows == ["all"] else args.rows
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    dataset = prepare_dataset(out / "data", args.train_scenes + args.val_scenes, args.frames_per_scene)
    text_file = prepare_text(out / "synthetic_text_minilm.pt")
    train_frames = args.train_scenes * args.frames_per_scene
    base = merge_config(DEFAULT_PRETRAIN_CONFIG, {
        "seed": args.seed, "device": "cpu", "threads": args.threads,
        "data": {"kind": "synthetic", "root": str(dataset), "in_memory": True,
                 "train": {"frames": f"0:{train_frames}"}, "val": {"frames": f"{train_frames}:"}},
        "text": {"embeddings_file": str(text_file)},
        "teacher": {"sigma": args.sigma},
        "model_preset": "tiny", "model": NETWORK, "voxel_size": args.voxel_size, "epochs": args.epochs,
        "batch_size": args.batch_size, "optimizer": {"lr": args.lr}, "checkpoint_every": 10**6,
    })
    base = merge_config(base, parse_overrides(args.overrides))
    print(f"dataset {dataset}: {train_frames} train frames, {args.val_scenes * args.frames_per_scene} val frames "
          f"(disjoint scenes); tiny network, {args.epochs} epochs, batch {args.batch_size}; "
          f"prepared in {time.perf_counter() - started:.0f} s", flush=True)

    # The teacher's own projected pseudo-labels on the val points that land in a camera.
    val = open_split(base["data"], "val")
    text = torch.load(text_file, weights_only=True)["embeddings"]
    sigma = args.sigma if args.sigma is not None else val.dataset.config.teacher.feature_noise_sigma
    teacher_miou = evaluate_teacher(val.frames, SimulatedTeacher(text, sigma), text, progress=False).miou()

    results = {}
    for row in rows:
        start = time.perf_counter()
        run_dir = out / "runs" / row.replace("/", "").replace(" ", "_")
        config = merge_config(base, {**ROWS[row], "out_dir": str(run_dir)})
        metrics = torch.load(pretrain(config), weights_only=True)["metrics"]
        results[row] = {"miou": metrics["miou"], "camera_miou": metrics["camera_points_miou"],
                        "seconds": time.perf_counter() - start}
        print(f"  {row:<10} mIoU {percent(metrics['miou'])} %  "
              f"(camera points {percent(metrics['camera_points_miou'])} %)"
              f"  {results[row]['seconds']:.0f} s", flush=True)

    print()
    print(f"{'row':<10} {'mIoU %':>7} {'in view %':>10} {'paper %':>8}")
    print("-" * 38)
    for row, result in results.items():
        print(f"{row:<10} {percent(result['miou']):>7} {percent(result['camera_miou']):>10} {PAPER[row]:>8.1f}")
    print("-" * 38)
    print(f"{'teacher':<10} {'':>7} {percent(teacher_miou):>10}   (projected pseudo-labels, val points in view)")
    print(f"total {time.perf_counter() - started:.0f} s")
    (out / "results.json").write_text(json.dumps({"rows": results, "teacher_miou": teacher_miou,
                                                  "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
