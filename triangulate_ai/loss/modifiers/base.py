"""The Modifier interface (seed 004, adapted to images): opt-in changes to per-pixel loss maps."""

from __future__ import annotations

from abc import ABC

import torch


class Modifier(ABC):
    """A modifier may replace the target a step compares against (`prepare_target`) and/or
    transform a term's per-pixel loss map (`modify`), and reports its own metrics, logged as
    loss_modifiers/<name>.<metric>. A new modifier is a small subclass in its own file."""

    name: str = "Modifier"
    key: str = ""  # its name in the config (modifiers.<key>)
    uses_mask: bool = False  # True if `modify` already restricted the map to the mask and rescaled it

    def __init__(self) -> None:
        self.metrics: dict[str, float | torch.Tensor] = {}  # a number for every scene, or (B,) per scene
        self._memo: tuple | None = None

    def memo_for_target(self, target: torch.Tensor, setting: float, compute) -> torch.Tensor:
        """compute(), recomputed only when the target (or its contents) or `setting` changes:
        the target is fixed during a fit, so per-target work is done once per setting."""
        key = (id(target), target._version, float(setting))
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, compute())
        return self._memo[1]

    def prepare_target(self, target: torch.Tensor, step: int) -> torch.Tensor:
        return target

    def modify(self, per_pixel: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        return per_pixel
