"""Uncertainty weighting (Kendall et al. 2018): total = sum_i 1/2 e^{-s_i} L_i + 1/2 s_i with
learnable s_i = log sigma_i^2. At its stationary point e^{s_i} = L_i, i.e. weight 1/(2 L_i).
Peers: LibMTL `weighting/UW.py`, Nash-MTL `methods/weight_methods.py` (s initialised at 0).

Per scene: s is (B, T), trained by the loop's optimiser; scene b's total involves row b only,
so an elementwise optimiser (Adam) trains each scene's log-variances on its own losses."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ..section import Section
from .base import Balancer, by_name


class UncertaintyBalancer(Balancer):
    name = "uncertainty"

    class Options(Section):
        lr: float = Field(0.025, gt=0)  # learning rate of the balancer's own parameters
        init_log_var: float = 0.0

    def __init__(self, names: list[str], lr: float = 0.025, init_log_var: float = 0.0, ramps=None,
                 batch: int = 1) -> None:
        super().__init__(names, ramps, batch)
        self.lr = lr
        self.log_vars = nn.Parameter(torch.full((batch, len(names)), float(init_log_var)))

    def combine(self, losses, step, ctx):
        s = self.log_vars
        return sum(0.5 * torch.exp(-s[:, i]) * losses[n] + 0.5 * s[:, i] for i, n in enumerate(self.names))

    def weights(self):
        s = self.log_vars.detach()
        out = by_name(0.5 * torch.exp(-s.to(torch.float64)), self.names)
        out.update(by_name(s, self.names, "log_var"))
        return out

    def loop_parameters(self):
        return [self.log_vars]
