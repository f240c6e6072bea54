"""``clip2scene export-bag``: write a dataset (synthetic by default) to a rosbag2 (mcap or sqlite3).

Topics and layout are described in :mod:`clip2scene_ros.bag`. The bag is written with the pure-Python
``rosbags`` library, so no ROS installation is needed beyond the message packages.
"""
from __future__ import annotations

import argparse
from typing import Any

import yaml


#: One-line help of the subcommand in ``clip2scene --help``.
HELP = "write a dataset (synthetic by default) to a rosbag2"

def split_assignment(text: str, what: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE)``, stripped; ValueError naming ``what`` when malformed."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"{what} must look like KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def dataset_options(pairs: list[str]) -> dict[str, Any]:
    """``["num_scenes=1", ...]`` -> loader keyword options (values parsed as YAML: numbers, lists, ...)."""
    options = {}
    for pair in pairs:
        key, value = split_assignment(pair, "--option")
        options[key] = yaml.safe_load(value)
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="bag folder to create (must not exist)")
    parser.add_argument("--dataset", default="synthetic",
                        help="dataset kind: synthetic (default), nuscenes, semantickitti, scannet")
    parser.add_argument("--root", help="dataset folder (synthetic: a folder written by `clip2scene synth`; "
                                       "default: generated on the fly)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset loader option, value parsed as YAML (repeatable), e.g. num_scenes=1")
    parser.add_argument("--first-frame", type=int, default=0, help="index of the first frame to export")
    parser.add_argument("--frames", type=int, help="export at most this many frames (default: all)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage")
    parser.add_argument("--no-cameras", action="store_true",
                        help="leave out images, camera infos and calibration")
    parser.add_argument("--calibration-file",
                        help="where to write the calibration YAML (default: <output>/calibration.yaml)")


def run(args: argparse.Namespace) -> int:
    from clip2scene_core.clip.prompts import load_thing_classes
    from clip2scene_core.data import open_dataset
    from clip2scene_ros.bag_export import export_frames  # ROS message packages load only for this command

    dataset = open_dataset(args.dataset, args.root, **dataset_options(args.option))
    if not 0 <= args.first_frame < len(dataset):
        raise ValueError(f"--first-frame {args.first_frame} is outside the dataset's {len(dataset)} frames")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    end = len(dataset) if args.frames is None else min(len(dataset), args.first_frame + args.frames)
    indices = range(args.first_frame, end)
    summary = export_frames((dataset[i] for i in indices), args.output, dataset.class_names,
                            storage=args.storage, dataset=args.dataset,
                            include_cameras=not args.no_cameras,
                            calibration_file=args.calibration_file, total=len(indices),
                            thing_classes=load_thing_classes(args.dataset))
    print(f"wrote {summary.frames} frames to {summary.path} ({args.storage})")
    for topic, count in sorted(summary.counts.items()):
        print(f"  {topic:<40} {count:>6} messages")
    if summary.calibration_file is not None:
        print(f"calibration: {summary.calibration_file}")
    return 0
