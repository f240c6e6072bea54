"""``clip2scene finetune``: fine-tune a (pretrained) network on a fraction of the labelled frames.

Examples::

    clip2scene finetune --checkpoint runs/pretrain/model.pt --label-fraction 0.01 --out runs/ft1
    clip2scene finetune --config config/finetune.yaml --set optimizer.lr=0.01

The linear (cosine) classifier starts from the class text embeddings. Every config value can be
overridden with ``--set key.sub=value`` (see config/finetune.yaml).
"""
from __future__ import annotations

import argparse

from clip2scene_core.commands.training import add_training_arguments, run_training
from clip2scene_core.data import DATASETS

# argparse destination -> config key (besides the shared training flags)
FLAGS = {"checkpoint": "checkpoint", "label_fraction": "label_fraction", "dataset": "data.kind", "root": "data.root"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--checkpoint", help="pretrained clip2scene checkpoint (omit: random initialisation)")
    parser.add_argument("--label-fraction", type=float,
                        help="share of training frames with labels (0.01 = every 100th)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset kind (data.kind)")
    parser.add_argument("--root", help="dataset folder (data.root)")


def run(args: argparse.Namespace) -> int:
    from clip2scene_core.train.finetune import DEFAULT_FINETUNE_CONFIG, finetune

    return run_training(DEFAULT_FINETUNE_CONFIG, args, FLAGS, finetune)
