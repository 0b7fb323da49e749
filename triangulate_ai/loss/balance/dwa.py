"""Dynamic weight averaging (Liu et al. 2019), per window of steps since one image has no epochs.

w_i = mean L_i over the previous window / mean over the one before; lambda = T softmax(w / temp);
lambda = 1 until two windows are complete. With window = 1 it compares the last two steps."""

from __future__ import annotations

import torch

from .base import Balancer, values


class DWABalancer(Balancer):
    def __init__(self, names: list[str], window: int = 1, temperature: float = 2.0, ramps=None) -> None:
        super().__init__(names, ramps)
        self.window, self.temperature = window, temperature
        count = len(names)
        self.register_buffer("acc", torch.zeros(count, dtype=torch.float64))
        self.register_buffer("in_window", torch.zeros((), dtype=torch.long))
        self.register_buffer("previous", torch.zeros(2, count, dtype=torch.float64))  # [k-2, k-1]
        self.register_buffer("complete", torch.zeros((), dtype=torch.long))
        self._last: dict[str, float] = {}

    def combine(self, losses, step, ctx):
        count = len(self.names)
        if int(self.complete) < 2:
            lam = torch.ones(count, dtype=torch.float64)
        else:
            rate = self.previous[1] / self.previous[0].clamp_min(1e-12)
            lam = count * torch.softmax(rate / self.temperature, dim=0)
        self._last = dict(zip(self.names, lam.tolist()))
        current = torch.tensor([values(losses)[n] for n in self.names], dtype=torch.float64, device=self.acc.device)
        self.acc.add_(current)
        self.in_window.add_(1)
        if int(self.in_window) == self.window:
            self.previous.copy_(torch.stack([self.previous[1], self.acc / self.window]))
            self.complete.add_(1)
            self.acc.zero_()
            self.in_window.zero_()
        return sum(self._last[n] * losses[n] for n in self.names)

    def weights(self):
        return dict(self._last)
