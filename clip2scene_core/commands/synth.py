"""``clip2scene synth``: write a synthetic dataset (layout: ``clip2scene_core/data/synthetic.py``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..data.synthetic import (
    DEFAULT_FRAMES_PER_SCENE, DEFAULT_NUM_SCENES, SyntheticConfig, write_synthetic_dataset,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write (created if missing)")
    parser.add_argument("--scenes", type=int, default=DEFAULT_NUM_SCENES, help="number of scenes")
    parser.add_argument("--frames-per-scene", type=int, default=DEFAULT_FRAMES_PER_SCENE,
                        help="frames per scene (10 Hz)")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--config", default=None,
                        help="YAML/JSON file of SyntheticConfig overrides, e.g. {lidar: {beams: 16}}")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")


def load_config(path: str) -> SyntheticConfig:
    """SyntheticConfig from a YAML or JSON file of overrides; errors name the file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"synthetic config not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{file} is not valid YAML/JSON: {error}") from error
    return SyntheticConfig.from_dict(data, str(file))


def run(args: argparse.Namespace) -> int:
    if args.scenes < 1 or args.frames_per_scene < 1:
        raise ValueError("--scenes and --frames-per-scene must be >= 1")
    config = load_config(args.config) if args.config else SyntheticConfig()
    out = write_synthetic_dataset(args.out, seed=args.seed, num_scenes=args.scenes,
                                  frames_per_scene=args.frames_per_scene, config=config,
                                  overwrite=args.overwrite)
    print(json.dumps({"out": str(out), "scenes": args.scenes, "frames": args.scenes * args.frames_per_scene,
                      "seed": args.seed}))
    return 0
