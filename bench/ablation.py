"""Table 3 of CLIP2Scene on the synthetic world, trained to convergence: which parts of the objective
make the student better than its teacher.

Trains the bench's tiny network (CPU) once per row and seed on a fixed synthetic split (train and val
scenes disjoint) with a cosine schedule over ``--epochs``, evaluates annotation-free on the val scenes
every ``--eval-every`` epochs (the learning curve, printed), and reports each row's final mIoU (mean and
spread over the seeds) on the val points a camera sees, beside the simulated teacher's own projected
pseudo-label mIoU on those same points and the student/teacher ratio. A row whose last two curve
points still differ by more than 1 point is marked "still rising". Rows:

    baseline      1 sweep, Eq. 1 only                     w/o S3        3 sweeps, Eq. 1 + Eq. 2-4
    w/o StCR      3 sweeps, Eq. 1 + S3                    KL            1 sweep, KL distillation of logits
    w/o SCR       3 sweeps, Eq. 2-4 + S3 (consistency     1 sweep       full objective, K = 1
                  head evaluated: Eq. 1 trains no head)   full          3 sweeps, Eq. 1 + Eq. 2-4 + S3
    5 sweeps      full objective, K = 5

The paper (nuScenes mIoU): baseline 15.1, w/o StCR 19.8, w/o SCR 16.8, KL 0.0, w/o S3 18.8,
1 sweep 18.7, full 20.8, 5 sweeps 20.6.

Also printed: the teacher's per-class confusions at the projected val points, and a calibration A/B:
the same checkpoints scored with the class embeddings mean-centred before the argmax (a common
zero-shot calibration), at a short budget (``--short-epochs``, full objective) and at convergence.

    .venv/bin/python bench/ablation.py                  # ~40 min on 2 CPU cores (runs go 2 at a time)
    .venv/bin/python bench/ablation.py --rows baseline full --epochs 4 --seeds 0 --short-epochs 0  # quick

The dataset and text embeddings are written once under --out and reused by later runs.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import multiprocessing
import time
from pathlib import Path

import torch

from clip2scene_core.checkpoint import load_checkpoint
from clip2scene_core.model import restore_model
from clip2scene_core.train.config import merge_config, parse_overrides
from clip2scene_core.train.evaluation import evaluate_model, evaluate_teacher
from clip2scene_core.train.pairs import SimulatedTeacher
from clip2scene_core.train.pretrain import (CURVE_FILE, DEFAULT_PRETRAIN_CONFIG, MODEL_FILE, pretrain,
                                            recorded_pretrain_config)
from clip2scene_core.train.splits import open_split

#: Overrides of the full objective per row (config keys of train/pretrain.py).
ROWS: dict[str, dict] = {
    "baseline": {"pairs": {"num_sweeps": 1}, "loss": {"spatial_temporal_weight": 0.0}, "s3": {"enabled": False}},
    "w/o StCR": {"loss": {"spatial_temporal_weight": 0.0}},
    "w/o SCR": {"loss": {"semantic_weight": 0.0}, "eval": {"head": "consistency"}},
    "w/o S3": {"s3": {"enabled": False}},
    "KL": {"pairs": {"num_sweeps": 1}, "loss": {"spatial_temporal_weight": 0.0, "semantic_loss": "kl"},
           "s3": {"enabled": False}},
    "1 sweep": {"pairs": {"num_sweeps": 1}},
    "full": {},
    "5 sweeps": {"pairs": {"num_sweeps": 5}},
    # Eq. 1 replaced by a per-point cross-entropy to the same targets (calibration A/B, not in the paper)
    "baseline CE": {"pairs": {"num_sweeps": 1}, "loss": {"spatial_temporal_weight": 0.0, "semantic_loss": "ce"},
                    "s3": {"enabled": False}},
    "full CE": {"loss": {"semantic_loss": "ce"}},
    # S3 with the points' labels distribution-aligned to the teacher's (calibration A/B, not in the paper)
    "full aligned": {"s3": {"point_labels": "aligned"}},
    "w/o StCR aligned": {"loss": {"spatial_temporal_weight": 0.0}, "s3": {"point_labels": "aligned"}},
    "baseline+S3 aligned": {"pairs": {"num_sweeps": 1}, "loss": {"spatial_temporal_weight": 0.0},
                            "s3": {"point_labels": "aligned"}},
    # the baseline on 3 sweeps: what the extra sweeps do before Eq. 2-4 and S3 use them (not in the paper)
    "3 sweeps Eq. 1": {"loss": {"spatial_temporal_weight": 0.0}, "s3": {"enabled": False}},
}
DEFAULT_ROWS = ["baseline", "w/o StCR", "KL", "full"]
PAPER = {"baseline": 15.1, "w/o StCR": 19.8, "w/o SCR": 16.8, "w/o S3": 18.8, "KL": 0.0, "1 sweep": 18.7,
         "full": 20.8, "5 sweeps": 20.6, "baseline CE": math.nan, "full CE": math.nan,
         "full aligned": math.nan, "w/o StCR aligned": math.nan, "baseline+S3 aligned": math.nan,
         "3 sweeps Eq. 1": math.nan}
# A lighter LiDAR than the default HDL-32E-like one (a third of the azimuth steps), so each row can train
# to convergence (~1200 steps) in minutes on a CPU core; cameras and the simulated teacher keep their defaults.
WORLD = {"lidar": {"azimuth_steps": 360}, "num_sweeps": 4}
# The tiny preset widened to three levels: about as fast on CPU (the cost is in the kernel maps at these
# widths) and it learns the synthetic classes much better than the two-level 8-channel network.
NETWORK = {"widths": [16, 16, 32, 64, 32, 32, 16], "blocks_per_stage": 1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench_ablation", help="work folder (dataset, text, runs)")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help=f"rows to run, of {list(ROWS)} or 'all'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one training run per row and seed")
    parser.add_argument("--train-scenes", type=int, default=6)
    parser.add_argument("--val-scenes", type=int, default=2)
    parser.add_argument("--frames-per-scene", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=50, help="cosine schedule length (24 steps per epoch)")
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between learning-curve points")
    parser.add_argument("--short-epochs", type=int, default=8,
                        help="budget of the short runs of the calibration A/B (0 = skip them)")
    parser.add_argument("--short-rows", nargs="+", default=["full"],
                        help="rows also trained at the short budget for the calibration A/B")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.03, help="SGD learning rate (Eq. 1 sums 10 class terms)")
    parser.add_argument("--voxel-size", type=float, default=0.1)
    parser.add_argument("--sigma", type=float, default=None, help="teacher feature noise (default: the world's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a pretraining config value for every row, e.g. --set loss.semantic_loss=ce")
    parser.add_argument("--parallel", type=int, default=2, help="training runs at once (one torch thread each)")
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


def run_name(row: str) -> str:
    """The run folder's name of a row (``w/o S3`` -> ``wo_S3``)."""
    return row.replace("/", "").replace(" ", "_")


