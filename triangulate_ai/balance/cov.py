"""Coefficient-of-variation weighting (Groenendijk et al. 2020, arXiv 2009.01717), following the
official algorithm, rickgroen/cov-weighting `losses/covweighting_loss.py`.

Step t from 0: L0 = L at t = 0, afterwards the running mean of L; l = L / L0. For t <= 1
alpha = 1/T, else alpha = c / sum(c) with c = std(l) / mean(l) from the statistics before this
step. Then the statistics take L: mean factor 0 at t = 0, 1 - 1/(t+1) ("full") or a fixed decay
("decay"); Welford update of the variance of l; std = sqrt(var + 1e-8). total = sum alpha_i L_i.

Per scene: every statistic is (B, T) and the step count t is (B,).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..section import Section
from .base import Balancer, by_name, loss_matrix, weighted_sum


class CoVBalancer(Balancer):
    name = "cov"

    class Options(Section):
        mean_mode: Literal["full", "decay"] = "full"
        mean_decay: float = Field(0.9, gt=0, lt=1)

    def __init__(self, names: list[str], mean_mode: str = "full", mean_decay: float = 0.9, ramps=None,
                 batch: int = 1) -> None:
        super().__init__(names, ramps, batch)
        self.mean_mode, self.mean_decay = mean_mode, mean_decay
        count = len(names)
        for buffer in ("alphas", "mean_L", "mean_l", "S_l", "std_l"):
            self.register_buffer(buffer, torch.zeros(batch, count, dtype=torch.float64))
        self.register_buffer("iteration", torch.full((batch,), -1, dtype=torch.long))

    def combine(self, losses, step, ctx):
        L = loss_matrix(losses, self.names).to(self.alphas.device)
        self.iteration.add_(1)
        t = self.iteration[:, None]
        first = t == 0
        L0 = torch.where(first, L, self.mean_L)
        ratio_l = L / L0
        ratio = self.std_l / self.mean_l
        self.alphas.copy_(torch.where(t <= 1, torch.full_like(L, 1.0 / len(self.names)),
                                      ratio / ratio.sum(dim=1, keepdim=True)))
        if self.mean_mode == "decay":
            mean_param = torch.full(t.shape, float(self.mean_decay), dtype=torch.float64, device=t.device)
        else:
            mean_param = 1.0 - 1.0 / (t + 1).to(torch.float64)
        mean_param = torch.where(first, torch.zeros_like(mean_param), mean_param)
        new_mean_l = mean_param * self.mean_l + (1 - mean_param) * ratio_l
        self.S_l.add_((ratio_l - self.mean_l) * (ratio_l - new_mean_l))
        self.mean_l.copy_(new_mean_l)
        self.std_l.copy_(torch.sqrt(self.S_l / (t + 1) + 1e-8))
        self.mean_L.copy_(mean_param * self.mean_L + (1 - mean_param) * L)
        return weighted_sum(self.alphas, losses, self.names)

    def weights(self):
        return by_name(self.alphas.clone(), self.names)
