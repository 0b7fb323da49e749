"""Geometric mean / sum of logs (seed 002; Chennupati et al. 2019).

total = sum_i log(L_i + eps) + w_reg * sum_{L_i < m} (m - L_i)^2, so each term's gradient is
scaled by 1 / (L_i + eps): lagging (large) losses are not drowned by the others. The normalised
form (prod_i (L_i + eps))^(1/T) has weights G / (T (L_i + eps)). Dynamic eps:
max(1e-8, 0.01 * min_i L_i). Peer: LibMTL `weighting/GLS.py`.

Stateless, so batching is per scene by construction: each scene's total, dynamic eps and
regulariser use its own losses only.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..section import Section
from .base import Balancer, by_name, loss_matrix


class SumOfLogsOptions(Section):
    """The options of the sum of logs, which the hybrid method shares."""

    epsilon: float = Field(1e-8, gt=0)
    min_loss_value: float = Field(1e-4, ge=0)
    regularization_weight: float = Field(0.01, ge=0)
    dynamic_epsilon: bool = False


class GeometricMeanBalancer(Balancer):
    name = "geometric_mean"

    class Options(SumOfLogsOptions):
        normalized: bool = False

    def __init__(self, names: list[str], epsilon: float = 1e-8, min_loss_value: float = 1e-4,
                 regularization_weight: float = 0.01, dynamic_epsilon: bool = False, normalized: bool = False,
                 ramps=None, batch: int = 1) -> None:
        super().__init__(names, ramps, batch)
        self.epsilon, self.min_loss_value = epsilon, min_loss_value
        self.regularization_weight = regularization_weight  # schedulable, shared by all scenes
        self.dynamic_epsilon, self.normalized = dynamic_epsilon, normalized
        self._last = torch.zeros(batch, len(names), dtype=torch.float64)

    def current_epsilon(self, vals: torch.Tensor) -> torch.Tensor:
        """Per-scene eps (B,) for loss values (B, T)."""
        if self.dynamic_epsilon:
            return (0.01 * vals.min(dim=1).values).clamp_min(1e-8)
        return torch.full(vals.shape[:1], float(self.epsilon), dtype=vals.dtype, device=vals.device)

    def log_total(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The log part (B,) and its effective weights (B, T)."""
        vals = loss_matrix(losses, self.names)
        eps = self.current_epsilon(vals)
        logs = sum(torch.log(losses[n] + eps.to(losses[n].dtype)) for n in self.names)
        if not self.normalized:
            return logs, 1.0 / (vals + eps[:, None])
        count = len(self.names)
        mean = torch.exp(logs / count)
        return mean, mean.detach().to(torch.float64)[:, None] / (count * (vals + eps[:, None]))

    def regulariser(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """w_reg * (m - L)^2 for losses below m = min_loss_value, per scene (B,), and its
        gradient weights (B, T)."""
        m, w = self.min_loss_value, self.regularization_weight
        vals = loss_matrix(losses, self.names)
        below = vals < m
        total = torch.zeros_like(losses[self.names[0]])
        for i, n in enumerate(self.names):
            if bool(below[:, i].any()):
                total = total + torch.where(below[:, i], w * (m - losses[n]) ** 2, torch.zeros_like(total))
        grads = torch.where(below, -2.0 * w * (m - vals), torch.zeros_like(vals))
        return total, grads

    def combine(self, losses, step, ctx):
        core, eff = self.log_total(losses)
        reg, reg_grads = self.regulariser(losses)
        self._last = eff + reg_grads
        return core + reg

    def weights(self):
        return by_name(self._last, self.names)
