"""Dynamic weight averaging (Liu et al. 2019), per window of steps since one image has no epochs.

w_i = mean L_i over the previous window / mean over the one before; lambda = T softmax(w / temp);
lambda = 1 until two windows are complete. With window = 1 it compares the last two steps.
Per scene: the window sums (B, T), the last two window means (B, 2, T) and the counts (B,)."""

from __future__ import annotations

import torch
from pydantic import Field

from ..section import Section
from .base import Balancer, by_name, loss_matrix, weighted_sum


class DWABalancer(Balancer):
    name = "dwa"

    class Options(Section):
        window: int = Field(1, ge=1)
        temperature: float = Field(2.0, gt=0)

    def __init__(self, names: list[str], window: int = 1, temperature: float = 2.0, ramps=None,
                 batch: int = 1) -> None:
        super().__init__(names, ramps, batch)
        self.window, self.temperature = window, temperature
        count = len(names)
        self.register_buffer("acc", torch.zeros(batch, count, dtype=torch.float64))
        self.register_buffer("in_window", torch.zeros(batch, dtype=torch.long))
        self.register_buffer("previous", torch.zeros(batch, 2, count, dtype=torch.float64))  # [k-2, k-1]
        self.register_buffer("complete", torch.zeros(batch, dtype=torch.long))
        self._last = torch.ones(batch, count, dtype=torch.float64)

    def combine(self, losses, step, ctx):
        count = len(self.names)
        rate = self.previous[:, 1] / self.previous[:, 0].clamp_min(1e-12)
        lam = count * torch.softmax(rate / self.temperature, dim=1)
        self._last = torch.where((self.complete < 2)[:, None], torch.ones_like(lam), lam)
        self.acc.add_(loss_matrix(losses, self.names).to(self.acc.device))
        self.in_window.add_(1)
        full = self.in_window == self.window
        if bool(full.any()):
            shifted = torch.stack([self.previous[:, 1], self.acc / self.window], dim=1)
            self.previous.copy_(torch.where(full[:, None, None], shifted, self.previous))
            self.complete.add_(full.long())
            self.acc.copy_(torch.where(full[:, None], torch.zeros_like(self.acc), self.acc))
            self.in_window.copy_(torch.where(full, torch.zeros_like(self.in_window), self.in_window))
        return weighted_sum(self._last, losses, self.names)

    def weights(self):
        return by_name(self._last, self.names)