def percent(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:5.1f}"


def run_row(config: dict) -> dict:
    """Train one (row, seed) run in this process; its final metrics and learning curve."""
    logging.basicConfig(level=logging.WARNING)
    checkpoint = Path(config["out_dir"]) / MODEL_FILE
    if not checkpoint.is_file() or recorded_pretrain_config(load_checkpoint(checkpoint)) != config:
        checkpoint = pretrain(config)  # else: this exact run is done already (re-running only reprints)
    curve_file = Path(config["out_dir"]) / CURVE_FILE
    curve = [json.loads(line) for line in curve_file.read_text().splitlines()]
    return {"checkpoint": str(checkpoint), "curve": [(point["epoch"], point["camera_points_miou"]) for point in curve],
            "miou": curve[-1]["miou"], "camera_miou": curve[-1]["camera_points_miou"]}


def centred_miou(checkpoint: str, frames, text: torch.Tensor) -> float:
    """mIoU on the camera-visible val points of the checkpoint scored with its class embeddings'
    mean subtracted before the argmax (as trained, the run's own final curve point says it)."""
    state = torch.load(checkpoint, weights_only=True)
    model = restore_model(state["model_config"], state["state_dict"])
    centred = text - text.mean(dim=0, keepdim=True)
    result = evaluate_model(model, frames, centred, state["input_features"], state["voxel_size"], progress=False)
    return result.camera_points.miou()


