"""The Balancer interface: many named losses in, one total out.

Modelled on LibMTL's `weighting/` (one class per method behind an abstract base). The loop
only ever calls `forward` and `get_loss_weights`, so it never knows which method runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class BalanceContext:
    """What a balancer may look at besides the losses: shared parameters for gradient-based
    methods (GradNorm), and the total iteration count for methods that plan ahead."""

    shared_params: list[torch.Tensor] = field(default_factory=list)
    iterations: int = 0


class Balancer(nn.Module, ABC):
    """Combines named scalar losses. Learnable state lives in parameters/buffers, so it goes
    into checkpoints through `state_dict` and to the optimiser through `parameters()`."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = list(names)

    @abstractmethod
    def forward(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext) -> torch.Tensor:
        ...

    @abstractmethod
    def get_loss_weights(self) -> dict[str, float]:
        """Effective gradient weight d total / d L_i of each term at the last forward."""
