"""Fixed weights: total = sum_i w_i L_i, the baseline every adaptive method is compared with."""

from __future__ import annotations

import torch

from .base import BalanceContext, Balancer


class FixedBalancer(Balancer):
    name = "fixed"

    takes_term_weights = True

    def __init__(self, weights: dict[str, float], ramps: dict[str, tuple[int, int]] | None = None,
                 batch: int = 1) -> None:
        super().__init__(list(weights), ramps, batch)
        self.term_weights = dict(weights)  # schedulable as loss.terms.<name>.weight, shared by all scenes

    def combine(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext) -> torch.Tensor:
        self._used = {name: float(self.term_weights[name]) for name in self.names}
        return sum(self._used[name] * losses[name] for name in self.names)

    def weights(self) -> dict[str, torch.Tensor]:
        used = getattr(self, "_used", None) or self.term_weights
        return {name: torch.full((self.batch,), float(used[name]), dtype=torch.float64, device="cpu")
                for name in self.names}
