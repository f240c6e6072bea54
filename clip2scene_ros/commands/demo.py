"""``clip2scene demo``: the whole system on the embedded synthetic default (see ``clip2scene_ros.demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path


#: One-line help of the subcommand in ``clip2scene --help``.
HELP = "train, record, replay through the ROS 2 node and report, on the synthetic world"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="report and pictures folder")
    parser.add_argument("--config", type=Path, default=None, help="demo YAML (default config/demo.yaml)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/clip2scene/demo").expanduser(),
                        help="where the trained demo checkpoint and text embeddings are cached")
    parser.add_argument("--retrain", action="store_true", help="train again even if a checkpoint is cached")
    parser.add_argument("--rate", type=float, default=None,
                        help="replay at this speed without lock-step (default: the config's lock-step replay)")


def run(args: argparse.Namespace) -> int:
    # The demo drives a ROS 2 node; core never imports ROS at module level, so import it here.
    from clip2scene_ros.demo import load_demo_config, run_demo

    report = run_demo(args.out, load_demo_config(args.config), args.cache_dir, args.retrain, args.rate)
    print((Path(args.out) / "report.txt").read_text())
    return 0 if report["live"]["evaluated"] else 1
