"""Fixed weights: total = sum_i w_i L_i, the baseline every adaptive method is compared with."""

from __future__ import annotations

import torch

from .base import BalanceContext, Balancer


class FixedBalancer(Balancer):
    def __init__(self, weights: dict[str, float], ramps: dict[str, tuple[int, int]] | None = None) -> None:
        super().__init__(list(weights), ramps)
        self.term_weights = dict(weights)  # schedulable as loss.terms.<name>.weight

    def combine(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext) -> torch.Tensor:
        return sum(self.term_weights[name] * losses[name] for name in self.names)

    def weights(self) -> dict[str, float]:
        return dict(self.term_weights)
