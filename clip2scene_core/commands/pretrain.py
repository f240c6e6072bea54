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

from clip2scene_core.data import DATASETS
from clip2scene_core.train.config import add_config_arguments, config_from_args

# argparse destination -> config key
FLAGS = {
    "dataset": "data.kind", "root": "data.root", "teacher": "teacher.kind", "clip_model": "teacher.model_name",
    "clip_pretrained": "teacher.pretrained", "text_encoder": "text.encoder", "epochs": "epochs",
    "batch_size": "batch_size", "out": "out_dir", "device": "device", "resume": "resume",
    "max_steps": "max_steps", "workers": "workers", "seed": "seed", "sweeps": "pairs.num_sweeps",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset kind (data.kind)")
    parser.add_argument("--root", help="dataset folder (data.root)")
    parser.add_argument("--teacher", choices=("simulated", "maskclip"), help="pixel teacher (teacher.kind)")
    parser.add_argument("--clip-model", help="open_clip architecture of the MaskCLIP teacher")
    parser.add_argument("--clip-pretrained", help="open_clip tag in the local cache, or a checkpoint file")
    parser.add_argument("--text-encoder", choices=("minilm", "open_clip"), help="text space (text.encoder)")
    parser.add_argument("--sweeps", type=int, help="K sweeps per frame, counting the keyframe")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="frames per process and step")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (resumable)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", help="output folder (out_dir)")
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--resume", nargs="?", const="auto",
                        help="continue from a training state (default: OUT/last.pt)")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")


def run(args: argparse.Namespace) -> int:
    import yaml

    from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, pretrain

    config = config_from_args(DEFAULT_PRETRAIN_CONFIG, args, FLAGS)
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=False))
        return 0
    path = pretrain(config)
    print(f"wrote {path}")
    return 0
