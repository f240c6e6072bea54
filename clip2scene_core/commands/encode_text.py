"""``clip2scene encode-text``: class vocabulary -> text-embedding file (85 templates per class).

Examples::

    clip2scene encode-text --classes config/classes/nuscenes.yaml --out nuscenes_text.pt
    clip2scene encode-text --classes synthetic --text-encoder minilm --out synthetic_text.pt
    clip2scene encode-text --classes nuscenes --clip-model ViT-B-16 --clip-pretrained /models/vitb16.pt \
        --out nuscenes_text.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

from clip2scene_core.clip.embedding_file import save_text_embeddings
from clip2scene_core.clip.prompts import TEMPLATES, encode_classes, load_class_vocabulary
from clip2scene_core.clip.text_encoders import build_text_encoder, minilm_spec, open_clip_spec

TEXT_ENCODERS = ("open_clip", "minilm", "sentence-transformers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", required=True,
                        help="vocabulary YAML, or a dataset kind: "
                             "synthetic, nuscenes, semantickitti, scannet")
    parser.add_argument("--text-encoder", choices=TEXT_ENCODERS, default="open_clip",
                        help="text space (default: open_clip, which pairs with the MaskCLIP teacher)")
    parser.add_argument("--clip-model", default="ViT-B-16", help="open_clip architecture")
    parser.add_argument("--clip-pretrained", default="openai",
                        help="open_clip pretrained tag (must be in the local cache) or checkpoint file")
    parser.add_argument("--st-model", default=None,
                        help="sentence-transformers model folder (with --text-encoder sentence-transformers)")
    parser.add_argument("--cache-dir", default=None, help="text-embedding cache folder (default: none)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--out", required=True, help="output file (.pt)")


def _encoder_spec(args: argparse.Namespace) -> dict:
    if args.text_encoder == "minilm":
        return minilm_spec()
    if args.text_encoder == "sentence-transformers":
        if not args.st_model:
            raise ValueError("--text-encoder sentence-transformers needs --st-model FOLDER")
        folder = Path(args.st_model).expanduser()
        return {"kind": "sentence-transformers", "name": folder.name, "weights": str(folder)}
    return open_clip_spec(args.clip_model, args.clip_pretrained)


def run(args: argparse.Namespace) -> int:
    classes = load_class_vocabulary(args.classes)
    encoder = build_text_encoder(_encoder_spec(args), device=args.device)
    embeddings = encode_classes(encoder, classes, TEMPLATES, cache_dir=args.cache_dir)
    path = save_text_embeddings(args.out, embeddings, [c.name for c in classes], encoder.spec, TEMPLATES)
    print(f"wrote {len(classes)} x {embeddings.shape[1]} embeddings ({encoder.spec['kind']} "
          f"{encoder.name}, {len(TEMPLATES)} templates) to {path}")
    return 0
