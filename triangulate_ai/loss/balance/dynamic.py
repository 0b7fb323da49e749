"""Dynamic loss scheduling (seed 001; traiNNer-redux `losses/dynamic_loss_scheduling.py`).

Per term: for the first `baseline_iterations` steps the multiplier is 1 and only the smoothed
loss S is tracked (S = m S + (1 - m) L). After that, each step: rel = (L - S) / S against the
previous S, relative velocity v = m v + (1 - m) (S_new - S) / S; when |v| or |rel| exceeds
`adaptation_threshold`, the multiplier moves by adaptation_rate * min(2, |rel|): down for a rising
loss (rel > 0, so it cannot dominate), up for a falling one; clamped to [min_weight, max_weight].
Effective weight = the term's base weight (loss.terms.<name>.weight) x multiplier.
"""

from __future__ import annotations

import torch

from .base import Balancer, values


class DynamicBalancer(Balancer):
    def __init__(self, base_weights: dict[str, float], enabled: bool = True, momentum: float = 0.9,
                 adaptation_rate: float = 0.01, min_weight: float = 1e-6, max_weight: float = 100.0,
                 adaptation_threshold: float = 0.1, baseline_iterations: int = 100, enable_monitoring: bool = True,
                 ramps=None) -> None:
        super().__init__(list(base_weights), ramps)
        self.term_weights = dict(base_weights)
        self.enabled, self.momentum, self.adaptation_rate = enabled, momentum, adaptation_rate
        self.min_weight, self.max_weight = min_weight, max_weight
        self.adaptation_threshold, self.baseline_iterations = adaptation_threshold, baseline_iterations
        self.enable_monitoring = enable_monitoring
        count = len(base_weights)
        self.register_buffer("multipliers", torch.ones(count, dtype=torch.float64))
        self.register_buffer("smoothed", torch.zeros(count, dtype=torch.float64))
        self.register_buffer("velocity", torch.zeros(count, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("adaptations", torch.zeros((), dtype=torch.long))
        self._last: dict[str, float] = {}

    def combine(self, losses, step, ctx):
        self._last = {n: self.term_weights[n] * float(m) for n, m in zip(self.names, self.multipliers)}
        total = sum(self._last[n] * losses[n] for n in self.names)
        if self.enabled:
            self._observe(torch.tensor([values(losses)[n] for n in self.names], dtype=torch.float64,
                                       device=self.smoothed.device))
        return total

    def _observe(self, loss: torch.Tensor) -> None:
        """Update the statistics with this step's losses; adapt the multipliers for the next."""
        m = self.momentum
        if int(self.seen) == 0:
            self.smoothed.copy_(loss)
        previous = self.smoothed.clone()
        self.smoothed.copy_(m * previous + (1 - m) * loss)
        self.seen.add_(1)
        if int(self.seen) <= self.baseline_iterations:
            return
        safe = previous.clamp_min(1e-12)
        rel = (loss - previous) / safe
        self.velocity.copy_(m * self.velocity + (1 - m) * (self.smoothed - previous) / safe)
        move = (self.velocity.abs() > self.adaptation_threshold) | (rel.abs() > self.adaptation_threshold)
        step = self.adaptation_rate * rel.abs().clamp(max=2.0)
        factor = torch.where(rel > 0, 1 - step, 1 + step)
        updated = (self.multipliers * factor).clamp(self.min_weight, self.max_weight)
        self.multipliers.copy_(torch.where(move, updated, self.multipliers))
        self.adaptations.add_(int(move.sum()))

    def weights(self):
        out = dict(self._last)
        if self.enable_monitoring:
            out.update({f"multiplier/{n}": float(m) for n, m in zip(self.names, self.multipliers)})
        return out

    def get_monitoring_stats(self) -> dict:
        """Current weights and multipliers, adaptation count, smoothed losses, baseline state."""
        return {
            "current_weights": {n: self.term_weights[n] * float(m) for n, m in zip(self.names, self.multipliers)},
            "multipliers": dict(zip(self.names, self.multipliers.tolist())),
            "adaptation_count": int(self.adaptations),
            "smoothed_losses": dict(zip(self.names, self.smoothed.tolist())),
            "baseline_established": int(self.seen) > self.baseline_iterations,
        }

    def reset(self, keep_baseline: bool = True) -> None:
        """Multipliers back to 1 and the count to 0; without keep_baseline the smoothed losses
        are forgotten too and a new baseline period starts."""
        self.multipliers.fill_(1.0)
        self.velocity.zero_()
        self.adaptations.zero_()
        if not keep_baseline:
            self.smoothed.zero_()
            self.seen.zero_()
