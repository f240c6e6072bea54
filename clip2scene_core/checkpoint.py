"""Self-describing checkpoints and resumable training state.

A checkpoint is a dict of plain Python types and tensors, loadable with ``torch.load(weights_only=True)``::

    {format: "clip2scene/1", model_config, state_dict, text_encoder: {kind, name, weights}, voxel_size,
     input_features, train_classes, metrics, extra}

A training state (for ``--resume``) is a checkpoint with one more key, ``training_state``: optimiser and
scheduler state, epoch/step and every RNG state, so a resumed run continues an interrupted one exactly.
Files are written atomically (temporary file in the same folder, then ``os.replace``): a failed write
(read-only or full disk) raises ``AtomicWriteError`` and leaves the previous file as it was.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from clip2scene_core.atomic_file import torch_save_atomically

logger = logging.getLogger(__name__)

FORMAT = "clip2scene/1"
REQUIRED_KEYS = (
    "format", "model_config", "state_dict", "text_encoder", "voxel_size", "input_features",
    "train_classes", "metrics",
)
TEXT_ENCODER_KEYS = ("kind", "name", "weights")


def _to_plain(value: Any, where: str) -> Any:
    """``value`` as plain types + tensors (numpy scalars/arrays converted); raise naming ``where``."""
    if isinstance(value, np.generic):  # checked first: np.float64 is also a float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int")
            plain[key] = _to_plain(item, f"{where}[{key!r}]")
        return plain
    if isinstance(value, (list, tuple)):
        return [_to_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints hold only plain types and tensors"
    )


def _check_text_encoder(text_encoder: Any) -> dict[str, Any]:
    if not isinstance(text_encoder, Mapping):
        raise TypeError(f"text_encoder must be a dict with keys {TEXT_ENCODER_KEYS}, got {text_encoder!r}")
    missing = [key for key in TEXT_ENCODER_KEYS if key not in text_encoder]
    if missing:
        raise ValueError(f"text_encoder spec lacks {missing}; got keys {sorted(text_encoder)}")
    return dict(text_encoder)


def _checkpoint_payload(
    *,
    model_config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    text_encoder: Mapping[str, Any],
    voxel_size: float,
    input_features: Any,
    train_classes: Sequence[str],
    metrics: Mapping[str, Any],
    extra: Optional[Mapping[str, Any]],
) -> dict[str, Any]:
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("state_dict must map parameter names to tensors")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0 metres, got {voxel_size}")
    if isinstance(train_classes, str) or not all(isinstance(c, str) for c in train_classes):
        raise TypeError(f"train_classes must be a list of class names, got {train_classes!r}")
    return {
        "format": FORMAT,
        "model_config": _to_plain(model_config, "model_config"),
        # Detached CPU copies: a checkpoint never pins GPU memory nor depends on the device it came from.
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "text_encoder": _to_plain(_check_text_encoder(text_encoder), "text_encoder"),
        "voxel_size": float(voxel_size),
        "input_features": _to_plain(input_features, "input_features"),
        "train_classes": list(train_classes),
        "metrics": _to_plain(metrics, "metrics"),
        "extra": _to_plain(extra or {}, "extra"),
    }


def save_checkpoint(
    path: str | Path,
    *,
    model_config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    text_encoder: Mapping[str, Any],
    voxel_size: float,
    input_features: Any,
    train_classes: Sequence[str],
    metrics: Mapping[str, Any],
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a self-describing model checkpoint atomically.

    Args:
        path: destination file (parent folders are created).
        model_config: the ``build_model`` config dict.
        state_dict: model parameters and buffers (moved to CPU).
        text_encoder: the text encoder's spec ``{kind, name, weights}`` (``TextEncoder.spec``).
        voxel_size: metres.
        input_features: what the network reads per point (e.g. ``["intensity"]``), plain types.
        train_classes: class names the model was trained with, label order.
        metrics: plain-typed results (numpy scalars are converted).
        extra: optional further plain-typed entries, stored under ``"extra"``.
    Returns:
        The path written.
    """
    payload = _checkpoint_payload(
        model_config=model_config, state_dict=state_dict, text_encoder=text_encoder,
        voxel_size=voxel_size, input_features=input_features, train_classes=train_classes,
        metrics=metrics, extra=extra,
    )
    path = Path(path)
    torch_save_atomically(payload, path, durable=True)
    logger.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint` (or :func:`save_training_state`).

    Args:
        path: checkpoint file.
        map_location: device for the tensors.
    Returns:
        The checkpoint dict (keys as in the module docstring).
    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: the file is not a ``clip2scene/1`` checkpoint (says what was found instead).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is an empty file (0 bytes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds (IndexError for a text file): all mean "not one"
        lines = str(error).strip().splitlines()
        detail = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise ValueError(f"{path} is not a readable clip2scene checkpoint ({detail})") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{path} is not a clip2scene checkpoint: it holds a {type(payload).__name__}")
    if payload.get("format") != FORMAT:
        if "format" in payload:
            found = repr(payload["format"])
        else:
            found = f"no 'format' key (keys: {sorted(payload)})"
        raise ValueError(f"{path} is not a {FORMAT} checkpoint: found {found}")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise ValueError(f"{path} is a damaged {FORMAT} checkpoint: missing {missing}")
    _check_text_encoder(payload["text_encoder"])
    return payload


def _rng_states() -> dict[str, Any]:
    """Every global RNG state as tensors / plain numbers (safe for ``weights_only`` loading)."""
    version, mt_state, gauss_next = random.getstate()
    bit_generator, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": bit_generator, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy = states["numpy"]
    np.random.set_state((
        numpy["bit_generator"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
        numpy["has_gauss"], numpy["cached_gaussian"],
    ))
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


def save_training_state(
    path: str | Path,
    *,
    model_config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    text_encoder: Mapping[str, Any],
    voxel_size: float,
    input_features: Any,
    train_classes: Sequence[str],
    metrics: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler],
    epoch: int,
    step: int,
    generators: Optional[Mapping[str, torch.Generator]] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a resumable training state: a full checkpoint plus optimiser, scheduler, counters and RNGs.

    The file is also a valid model checkpoint (:func:`load_checkpoint` reads it).

    Args:
        path: destination file.
        model_config, state_dict, text_encoder, voxel_size, input_features, train_classes, metrics,
            extra: as for :func:`save_checkpoint`.
        optimizer: its ``state_dict()`` is stored.
        scheduler: optional LR scheduler; its ``state_dict()`` is stored.
        epoch: epoch to resume at (0-based; the first epoch *not* finished).
        step: optimiser steps taken so far.
        generators: named torch generators the loop draws from (data order, S3 coin, ...).
        scaler: optional fp16 ``GradScaler``.
    Returns:
        The path written.
    """
    payload = _checkpoint_payload(
        model_config=model_config, state_dict=state_dict, text_encoder=text_encoder,
        voxel_size=voxel_size, input_features=input_features, train_classes=train_classes,
        metrics=metrics, extra=extra,
    )
    payload["training_state"] = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "rng": _rng_states(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    path = Path(path)
    torch_save_atomically(payload, path, durable=True)
    logger.info("saved training state %s (epoch %d, step %d)", path, epoch, step)
    return path


def load_training_state(
    path: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
    generators: Optional[Mapping[str, torch.Generator]] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Restore a :func:`save_training_state` file: optimiser, scheduler, scaler, generators and RNGs.

    The model weights are *not* loaded here: build the model from ``result["model_config"]``, load
    ``result["state_dict"]`` into it, then build the optimiser over its parameters and call this.

    Args:
        path: training-state file.
        optimizer, scheduler, scaler: objects to restore in place (built as in the interrupted run).
        generators: named torch generators to restore; each name must be in the file.
        map_location: device for the loaded tensors.
    Returns:
        The checkpoint dict; ``result["training_state"]["epoch"]`` / ``["step"]`` say where to go on.
    Raises:
        ValueError: the file is a plain checkpoint without training state, or lacks a named generator.
    """
    payload = load_checkpoint(path, map_location=map_location)
    state = payload.get("training_state")
    if state is None:
        raise ValueError(f"{path} is a model checkpoint without training state; it cannot be resumed")
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if state["scheduler"] is None:
            raise ValueError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    saved_generators = state["generators"]
    for name, generator in (generators or {}).items():
        if name not in saved_generators:
            raise ValueError(f"{path} has no state for generator {name!r} (has {sorted(saved_generators)})")
        generator.set_state(saved_generators[name].cpu())
    _set_rng_states(state["rng"])
    logger.info("resumed from %s at epoch %d, step %d", path, state["epoch"], state["step"])
    return payload
