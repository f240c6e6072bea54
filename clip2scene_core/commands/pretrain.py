"""``clip2scene pretrain``: annotation-free pretraining of the 3D network from a CLIP teacher.

Examples::

    clip2scene pretrain --config config/pretrain_demo.yaml
    clip2scene pretrain --dataset nuscenes --root /data/nuscenes --teacher maskclip \\
        --clip-pretrained /models/ViT-B-16.pt --set text.encoder=open_clip --out runs/nusc
    clip2scene pretrain --config config/pretrain_demo.yaml --resume     # continue out_dir/last.pt
    torchrun --nproc_per_node=4 -m clip2scene_core pretrain --config config/pretrain.yaml

Every config value can be overridden with ``--set key.sub=value`` (see config/pretrain.yaml).
"""
from __future__ import annotations

import argparse

from clip2scene_core.commands.training import add_training_arguments, run_training
from clip2scene_core.data import DATASETS

# argparse destination -> config key (besides the shared training flags)
FLAGS = {
    "dataset": "data.kind", "root": "data.root", "teacher": "teacher.kind", "clip_model": "teacher.model_name",
    "clip_pretrained": "teacher.pretrained", "text_encoder": "text.encoder", "sweeps": "pairs.num_sweeps",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset kind (data.kind)")
    parser.add_argument("--root", help="dataset folder (data.root)")
    parser.add_argument("--teacher", choices=("simulated", "maskclip"), help="pixel teacher (teacher.kind)")
    parser.add_argument("--clip-model", help="open_clip architecture of the MaskCLIP teacher")
    parser.add_argument("--clip-pretrained", help="open_clip tag in the local cache, or a checkpoint file")
    parser.add_argument("--text-encoder", choices=("minilm", "open_clip"), help="text space (text.encoder)")
    parser.add_argument("--sweeps", type=int, help="K sweeps per frame, counting the keyframe")


def run(args: argparse.Namespace) -> int:
    from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, pretrain

    return run_training(DEFAULT_PRETRAIN_CONFIG, args, FLAGS, pretrain)
