"""The Balancer interface: many named losses in, one total out.

Modelled on LibMTL's `weighting/` (one class per method behind an abstract base). The loop
only ever calls `forward`, `get_loss_weights` and `loop_parameters`, so it never knows which
method runs. Per-term ramps (seed 001's iterative loss wrapper) live here, for every method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class BalanceContext:
    """What a balancer may look at besides the losses: the parameters shared by all terms (for
    gradient-based methods such as GradNorm) and the total iteration count."""

    shared_params: list[torch.Tensor] = field(default_factory=list)
    iterations: int = 0


def ramp_factor(start: int, target: int, step: int) -> float:
    """0 before `start`, linear to 1 at `target`, 1 after (and from `start` if target <= start)."""
    if step < start:
        return 0.0
    if target <= start or step >= target:
        return 1.0
    return (step - start) / (target - start)


class Balancer(nn.Module, ABC):
    """Combines named scalar losses. State lives in parameters, buffers or `get_extra_state`,
    so it travels in checkpoints through `state_dict`.

    A ramped term enters as r*L + (1-r)*stop_grad(L): the balancer sees the true value, and the
    term's gradient (its effective weight) is scaled by r, whatever the method."""

    def __init__(self, names: list[str], ramps: dict[str, tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.names = list(names)
        self.ramps = {name: r for name, r in (ramps or {}).items() if r != (0, 0)}
        self._ramp_now: dict[str, float] = {}

    def forward(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext) -> torch.Tensor:
        self._ramp_now = {name: ramp_factor(*self.ramps[name], step) for name in self.ramps}
        ramped = dict(losses)
        for name, r in self._ramp_now.items():
            if r != 1.0:
                ramped[name] = r * losses[name] + (1 - r) * losses[name].detach()
        return self.combine(ramped, step, ctx)

    @abstractmethod
    def combine(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext) -> torch.Tensor:
        """The method itself, on (possibly ramped) losses."""

    @abstractmethod
    def weights(self) -> dict[str, float]:
        """d total / d L_i of the last `combine` by term name, plus internal values under
        '<kind>/<term>' keys where they differ (log-variances, multipliers, ...)."""

    def get_loss_weights(self) -> dict[str, float]:
        """Effective gradient weight d total / d L_i of each term at the last forward (ramps
        included), and the method's internal weights under '<kind>/<term>' keys."""
        return {key: value * self._ramp_now.get(key, 1.0) for key, value in self.weights().items()}

    def loop_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimiser should train (with learning rate `self.lr`)."""
        return []

    lr: float | None = None


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """||d loss / d params|| (float64), keeping the graph for the real backward pass."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None))


def values(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(loss.detach()) for name, loss in losses.items()}