def mean_spread(values: list[float]) -> str:
    """``mean +- half-range`` in %."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{100 * sum(values) / len(values):5.1f} +-{100 * (max(values) - min(values)) / 2:4.1f}"


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = list(ROWS) if args.rows == ["all"] else args.rows
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    torch.set_num_threads(1)
    out = Path(args.out)
    started = time.perf_counter()
    dataset = prepare_dataset(out / "data", args.train_scenes + args.val_scenes, args.frames_per_scene)
    text_file = prepare_text(out / "synthetic_text_minilm.pt")
    train_frames = args.train_scenes * args.frames_per_scene
    base = merge_config(DEFAULT_PRETRAIN_CONFIG, {
        "device": "cpu", "threads": 1,
        "data": {"kind": "synthetic", "root": str(dataset), "in_memory": True,
                 "train": {"frames": f"0:{train_frames}"}, "val": {"frames": f"{train_frames}:"}},
        "text": {"embeddings_file": str(text_file)},
        "teacher": {"sigma": args.sigma},
        "model_preset": "tiny", "model": NETWORK, "voxel_size": args.voxel_size, "epochs": args.epochs,
        "batch_size": args.batch_size, "optimizer": {"lr": args.lr}, "checkpoint_every": 10**6,
        "eval": {"every_epochs": args.eval_every},
        "s3": {"point_labels": "argmax"},  # the paper's S3; the "aligned" rows override it
    })
    base = merge_config(base, parse_overrides(args.overrides))
    steps = args.epochs * train_frames // args.batch_size
    print(f"dataset {dataset}: {train_frames} train frames, {args.val_scenes * args.frames_per_scene} val frames "
          f"(disjoint scenes); tiny network, {args.epochs} epochs ({steps} steps, cosine), batch {args.batch_size}, "
          f"seeds {args.seeds}; prepared in {time.perf_counter() - started:.0f} s", flush=True)

    # The teacher's own projected pseudo-labels on the val points that land in a camera.
    val = open_split(base["data"], "val")
    text = torch.load(text_file, weights_only=True)["embeddings"]
    sigma = args.sigma if args.sigma is not None else val.dataset.config.teacher.feature_noise_sigma
    teacher = evaluate_teacher(val.frames, SimulatedTeacher(text, sigma), text, progress=False)
    class_names = val.class_names
    print(f"\nteacher at the projected val points (mIoU {percent(teacher.miou())} %), "
          f"its most frequent labels per true class:")
    print("  " + teacher.format_confusions(class_names).replace("\n", "\n  "), flush=True)

    jobs = {(row, seed): merge_config(base, {**ROWS[row], "seed": seed, "out_dir": str(
        out / "runs" / f"{run_name(row)}_seed{seed}")}) for row in rows for seed in args.seeds}
    if args.short_epochs:
        for row in args.short_rows:
            for seed in args.seeds:
                jobs[(f"{row} short", seed)] = merge_config(base, {
                    **ROWS[row], "seed": seed, "epochs": args.short_epochs,
                    "eval": {"every_epochs": args.short_epochs},
                    "out_dir": str(out / "runs" / f"{run_name(row)}_short_seed{seed}")})
    results: dict[tuple[str, int], dict] = {}
    context = multiprocessing.get_context("spawn")  # fresh interpreters: one torch thread each
    with concurrent.futures.ProcessPoolExecutor(args.parallel, mp_context=context) as pool:
        futures = {pool.submit(run_row, config): key for key, config in jobs.items()}
        for future in concurrent.futures.as_completed(futures):
            key = futures[future]
            results[key] = future.result()
            print(f"  done: {key[0]:<19} seed {key[1]}  mIoU in view {percent(results[key]['camera_miou'])} %  "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)

    teacher_miou = teacher.miou()
    print(f"\nlearning curves: val mIoU % on camera-visible points (mean over seeds {args.seeds}) by epoch")
    epochs = [epoch for epoch, _ in results[(rows[0], args.seeds[0])]["curve"]]
    print(f"{'row':<19} " + " ".join(f"{epoch:>5}" for epoch in epochs) + "   plateau")
    table = {}
    for row in rows:
        curves = [results[(row, seed)]["curve"] for seed in args.seeds]
        mean = [sum(curve[i][1] or 0.0 for curve in curves) / len(curves) for i in range(len(epochs))]
        plateau = "yes" if len(mean) < 2 or abs(mean[-1] - mean[-2]) <= 0.01 else "still rising" \
            if mean[-1] > mean[-2] else "falling"
        print(f"{row:<19} " + " ".join(f"{100 * value:5.1f}" for value in mean) + f"   {plateau}")
        camera = [results[(row, seed)]["camera_miou"] for seed in args.seeds]
        table[row] = {"camera_miou": camera, "miou": [results[(row, seed)]["miou"] for seed in args.seeds],
                      "curve_mean": list(zip(epochs, mean)), "plateau": plateau,
                      "ratio": sum(camera) / len(camera) / teacher_miou}

    print(f"\n{'row':<19} {'in view %':>13} {'teacher %':>10} {'student/teacher':>16} {'all points %':>14} "
          f"{'paper %':>8}")
    print("-" * 85)
    for row, entry in table.items():
        print(f"{row:<19} {mean_spread(entry['camera_miou']):>13} {percent(teacher_miou):>10} "
              f"{entry['ratio']:>15.2f}x {mean_spread(entry['miou']):>14} {PAPER[row]:>8.1f}")
    print("-" * 85)
    print(f"(mean +- half-range over seeds {args.seeds}; 'in view' = the val points a camera sees, where the "
          f"teacher is scored)")

    ab = {}
    budgets = [(row, f"short ({args.short_epochs} epochs)", f"{row} short")
               for row in (args.short_rows if args.short_epochs else [])]
    budgets += [(row, "converged", row) for row in rows]
    print("\ncalibration A/B: class embeddings as trained vs mean-centred before the argmax, mIoU % in view")
    for row, budget, key in budgets:
        runs = [results[(key, seed)] for seed in args.seeds]
        pairs = [(run["camera_miou"], centred_miou(run["checkpoint"], val.frames, text)) for run in runs]
        ab[f"{row}, {budget}"] = pairs
        print(f"  {row:<19} {budget:<20} raw {mean_spread([a for a, _ in pairs])}   "
              f"centred {mean_spread([b for _, b in pairs])}")
    print(f"total {time.perf_counter() - started:.0f} s")
    (out / "results.json").write_text(json.dumps({"rows": table, "teacher_miou": teacher_miou,
                                                  "calibration": ab, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
