"""Scale normalisation (seed 000): w_i = 1 / EMA(L_i), so every term contributes about 1."""

from __future__ import annotations

import torch

from .base import Balancer, values


class ScaleNormBalancer(Balancer):
    def __init__(self, names: list[str], ema_decay: float = 0.9, ramps=None) -> None:
        super().__init__(names, ramps)
        self.ema_decay = ema_decay
        self.register_buffer("ema", torch.zeros(len(names), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self._last: dict[str, float] = {}

    def combine(self, losses, step, ctx):
        current = torch.tensor([values(losses)[n] for n in self.names], dtype=torch.float64, device=self.ema.device)
        if self.seen:
            self.ema.mul_(self.ema_decay).add_((1 - self.ema_decay) * current)
        else:
            self.ema.copy_(current)
            self.seen.fill_(True)
        w = (1.0 / self.ema.clamp_min(1e-12)).tolist()
        self._last = dict(zip(self.names, w))
        return sum(self._last[n] * losses[n] for n in self.names)

    def weights(self):
        return dict(self._last)
