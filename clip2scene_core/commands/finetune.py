"""``clip2scene finetune``: fine-tune a (pretrained) network on a fraction of the labelled frames.

Examples::

    clip2scene finetune --checkpoint runs/pretrain/model.pt --label-fraction 0.01 --out runs/ft1
    clip2scene finetune --config config/finetune.yaml --set optimizer.lr=0.01

The linear (cosine) classifier starts from the class text embeddings. Every config value can be
overridden with ``--set key.sub=value`` (see config/finetune.yaml).
"""
from __future__ import annotations

import argparse

from clip2scene_core.data import DATASETS
from clip2scene_core.train.config import add_config_arguments, config_from_args

FLAGS = {
    "checkpoint": "checkpoint", "label_fraction": "label_fraction", "dataset": "data.kind", "root": "data.root",
    "epochs": "epochs", "batch_size": "batch_size", "out": "out_dir", "device": "device", "resume": "resume",
    "max_steps": "max_steps", "workers": "workers", "seed": "seed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", help="pretrained clip2scene checkpoint (omit: random initialisation)")
    parser.add_argument("--label-fraction", type=float,
                        help="share of training frames with labels (0.01 = every 100th)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset kind (data.kind)")
    parser.add_argument("--root", help="dataset folder (data.root)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", help="output folder (out_dir)")
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--resume", nargs="?", const="auto",
                        help="continue from a training state (default: OUT/last.pt)")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")


def run(args: argparse.Namespace) -> int:
    import yaml

    from clip2scene_core.train.finetune import DEFAULT_FINETUNE_CONFIG, finetune

    config = config_from_args(DEFAULT_FINETUNE_CONFIG, args, FLAGS)
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=False))
        return 0
    path = finetune(config)
    print(f"wrote {path}")
    return 0
