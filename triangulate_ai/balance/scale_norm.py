"""Scale normalisation (seed 000): w_i = 1 / EMA(L_i), so every term contributes about 1.
Per scene: the EMA (B, T) and whether a scene has been seen (B,)."""

from __future__ import annotations

import torch
from pydantic import Field

from ..section import Section
from .base import Balancer, by_name, loss_matrix, weighted_sum


class ScaleNormBalancer(Balancer):
    name = "scale_norm"

    class Options(Section):
        ema_decay: float = Field(0.9, ge=0, lt=1)

    def __init__(self, names: list[str], ema_decay: float = 0.9, ramps=None, batch: int = 1) -> None:
        super().__init__(names, ramps, batch)
        self.ema_decay = ema_decay
        self.register_buffer("ema", torch.zeros(batch, len(names), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(batch, dtype=torch.bool))
        self._last = torch.zeros(batch, len(names), dtype=torch.float64)

    def combine(self, losses, step, ctx):
        current = loss_matrix(losses, self.names).to(self.ema.device)
        smoothed = self.ema * self.ema_decay + (1 - self.ema_decay) * current
        self.ema.copy_(torch.where(self.seen[:, None], smoothed, current))
        self.seen.fill_(True)
        self._last = 1.0 / self.ema.clamp_min(1e-12)
        return weighted_sum(self._last, losses, self.names)

    def weights(self):
        return by_name(self._last, self.names)
