"""``clip2scene show``: draw one dataset frame (cameras with projected points + bird's-eye view) to a PNG."""
from __future__ import annotations

import argparse

from ..data import DATASETS, open_dataset
from ..visualize import save_frame_png


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic", help="dataset kind")
    parser.add_argument("--root", default=None, help="dataset folder (optional for synthetic)")
    parser.add_argument("--index", type=int, default=0, help="frame index")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--max-cameras", type=int, default=6, help="camera panels to draw at most")
    parser.add_argument("--dpi", type=int, default=80, help="PNG resolution, dots per inch")


def run(args: argparse.Namespace) -> int:
    dataset = open_dataset(args.dataset, args.root)
    if not -len(dataset) <= args.index < len(dataset):
        raise ValueError(f"--index {args.index} out of range: {args.dataset} has {len(dataset)} frames")
    frame = dataset[args.index]
    path = save_frame_png(
        frame, args.out, class_names=dataset.class_names, max_cameras=args.max_cameras, dpi=args.dpi
    )
    print(f"wrote {path} ({frame.num_points} points, {len(frame.cameras)} cameras)")
    return 0
