"""What ``clip2scene pretrain`` and ``clip2scene finetune`` share: the run flags and the run itself."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Mapping

from clip2scene_core.train.config import add_config_arguments, config_from_args

# argparse destination -> config key of the flags `add_training_arguments` adds
TRAINING_FLAGS = {
    "epochs": "epochs", "batch_size": "batch_size", "workers": "workers", "max_steps": "max_steps",
    "seed": "seed", "out": "out_dir", "device": "device", "resume": "resume",
}


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``/``--set`` and the flags every training run has (length, output, resuming)."""
    add_config_arguments(parser)
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


def run_training(defaults: Mapping[str, Any], args: argparse.Namespace, flags: Mapping[str, str],
                 train: Callable[[dict[str, Any]], Any]) -> int:
    """Merge the config (defaults, files, flags, ``--set``), then print it or train with it."""
    import yaml

    config = config_from_args(defaults, args, {**TRAINING_FLAGS, **flags})
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=False))
        return 0
    check_writable(Path(config["out_dir"]))
    print(f"wrote {train(config)}")
    return 0


def check_writable(folder: Path) -> None:
    """Fail before training, not hours later at the first checkpoint, when ``folder`` cannot be written.

    Raises OSError naming the folder and the reason (read-only, full, not a folder, ...).
    """
    from clip2scene_core.atomic_file import torch_save_atomically

    probe = folder / ".clip2scene-write-test"
    try:
        torch_save_atomically({"probe": True}, probe)
    except OSError as error:
        reason = getattr(error.__cause__, "strerror", None) or error.strerror
        raise OSError(error.errno, f"output folder {folder} is not writable: {reason}") from error
    probe.unlink()
