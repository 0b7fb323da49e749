"""Dynamic loss scheduling (seed 001; traiNNer-redux `losses/dynamic_loss_scheduling.py`).

Per term: for the first `baseline_iterations` steps the multiplier is 1 and only the smoothed
loss S is tracked (S = m S + (1 - m) L). After that, each step: rel = (L - S) / S against the
previous S, relative velocity v = m v + (1 - m) (S_new - S) / S; when |v| or |rel| exceeds
`adaptation_threshold`, the multiplier moves by adaptation_rate * min(2, |rel|): down for a rising
loss (rel > 0, so it cannot dominate), up for a falling one; clamped to [min_weight, max_weight].
Effective weight = the term's base weight (loss.terms.<name>.weight) x multiplier.

Per scene: multipliers, smoothed losses and velocities (B, T), step and adaptation counts (B,).
Base weights and every option are shared by all scenes.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from ..section import Section
from .base import Balancer, by_name, loss_matrix, weighted_sum


class DynamicBalancer(Balancer):
    name = "dynamic"

    class Options(Section):  # seed 001: keys, defaults and ranges of its table
        enabled: bool = True
        momentum: float = Field(0.9, ge=0, le=1)
        adaptation_rate: float = Field(0.01, ge=0.001, le=0.1)
        min_weight: float = Field(1e-6, gt=0)
        max_weight: float = Field(100.0, gt=0)
        adaptation_threshold: float = Field(0.1, ge=0.01, le=1.0)
        baseline_iterations: int = Field(100, ge=50, le=1000)
        enable_monitoring: bool = True

        @model_validator(mode="after")
        def _above_min(self):
            if self.max_weight <= self.min_weight:
                raise ValueError("max_weight must be greater than min_weight")
            return self

    takes_term_weights = True

    def __init__(self, base_weights: dict[str, float], enabled: bool = True, momentum: float = 0.9,
                 adaptation_rate: float = 0.01, min_weight: float = 1e-6, max_weight: float = 100.0,
                 adaptation_threshold: float = 0.1, baseline_iterations: int = 100, enable_monitoring: bool = True,
                 ramps=None, batch: int = 1) -> None:
        super().__init__(list(base_weights), ramps, batch)
        self.term_weights = dict(base_weights)
        self.enabled, self.momentum, self.adaptation_rate = enabled, momentum, adaptation_rate
        self.min_weight, self.max_weight = min_weight, max_weight
        self.adaptation_threshold, self.baseline_iterations = adaptation_threshold, baseline_iterations
        self.enable_monitoring = enable_monitoring
        count = len(base_weights)
        self.register_buffer("multipliers", torch.ones(batch, count, dtype=torch.float64))
        self.register_buffer("smoothed", torch.zeros(batch, count, dtype=torch.float64))
        self.register_buffer("velocity", torch.zeros(batch, count, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(batch, dtype=torch.long))
        self.register_buffer("adaptations", torch.zeros(batch, dtype=torch.long))
        self._last = torch.ones(batch, count, dtype=torch.float64)

    def _base(self) -> torch.Tensor:
        return torch.tensor([float(self.term_weights[n]) for n in self.names], dtype=torch.float64,
                            device=self.multipliers.device)

    def combine(self, losses, step, ctx):
        self._last = self._base() * self.multipliers
        total = weighted_sum(self._last, losses, self.names)
        if self.enabled:
            self._observe(loss_matrix(losses, self.names).to(self.smoothed.device))
        return total

    def _observe(self, loss: torch.Tensor) -> None:
        """Update the statistics with this step's losses (B, T); adapt the multipliers for the next."""
        m = self.momentum
        first = (self.seen == 0)[:, None]
        previous = torch.where(first, loss, self.smoothed)
        self.smoothed.copy_(m * previous + (1 - m) * loss)
        self.seen.add_(1)
        adapting = (self.seen > self.baseline_iterations)[:, None]
        if not bool(adapting.any()):
            return
        safe = previous.clamp_min(1e-12)
        rel = (loss - previous) / safe
        velocity = m * self.velocity + (1 - m) * (self.smoothed - previous) / safe
        self.velocity.copy_(torch.where(adapting, velocity, self.velocity))
        move = adapting & ((self.velocity.abs() > self.adaptation_threshold) | (rel.abs() > self.adaptation_threshold))
        step = self.adaptation_rate * rel.abs().clamp(max=2.0)
        factor = torch.where(rel > 0, 1 - step, 1 + step)
        updated = (self.multipliers * factor).clamp(self.min_weight, self.max_weight)
        self.multipliers.copy_(torch.where(move, updated, self.multipliers))
        self.adaptations.add_(move.sum(dim=1))

    def weights(self):
        out = by_name(self._last, self.names)
        if self.enable_monitoring:
            out.update(by_name(self.multipliers.clone(), self.names, "multiplier"))
        return out

    def get_monitoring_stats(self, scene: int | None = None) -> dict:
        """Current weights and multipliers, adaptation count, smoothed losses, baseline state:
        per scene as (B,) tensors, or as plain numbers for one `scene`."""
        weights = self._base() * self.multipliers
        stats = {
            "current_weights": by_name(weights, self.names),
            "multipliers": by_name(self.multipliers.clone(), self.names),
            "adaptation_count": self.adaptations.clone(),
            "smoothed_losses": by_name(self.smoothed.clone(), self.names),
            "baseline_established": self.seen > self.baseline_iterations,
        }
        if scene is None:
            return stats
        return {key: {n: float(v[scene]) for n, v in value.items()} if isinstance(value, dict) else value[scene].item()
                for key, value in stats.items()}

    def reset(self, keep_baseline: bool = True, scenes: torch.Tensor | None = None) -> None:
        """Multipliers back to 1 and the count to 0; without keep_baseline the smoothed losses
        are forgotten too and a new baseline period starts. `scenes`: a bool (B,) mask or
        indices of the scenes to reset (default: all)."""
        rows = torch.ones(self.batch, dtype=torch.bool, device=self.seen.device)
        if scenes is not None:
            scenes = torch.as_tensor(scenes, device=self.seen.device)
            rows = scenes.bool() if scenes.dtype == torch.bool else torch.zeros_like(rows).index_fill_(0, scenes, True)
        self.multipliers[rows] = 1.0
        self.velocity[rows] = 0.0
        self.adaptations[rows] = 0
        if not keep_baseline:
            self.smoothed[rows] = 0.0
            self.seen[rows] = 0
