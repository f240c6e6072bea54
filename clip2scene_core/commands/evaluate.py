"""``clip2scene evaluate``: per-class IoU and mIoU of a checkpoint on a dataset split.

Annotation-free (class text embeddings in the checkpoint's text space) or fine-tuned (the checkpoint's
learned classifier); ``--mode auto`` picks fine-tuned when the checkpoint has a classifier. Prints the
table and writes ``iou.txt``, ``metrics.json`` and ``confusion.png`` to ``--out``.

Examples::

    clip2scene evaluate --checkpoint runs/pretrain/model.pt --out runs/eval
    clip2scene evaluate --checkpoint runs/ft/model.pt --dataset nuscenes --root /data/nuscenes \\
        --set data.val.options.split=val
"""
from __future__ import annotations

import argparse

from clip2scene_core.data import DATASETS
from clip2scene_core.train.config import add_config_arguments, config_from_args, merge_config

FLAGS = {
    "checkpoint": "checkpoint", "mode": "mode", "dataset": "data.kind", "root": "data.root", "split": "split",
    "head": "head", "out": "out_dir", "device": "device", "backend": "backend",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", help="clip2scene checkpoint to evaluate")
    parser.add_argument("--mode", choices=("auto", "annotation-free", "finetuned"))
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset kind (data.kind)")
    parser.add_argument("--root", help="dataset folder (data.root)")
    parser.add_argument("--split", choices=("train", "val"), help="which configured split (default val)")
    parser.add_argument("--frames", help="frame selection of that split, e.g. 0:100:5")
    parser.add_argument("--head", choices=("semantic", "consistency"))
    parser.add_argument("--teacher-baseline", action="store_true",
                        help="also score the simulated teacher's projected pseudo-labels (synthetic world)")
    parser.add_argument("--out", help="report folder (out_dir)")
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--backend", help="sparse backend to run the network with: pure | spconv | minkowski "
                                          "(default: the checkpoint's)")


def run(args: argparse.Namespace) -> int:
    from clip2scene_core.train.evaluation import DEFAULT_EVALUATE_CONFIG, evaluate_checkpoint

    config = config_from_args(DEFAULT_EVALUATE_CONFIG, args, FLAGS)
    if args.frames is not None:
        config = merge_config(config, {"data": {config["split"]: {"frames": args.frames}}})
    if args.teacher_baseline:
        config["teacher_baseline"] = True
    report = evaluate_checkpoint(config)
    print(report["table"])
    if report["teacher_miou"] is not None:
        print(f"teacher projected pseudo-labels: mIoU {100 * report['teacher_miou']:.1f} % (points in view)")
    print(f"mode {report['mode']}; wrote " + ", ".join(str(p) for p in report["paths"].values()))
    return 0
