"""The ``clip2scene`` command line (also ``python -m clip2scene_core``).

Each subcommand lives in ``clip2scene_core/commands/<name>.py`` and provides
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
subcommand runs, so ``clip2scene --help`` stays fast and needs neither torch nor ROS.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("clip2scene_core.commands.demo", "train, record, replay through the ROS 2 node and report, on the synthetic world"),
    "synth": ("clip2scene_core.commands.synth", "write a synthetic dataset (procedural streets, LiDAR, cameras, teacher)"),
    "export-bag": ("clip2scene_core.commands.export_bag", "write a dataset (synthetic by default) to a rosbag2"),
    "evaluate-bag": ("clip2scene_core.commands.evaluate_bag", "score the segmentation node on a bag (live replay or offline)"),
    "show": ("clip2scene_core.commands.show", "draw a dataset frame with its labels to a PNG"),
    "encode-text": ("clip2scene_core.commands.encode_text", "encode class names into text embeddings (85 templates)"),
    "pretrain": ("clip2scene_core.commands.pretrain", "annotation-free pretraining of the 3D network from a CLIP teacher"),
    "finetune": ("clip2scene_core.commands.finetune", "fine-tune a network on a fraction of labelled frames"),
    "evaluate": ("clip2scene_core.commands.evaluate", "per-class IoU / mIoU of a checkpoint (annotation-free or fine-tuned)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip2scene",
        description="Annotation-free LiDAR semantic segmentation with CLIP (CLIP2Scene, CVPR 2023).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse only up to the subcommand name; the subcommand's own parser takes the rest.
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module_name, help_text = COMMANDS[args.command]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"clip2scene {args.command}", description=help_text)
    module.add_arguments(sub_parser)
    sub_args = sub_parser.parse_args(rest)
    try:
        return int(module.run(sub_args) or 0)
    except (OSError, ValueError) as error:
        # Bad input, or an output folder that is read-only or full: say what was wrong, without a
        # traceback (-v shows it).
        logging.getLogger("clip2scene").error("%s", error, exc_info=args.verbose)
        return 2


if __name__ == "__main__":
    sys.exit(main())
