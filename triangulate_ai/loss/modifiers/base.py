"""The Modifier interface (seed 004, adapted to images): opt-in changes to per-pixel loss maps."""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

import torch
from ...section import Section

REGISTRY: dict[str, type["Modifier"]] = {}  # modifiers.<key> -> the class, in the order they apply


class ModifierOptions(Section):
    """What every modifier has: it is off unless enabled."""

    enabled: bool = False


class Modifier(ABC):
    """A modifier may replace the target a step compares against (`prepare_target`) and/or
    transform a term's per-pixel loss map (`modify`), and reports its own metrics, logged as
    loss_modifiers/<name>.<metric>. A new modifier is a small subclass in its own file that
    declares its config key, its options and its place in the order (`order`, lowest first),
    and registers itself when defined."""

    name: str = "Modifier"
    key: ClassVar[str] = ""  # its name in the config (modifiers.<key>) and in schedules
    Options: ClassVar[type[Section]] = ModifierOptions
    order: ClassVar[int] = 0  # modifiers apply in increasing order
    uses_mask: bool = False  # True if `modify` already restricted the map to the mask and rescaled it

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("key"):
            REGISTRY[cls.key] = cls
            ordered = sorted(REGISTRY.items(), key=lambda item: item[1].order)
            REGISTRY.clear()
            REGISTRY.update(ordered)

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
