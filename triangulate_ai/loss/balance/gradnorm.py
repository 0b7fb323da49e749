"""GradNorm (Chen et al. 2018): learn weights that make every term train at a similar rate.

w = T * softmax(theta) (so sum w = T, as in LibMTL `weighting/GradNorm.py`). Each step:
G_i = w_i * ||grad_W L_i|| over the shared parameters W, r_i = (L_i / L_i(0)) / mean_j(...),
L_grad = sum_i |G_i - mean(G) * r_i^alpha| (target detached), and theta takes one step of its own
Adam on L_grad. The total uses this step's weights, detached. L_i(0) is the mean loss over steps
0..warmup_steps, i.e. warmup_steps + 1 steps (step 0 alone by default), during which the
weights stay 1.
The norms cost one extra backward pass per term.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Balancer, grad_norm, values


class GradNormBalancer(Balancer):
    def __init__(self, names: list[str], alpha: float = 1.5, lr: float = 0.025, warmup_steps: int = 0,
                 ramps=None) -> None:
        super().__init__(names, ramps)
        self.alpha, self.warmup_steps = alpha, warmup_steps
        self.theta = nn.Parameter(torch.zeros(len(names)))
        self.optimizer = torch.optim.Adam([self.theta], lr=lr)
        self.register_buffer("initial", torch.zeros(len(names), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self._last: dict[str, float] = {}

    def current(self) -> torch.Tensor:
        return len(self.names) * torch.softmax(self.theta, dim=0)

    def combine(self, losses, step, ctx):
        vals = torch.tensor([values(losses)[n] for n in self.names], dtype=torch.float64,
                            device=self.initial.device)
        count = len(self.names)
        if int(self.seen) <= self.warmup_steps:  # collecting L(0): steps 0..warmup_steps
            self.initial.mul_(int(self.seen)).add_(vals).div_(int(self.seen) + 1)
            self.seen.add_(1)
            weights = torch.ones(count)
        else:
            weights = self.current().detach()
            self._update(losses, vals, ctx)
        self._last = dict(zip(self.names, weights.tolist()))
        return sum(self._last[n] * losses[n] for n in self.names)

    def _update(self, losses, vals, ctx) -> None:
        params = [p for p in ctx.shared_params if p.requires_grad]
        norms = torch.stack([grad_norm(losses[n], params) for n in self.names])
        norms = norms.to(self.theta.dtype).to(self.theta.device)
        ratio = vals / self.initial.clamp_min(1e-12)
        rate = (ratio / ratio.mean()).to(self.theta.dtype).to(self.theta.device)
        g = self.current() * norms
        target = (g.mean() * rate**self.alpha).detach()
        loss_grad = (g - target).abs().sum()
        self.optimizer.zero_grad(set_to_none=True)
        self.theta.grad = torch.autograd.grad(loss_grad, self.theta)[0]
        self.optimizer.step()

    def weights(self):
        return dict(self._last)

    def get_extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
