"""The loss-modifier pipeline: opt-in modifiers in a fixed order, nothing at all when none is on.
Every module of this package is imported here; each Modifier with a `key` registers itself
(base.REGISTRY, by its `order`), and the config gathers their options from there.

Order: target smoothing (changes the target every term sees), mask ratio weighting, edge
weighting, error-entropy weighting (these three transform the per-pixel map of terms that have
one: L1; VGG and LPIPS have no per-pixel map and see only the smoothed target).
"""

from __future__ import annotations

import importlib
import pkgutil
from contextlib import contextmanager

import torch

from ..terms import masked_mean
from .base import REGISTRY, Modifier

__all__ = ["Modifier", "ModifierPipeline", "REGISTRY", "build_pipeline"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


class ModifierPipeline:
    def __init__(self, modifiers: list[Modifier]) -> None:
        self.modifiers = modifiers
        self.enabled = True

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.modifiers)

    @contextmanager
    def disabled(self):
        """Switch every modifier off for a while, e.g. to score raw losses."""
        previous, self.enabled = self.enabled, False
        try:
            yield self
        finally:
            self.enabled = previous

    def prepare_target(self, target: torch.Tensor, step: int) -> torch.Tensor:
        for modifier in self.modifiers:
            target = modifier.prepare_target(target, step)
        return target

    def reduce(self, per_pixel: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Modify a per-pixel loss map in order, then take each scene's mean: (B,)."""
        for modifier in self.modifiers:
            per_pixel = modifier.modify(per_pixel, pred, target, mask)
        consumed = any(m.uses_mask for m in self.modifiers)
        return per_pixel.flatten(1).mean(dim=1) if consumed else masked_mean(per_pixel, mask)

    def metrics(self, batch: int) -> dict[str, list[float]]:
        """Every modifier's metrics, one value per scene."""
        return {f"loss_modifiers/{m.name}.{k}": (v.tolist() if torch.is_tensor(v) else [float(v)] * batch)
                for m in self.modifiers for k, v in m.metrics.items()}

    def names(self) -> list[str]:
        return [m.name for m in self.modifiers]


def build_pipeline(cfg) -> ModifierPipeline:
    """The enabled modifiers of `cfg` (a ModifiersConfig), in their order."""
    return ModifierPipeline([cls(getattr(cfg, key)) for key, cls in REGISTRY.items() if getattr(cfg, key).enabled])
