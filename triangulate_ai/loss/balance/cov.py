"""Coefficient-of-variation weighting (Groenendijk et al. 2020, arXiv 2009.01717), following the
official algorithm, rickgroen/cov-weighting `losses/covweighting_loss.py`.

Step t from 0: L0 = L at t = 0, afterwards the running mean of L; l = L / L0. For t <= 1
alpha = 1/T, else alpha = c / sum(c) with c = std(l) / mean(l) from the statistics before this
step. Then the statistics take L: mean factor 0 at t = 0, 1 - 1/(t+1) ("full") or a fixed decay
("decay"); Welford update of the variance of l; std = sqrt(var + 1e-8). total = sum alpha_i L_i.
"""

from __future__ import annotations

import torch

from .base import Balancer, values


class CoVBalancer(Balancer):
    def __init__(self, names: list[str], mean_mode: str = "full", mean_decay: float = 0.9, ramps=None) -> None:
        super().__init__(names, ramps)
        self.mean_mode, self.mean_decay = mean_mode, mean_decay
        count = len(names)
        for buffer in ("alphas", "mean_L", "mean_l", "S_l", "std_l"):
            self.register_buffer(buffer, torch.zeros(count, dtype=torch.float64))
        self.register_buffer("iteration", torch.tensor(-1, dtype=torch.long))

    def combine(self, losses, step, ctx):
        L = torch.tensor([values(losses)[n] for n in self.names], dtype=torch.float64, device=self.alphas.device)
        self.iteration.add_(1)
        t = int(self.iteration)
        L0 = L.clone() if t == 0 else self.mean_L
        ratio_l = L / L0
        if t <= 1:
            self.alphas.fill_(1.0 / len(self.names))
        else:
            ratio = self.std_l / self.mean_l
            self.alphas.copy_(ratio / ratio.sum())
        if t == 0:
            mean_param = 0.0
        elif self.mean_mode == "decay":
            mean_param = self.mean_decay
        else:
            mean_param = 1.0 - 1.0 / (t + 1)
        new_mean_l = mean_param * self.mean_l + (1 - mean_param) * ratio_l
        self.S_l.add_((ratio_l - self.mean_l) * (ratio_l - new_mean_l))
        self.mean_l.copy_(new_mean_l)
        self.std_l.copy_(torch.sqrt(self.S_l / (t + 1) + 1e-8))
        self.mean_L.copy_(mean_param * self.mean_L + (1 - mean_param) * L)
        alphas = self.alphas.tolist()
        return sum(a * losses[n] for a, n in zip(alphas, self.names))

    def weights(self):
        return dict(zip(self.names, self.alphas.tolist()))
