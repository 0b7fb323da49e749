"""Geometric mean / sum of logs (seed 002; Chennupati et al. 2019).

total = sum_i log(L_i + eps) + w_reg * sum_{L_i < m} (m - L_i)^2, so each term's gradient is
scaled by 1 / (L_i + eps): lagging (large) losses are not drowned by the others. The normalised
form (prod_i (L_i + eps))^(1/T) has weights G / (T (L_i + eps)). Dynamic eps:
max(1e-8, 0.01 * min_i L_i). Peer: LibMTL `weighting/GLS.py`.
"""

from __future__ import annotations

import torch

from .base import Balancer, values


class GeometricMeanBalancer(Balancer):
    def __init__(self, names: list[str], epsilon: float = 1e-8, min_loss_value: float = 1e-4,
                 regularization_weight: float = 0.01, dynamic_epsilon: bool = False, normalized: bool = False,
                 ramps=None) -> None:
        super().__init__(names, ramps)
        self.epsilon, self.min_loss_value = epsilon, min_loss_value
        self.regularization_weight = regularization_weight  # schedulable
        self.dynamic_epsilon, self.normalized = dynamic_epsilon, normalized
        self._last: dict[str, float] = {}

    def current_epsilon(self, vals: dict[str, float]) -> float:
        return max(1e-8, 0.01 * min(vals.values())) if self.dynamic_epsilon else self.epsilon

    def log_total(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The log part and its effective weights."""
        vals = values(losses)
        eps = self.current_epsilon(vals)
        logs = sum(torch.log(losses[n] + eps) for n in self.names)
        if not self.normalized:
            return logs, {n: 1.0 / (vals[n] + eps) for n in self.names}
        count = len(self.names)
        mean = torch.exp(logs / count)
        return mean, {n: float(mean.detach()) / (count * (vals[n] + eps)) for n in self.names}

    def regulariser(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """w_reg * (m - L)^2 for losses below m = min_loss_value, and its gradient weights."""
        m, w = self.min_loss_value, self.regularization_weight
        total = next(iter(losses.values())).new_zeros(())
        grads = {}
        for n in self.names:
            value = float(losses[n].detach())
            grads[n] = -2.0 * w * (m - value) if value < m else 0.0
            if value < m:
                total = total + w * (m - losses[n]) ** 2
        return total, grads

    def combine(self, losses, step, ctx):
        core, eff = self.log_total(losses)
        reg, reg_grads = self.regulariser(losses)
        self._last = {n: eff[n] + reg_grads[n] for n in self.names}
        return core + reg

    def weights(self):
        return dict(self._last)
