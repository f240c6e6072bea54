"""Which torch device a job runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against the machine."""
from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cpu`` / ``cuda`` / ``cuda:N`` checked against what exists.

    Raises ValueError naming the device and what is wrong (unknown kind, no CUDA, no such GPU).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)
