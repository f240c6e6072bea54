"""``clip2scene evaluate-bag``: score the segmentation node on an exported bag.

``--mode live`` plays the bag into the node (the running one, or one started here with
``--checkpoint``) and records its output into a new bag; ``--mode offline`` runs the same `Segmenter`
over the bag without ROS. Both print a per-class IoU table with mIoU (split at class-list changes),
latency p50/p95 and dropped frames, and ``--report`` writes it as JSON. A run that fails writes no
report.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from clip2scene_ros.commands.export_bag import split_assignment

LOGGER = logging.getLogger("clip2scene.evaluate_bag")


#: One-line help of the subcommand in ``clip2scene --help``.
HELP = "score the segmentation node on a bag (live replay or offline)"

def class_change(text: str) -> tuple[int, tuple[str, ...]]:
    """``"FRAME:name,name,..."`` -> ``(FRAME, names)`` (argparse type of ``--set-classes``)."""
    frame, separator, names = text.partition(":")
    classes = tuple(name.strip() for name in names.split(",") if name.strip())
    if not separator or not frame.strip().isdigit() or not classes:
        raise argparse.ArgumentTypeError(f"expected FRAME:name,name,... got {text!r}")
    return int(frame), classes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag written by `clip2scene export-bag`")
    parser.add_argument("--mode", choices=("live", "offline"), default="live",
                        help="live: replay into the ROS node; offline: same Segmenter, no ROS")
    parser.add_argument("--checkpoint", help="model checkpoint (offline: required; live: start a node "
                                             "with it, else use the running node)")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="class list to start with "
                        "(default: the node's / the checkpoint's)")
    parser.add_argument("--set-classes", action="append", type=class_change, default=[],
                        metavar="FRAME:NAME,NAME", help="change the class list before frame FRAME "
                        "(repeatable); the report splits mIoU at each change")
    parser.add_argument("--map", action="append", default=[], metavar="NAME=DATASET_CLASS",
                        help="count predicted class NAME as dataset class DATASET_CLASS "
                             "(repeatable; default: identity by name)")
    parser.add_argument("--report", help="write the report as JSON here")
    parser.add_argument("--rate", type=float, default=1.0, help="live: playback speed factor")
    parser.add_argument("--max-gap", type=float, default=1.0,
                        help="live: shorten longer pauses of the recording (e.g. between scenes) to this, s")
    parser.add_argument("--extra-topic", action="append", default=[], metavar="TOPIC",
                        help="live: also play this bag topic (repeatable), e.g. /CAM_FRONT/image")
    parser.add_argument("--wait-for-output", action="store_true",
                        help="live: publish each cloud only after the previous one was labelled")
    parser.add_argument("--output-bag", help="live: bag to record the node's output into "
                                             "(default: <bag>_output_<time>)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="live: storage of the output bag")
    parser.add_argument("--node-name", default="/clip2scene_segment", help="live: the node's name")
    parser.add_argument("--points-topic", default="/lidar/points", help="the bag's cloud topic")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="live: seconds to wait for the node")
    parser.add_argument("--output-timeout", type=float, default=30.0,
                        help="live: seconds to wait for outstanding outputs")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (offline, or a started node)")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="points scoring below it are unknown (offline, or a started node)")
    parser.add_argument("--prompt-template", action="append", metavar="TEMPLATE",
                        help="prompt template with one {} (repeatable; default: the 85-template ensemble)")
    parser.add_argument("--text-cache-dir", help="text-embedding cache folder")


def _schedule(args: argparse.Namespace) -> list:
    from clip2scene_ros.bag_evaluation import ClassChange

    changes = [ClassChange(0, tuple(args.classes))] if args.classes else []
    return changes + [ClassChange(frame, names) for frame, names in args.set_classes]


def _run_offline(args: argparse.Namespace, schedule: list):
    from clip2scene_core.segmenter import Segmenter
    from clip2scene_ros.bag_evaluation import segment_bag

    if not args.checkpoint:
        raise ValueError("--mode offline needs --checkpoint")
    segmenter = Segmenter(args.checkpoint, device=args.device, score_threshold=args.score_threshold,
                          prompt_templates=args.prompt_template, text_cache_dir=args.text_cache_dir)
    return segment_bag(args.bag, segmenter, schedule, points_topic=args.points_topic)


def _node_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters of a node started for the replay: reliable input so no cloud is lost in transport."""
    parameters: dict[str, Any] = {"device": args.device, "score_threshold": args.score_threshold,
                                  "reliability": "reliable", "depth": 10}
    if args.prompt_template:
        parameters["prompt_templates"] = list(args.prompt_template)
    if args.text_cache_dir:
        parameters["text_cache_dir"] = str(Path(args.text_cache_dir).resolve())
    return parameters


def _run_live(args: argparse.Namespace, schedule: list, output: Path):
    from clip2scene_ros.replay import ReplayTopics, replay_bag, running_segment_node

    options = dict(rate=args.rate, max_gap=args.max_gap, schedule=schedule, node_name=args.node_name,
                   topics=ReplayTopics(points=args.points_topic), extra_topics=args.extra_topic,
                   wait_for_output=args.wait_for_output,
                   startup_timeout=args.startup_timeout, output_timeout=args.output_timeout,
                   storage=args.storage)
    if not args.checkpoint:
        return replay_bag(args.bag, output, **options)
    log_path = output.parent / f"{output.name}.node.log"
    with running_segment_node(args.checkpoint, _node_parameters(args), log_path, args.points_topic) as node:
        print(f"node log: {log_path}")
        return replay_bag(args.bag, output, alive=lambda: node.poll() is None, **options)


def _write_json(path: Path, payload: dict) -> None:
    """Write atomically, so a report file is only ever a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from clip2scene_core.metrics import dataset_label_table
    from clip2scene_ros.bag import read_input
    from clip2scene_ros.bag_evaluation import changes_at, evaluate_recording

    mapping = dict(split_assignment(pair, "--map") for pair in args.map)
    schedule = _schedule(args)
    # Bad input fails here, before any work: the bag, the schedule, the mapping.
    ground_truth = read_input(args.bag, args.points_topic)
    changes_at(schedule, len(ground_truth.stamps))
    dataset_label_table([], ground_truth.class_names, mapping)
    output: Optional[Path] = None
    if args.mode == "offline":
        recording = _run_offline(args, schedule)
    else:
        from clip2scene_ros.replay import ReplayError

        bag = Path(args.bag)
        output = Path(args.output_bag) if args.output_bag else bag.parent / (
            f"{bag.name}_output_{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            recording = _run_live(args, schedule, output)
        except ReplayError as error:
            LOGGER.error("live replay failed, no report written: %s", error)
            return 1
    evaluation = evaluate_recording(ground_truth, recording, mapping, schedule)
    report = {"mode": args.mode, "bag": str(Path(args.bag).resolve()),
              "output_bag": str(output.resolve()) if output else None,
              "checkpoint": args.checkpoint, **evaluation.report}
    print(evaluation.format_table())
    if output is not None:
        print(f"recorded output: {output}")
    if args.report:
        _write_json(Path(args.report), report)
        print(f"report: {args.report}")
    return 0
