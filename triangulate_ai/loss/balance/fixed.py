"""Fixed weights: total = sum_i w_i L_i, the baseline every adaptive method is compared with."""

from __future__ import annotations

import torch

from .base import BalanceContext, Balancer


class FixedBalancer(Balancer):
    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__(list(weights))
        self.weights = dict(weights)

    def forward(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext) -> torch.Tensor:
        return sum(self.weights[name] * losses[name] for name in self.names)

    def get_loss_weights(self) -> dict[str, float]:
        return dict(self.weights)
