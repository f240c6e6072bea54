"""SGD defaults follow the paper's code; the per-step cosine schedule with warmup has the right shape."""
from __future__ import annotations

import math

import pytest
import torch

from clip2scene_core.train.schedule import build_optimizer, build_scheduler


def parameters():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_optimizer_defaults_are_the_paper_codes_sgd():
    optimizer = build_optimizer(parameters())
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    settings = (group["lr"], group["momentum"], group["dampening"], group["weight_decay"])
    assert settings == (0.1, 0.9, 0.1, 1e-4)


def test_optimizer_options_override_and_unknown_options_fail():
    group = build_optimizer(parameters(), {"lr": 0.01, "dampening": 0.0}).param_groups[0]
    assert group["lr"] == 0.01 and group["dampening"] == 0.0
    with pytest.raises(ValueError, match="learning_rate"):
        build_optimizer(parameters(), {"learning_rate": 0.01})


def learning_rates(total, cfg=None):
    optimizer = build_optimizer(parameters(), {"lr": 1.0})
    scheduler = build_scheduler(optimizer, total, cfg)
    rates = []
    for _ in range(total + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_schedule_falls_from_peak_to_floor():
    rates = learning_rates(10)
    for step, rate in enumerate(rates):
        assert rate == pytest.approx(0.5 * (1 + math.cos(math.pi * step / 10)))
    floor = learning_rates(10, {"min_lr_ratio": 0.1})
    assert floor[0] == pytest.approx(1.0) and floor[-1] == pytest.approx(0.1)


def test_warmup_rises_linearly_then_follows_the_cosine():
    rates = learning_rates(12, {"warmup_steps": 4})
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0)
    assert rates[8] == pytest.approx(0.5)
    assert rates[12] == pytest.approx(0.0)


def test_schedule_rejects_bad_settings():
    optimizer = build_optimizer(parameters())
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(optimizer, 10, {"warmup_steps": 11})
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(optimizer, 0)
    with pytest.raises(ValueError, match="warmup"):
        build_scheduler(optimizer, 10, {"warmup": 2})
