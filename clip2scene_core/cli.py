"""The ``clip2scene`` command line (also ``python -m clip2scene_core``).

Each subcommand lives in ``clip2scene_core/commands/<name>.py`` and provides
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
subcommand runs, so ``clip2scene --help`` stays fast and needs neither torch nor ROS. Other packages
add subcommands through the ``clip2scene.commands`` entry-point group (name = command, value = a
module with ``HELP``, ``add_arguments`` and ``run``): the ROS application's commands come that way,
so this library never depends on the ROS layer.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points
from typing import Optional, Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("clip2scene_core.commands.synth", "write a synthetic dataset (procedural streets, LiDAR, cameras, teacher)"),
    "show": ("clip2scene_core.commands.show", "draw a dataset frame with its labels to a PNG"),
    "encode-text": ("clip2scene_core.commands.encode_text", "encode class names into text embeddings (85 templates)"),
    "pretrain": ("clip2scene_core.commands.pretrain", "annotation-free pretraining of the 3D network from a CLIP teacher"),
    "finetune": ("clip2scene_core.commands.finetune", "fine-tune a network on a fraction of labelled frames"),
    "evaluate": ("clip2scene_core.commands.evaluate", "per-class IoU / mIoU of a checkpoint (annotation-free or fine-tuned)"),
}
PLUGIN_GROUP = "clip2scene.commands"


def all_commands() -> dict[str, tuple[str, str]]:
    """:data:`COMMANDS` plus the subcommands registered in the ``clip2scene.commands`` group."""
    found = dict(COMMANDS)
    for point in entry_points(group=PLUGIN_GROUP):
        found[point.name] = (point.value, importlib.import_module(point.value).HELP)
    return found


def build_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip2scene",
        description="Annotation-free LiDAR semantic segmentation with CLIP (CLIP2Scene, CVPR 2023).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in commands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = all_commands()
    parser = build_parser(commands)
    # Parse only up to the subcommand name; the subcommand's own parser takes the rest.
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module_name, help_text = commands[args.command]
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
