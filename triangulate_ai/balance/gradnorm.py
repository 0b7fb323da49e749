"""GradNorm (Chen et al. 2018): learn weights that make every term train at a similar rate.

w = T * softmax(theta) (so sum w = T, as in LibMTL `weighting/GradNorm.py`). Each step:
G_i = w_i * ||grad_W L_i|| over the shared parameters W, r_i = (L_i / L_i(0)) / mean_j(...),
L_grad = sum_i |G_i - mean(G) * r_i^alpha| (target detached), and theta takes one step of its own
Adam on L_grad. The total uses this step's weights, detached. L_i(0) is the mean loss over steps
0..warmup_steps, i.e. warmup_steps + 1 steps (step 0 alone by default), during which the
weights stay 1.
The norms come from the loop (BalanceContext.term_norms): each term's gradient on the render,
taken once, through the renderer's backward alone; the terms (and their networks) are not run
backward a second time. Without them (the model trainer) it takes one backward pass per term.

Per scene: theta (B, T), L(0) (B, T), the warm-up count (B,) and the Adam moments (B, T) and
step count (B,), all buffers or parameters. G_{i,b} uses scene b's slice of the shared parameters
(each has the scene as its first dimension), so scene b's theta moves on scene b's gradients
only; the Adam here is torch's (no weight decay, no amsgrad) with a step count per scene.
`lr` is read at every step, so `loss.lr` can be scheduled.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..section import Section
from .base import Balancer, by_name, grad_norm, loss_matrix, weighted_sum


class GradNormBalancer(Balancer):
    name = "gradnorm"

    class Options(Section):
        alpha: float = Field(1.5, ge=0)
        lr: float = Field(0.025, gt=0)
        shared_params: Literal["all", "positions"] = "all"  # read by the loop: the parameters the norms are over
        warmup_steps: int = Field(0, ge=0)

    loop_options = ("shared_params",)
    needs_term_gradients = True
    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, names: list[str], alpha: float = 1.5, lr: float = 0.025, warmup_steps: int = 0,
                 ramps=None, batch: int = 1) -> None:
        super().__init__(names, ramps, batch)
        self.alpha, self.warmup_steps, self.lr = alpha, warmup_steps, lr
        count = len(names)
        self.theta = nn.Parameter(torch.zeros(batch, count))
        self.register_buffer("initial", torch.zeros(batch, count, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(batch, dtype=torch.long))
        self.register_buffer("adam_step", torch.zeros(batch, dtype=torch.long))
        self.register_buffer("exp_avg", torch.zeros(batch, count))
        self.register_buffer("exp_avg_sq", torch.zeros(batch, count))
        self._last = torch.ones(batch, count, dtype=torch.float64)

    def current(self) -> torch.Tensor:
        """This step's weights (B, T), T * softmax(theta) per scene."""
        return len(self.names) * torch.softmax(self.theta, dim=1)

    def combine(self, losses, step, ctx):
        vals = loss_matrix(losses, self.names).to(self.initial.device)
        warm = self.seen <= self.warmup_steps  # collecting L(0): steps 0..warmup_steps, per scene
        seen = self.seen[:, None].to(torch.float64)
        self.initial.copy_(torch.where(warm[:, None], (self.initial * seen + vals) / (seen + 1), self.initial))
        self.seen.add_(warm.long())
        weights = torch.where(warm[:, None], torch.ones_like(vals), self.current().detach().to(torch.float64))
        self._last = weights
        update = ~warm
        if self._active is not None:
            update = update & self._active.to(update.device)
        if bool(update.any()):
            self._update(losses, vals, ctx, update)
        return weighted_sum(weights, losses, self.names)

    def _update(self, losses, vals, ctx, update: torch.Tensor) -> None:
        params = [p for p in ctx.shared_params if p.requires_grad]
        for p in params:
            if p.dim() == 0 or p.shape[0] != self.batch:
                raise ValueError(f"GradNorm: a shared parameter has shape {tuple(p.shape)}; the first dimension "
                                 f"must be the scene ({self.batch})")
        if ctx.term_norms is not None:  # of the unramped terms: scaled as the ramped ones the fallback measures
            def measure(name: str) -> torch.Tensor:
                return ctx.term_norms(name) * self._ramp_now.get(name, 1.0)
        else:
            def measure(name: str) -> torch.Tensor:
                return grad_norm(losses[name], params)
        norms = torch.stack([measure(n) for n in self.names], dim=1)  # (B, T)
        norms = torch.where(update[:, None], norms, torch.zeros_like(norms))  # nothing from other rows
        norms = norms.to(self.theta.dtype).to(self.theta.device)
        ratio = vals / self.initial.clamp_min(1e-12)
        ratio = torch.where(update[:, None], ratio, torch.ones_like(ratio))
        rate = (ratio / ratio.mean(dim=1, keepdim=True)).to(self.theta.dtype).to(self.theta.device)
        g = self.current() * norms
        target = (g.mean(dim=1, keepdim=True) * rate**self.alpha).detach()
        per_scene = (g - target).abs().sum(dim=1)
        loss_grad = torch.where(update, per_scene, torch.zeros_like(per_scene)).sum()
        grad = torch.autograd.grad(loss_grad, self.theta)[0]
        self._adam(grad, update)

    @torch.no_grad()
    def _adam(self, grad: torch.Tensor, rows: torch.Tensor) -> None:
        """One Adam step (torch.optim.Adam's update, per-scene step count) on the rows in `rows`."""
        beta1, beta2 = self.betas
        keep = ~rows[:, None]
        step = self.adam_step + rows.long()
        exp_avg = self.exp_avg.lerp(grad, 1 - beta1)
        exp_avg_sq = self.exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        t = step.clamp_min(1).to(torch.float64)[:, None]
        bias1 = 1 - beta1**t
        bias2_sqrt = (1 - beta2**t).sqrt()
        denom = (exp_avg_sq.sqrt() / bias2_sqrt.to(grad.dtype)) + self.eps
        theta = self.theta - (self.lr / bias1).to(grad.dtype) * exp_avg / denom
        self.theta.copy_(torch.where(keep, self.theta, theta))
        self.exp_avg.copy_(torch.where(keep, self.exp_avg, exp_avg))
        self.exp_avg_sq.copy_(torch.where(keep, self.exp_avg_sq, exp_avg_sq))
        self.adam_step.copy_(step)

    def weights(self):
        return by_name(self._last, self.names)
