"""Optimiser and learning-rate schedule.

The paper's public code trains with SGD (lr 0.1, momentum 0.9, dampening 0.1, weight decay 1e-4) and a
cosine schedule; here the cosine runs per optimiser step, with an optional linear warmup.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

import torch

DEFAULT_OPTIMIZER_CONFIG: dict[str, Any] = {
    "lr": 0.1,
    "momentum": 0.9,
    "dampening": 0.1,  # as the public code's configs set it
    "weight_decay": 1e-4,
    "nesterov": False,
}

DEFAULT_SCHEDULE_CONFIG: dict[str, Any] = {
    "warmup_steps": 0,  # linear warmup from lr / warmup_steps up to lr
    "min_lr_ratio": 0.0,  # the cosine ends at lr * min_lr_ratio
}


def _merge(name: str, defaults: Mapping[str, Any], cfg: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Defaults overridden by ``cfg``; unknown keys raise ``ValueError`` naming them."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {name} option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **cfg}


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict], cfg: Optional[Mapping[str, Any]] = None
) -> torch.optim.SGD:
    """SGD with the paper code's settings, overridable by ``cfg``.

    Args:
        params: model parameters or parameter groups.
        cfg: optional overrides of :data:`DEFAULT_OPTIMIZER_CONFIG` (``lr``, ``momentum``,
            ``dampening``, ``weight_decay``, ``nesterov``).
    Returns:
        A ``torch.optim.SGD`` optimiser.
    """
    options = _merge("optimizer", DEFAULT_OPTIMIZER_CONFIG, cfg)
    if options["lr"] <= 0:
        raise ValueError(f"optimizer lr must be > 0, got {options['lr']}")
    if options["nesterov"] and options["dampening"] != 0:
        raise ValueError("optimizer nesterov momentum needs dampening 0")
    return torch.optim.SGD(
        params,
        lr=float(options["lr"]),
        momentum=float(options["momentum"]),
        dampening=float(options["dampening"]),
        weight_decay=float(options["weight_decay"]),
        nesterov=bool(options["nesterov"]),
    )


@dataclass
class WarmupCosine:
    """Learning-rate factor at step ``s``: linear warmup, then a half cosine down to ``min_lr_ratio``.

    A callable object (not a closure) so that ``LambdaLR.state_dict()`` stores its plain fields and a
    resumed schedule continues exactly.
    """

    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, cfg: Optional[Mapping[str, Any]] = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step cosine schedule with optional linear warmup; call ``scheduler.step()`` after each step.

    Args:
        optimizer: the optimiser whose learning rates are scheduled (their initial values are the peaks).
        total_steps: optimiser steps in the whole run (epochs x steps per epoch).
        cfg: optional overrides of :data:`DEFAULT_SCHEDULE_CONFIG` (``warmup_steps``, ``min_lr_ratio``).
    Returns:
        A ``LambdaLR`` scheduler driven by :class:`WarmupCosine`.
    """
    options = _merge("schedule", DEFAULT_SCHEDULE_CONFIG, cfg)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = int(options["warmup_steps"])
    if not 0 <= warmup <= total_steps:
        raise ValueError(f"schedule warmup_steps must lie in 0..{total_steps}, got {warmup}")
    ratio = float(options["min_lr_ratio"])
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"schedule min_lr_ratio must lie in [0, 1], got {ratio}")
    factor = WarmupCosine(int(total_steps), warmup, ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
