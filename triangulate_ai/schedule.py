"""Step-indexed schedules for numeric config values, set on the live objects before each step.

`schedules:` maps a config path to a schedule, e.g. the staged regulariser of seed 002:
    loss.regularization_weight: {type: piecewise, milestones: [50, 150], values: [0.1, 0.01, 0.001]}
"""

from __future__ import annotations

import math
from typing import Callable

from .config import ScheduleConfig


def schedule_value(cfg: ScheduleConfig, step: int, progress: float = 0.0, epoch: float = 0.0) -> float:
    """The scheduled value at `step` (0-based), at budget share `progress` for unit: fraction, or
    at `epoch` (epochs done, fractional) for unit: epochs (model training)."""
    if cfg.unit == "fraction":
        step = progress
    elif cfg.unit == "epochs":
        step = epoch
    if cfg.type == "piecewise":
        return cfg.values[sum(step >= m for m in cfg.milestones)]
    span = max(cfg.end_step - cfg.start_step, 1 if cfg.unit == "steps" else 1e-12)
    p = min(max((step - cfg.start_step) / span, 0.0), 1.0)
    a, b = cfg.start_value, cfg.end_value
    if cfg.type == "linear":
        return a + (b - a) * p
    if cfg.type == "cosine":
        return a + (b - a) * (1 - math.cos(math.pi * p)) / 2
    return a * (b / a) ** p  # exponential: geometric interpolation


class Schedules:
    """Applies every schedule through a setter the owner of the value provides."""

    def __init__(self, schedules: dict[str, ScheduleConfig], setters: dict[str, Callable[[float], None]]) -> None:
        self.schedules = schedules
        self.setters = setters

    def apply(self, step: int, progress: float = 0.0, epoch: float = 0.0) -> dict[str, float]:
        """Set every scheduled value for `step` (budget share `progress`, epochs done `epoch`);
        returns them by path."""
        current = {}
        for path, cfg in self.schedules.items():
            value = schedule_value(cfg, step, progress, epoch)
            self.setters[path](value)
            current[path] = value
        return current
